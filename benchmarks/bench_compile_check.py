"""Whether the compiled training step computes the eager step's gradients on this CPU, and how fast each runs: one
forward and backward pass (bf16 autocast by default) of a freshly initialised model per image size, eager against
`torch.compile`, per Inductor vector width (`torch._inductor.config.cpp.simdlen`; "default" = the widest the CPU
has). Each width runs in its own interpreter (Inductor's config and compiled graphs belong to a process); within
one, eager and compiled passes alternate round by round on two copies of the same weights, medians over rounds.

    python benchmarks/bench_compile_check.py --model "resmlp_tiny32:embed_dim=128" --sizes 24 32 \
        --simdlen default 256 --batch 128 --rounds 4

"finite": every gradient of the compiled pass is finite; "max diff": the largest |compiled - eager| of a gradient,
relative to that gradient's largest eager entry (bf16 rounding: ~1e-2). The trainer's answer to a compiled step with
non-finite gradients is to go on eager (train/parts.py, docs/results.md#cifar-10-in-an-hour).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time

import torch
from bench_train_step import parse_model

from resmlp import create_model
from resmlp.device import flush_denormals
from resmlp.train.engine import autocast


def pass_and_grads(model: torch.nn.Module, x: torch.Tensor, precision: str) -> dict[str, torch.Tensor]:
    """One forward and backward pass; the gradients by parameter name (then cleared)."""
    with autocast(torch.device("cpu"), precision):
        out = model(x)
    out.float().logsumexp(-1).mean().backward()
    params = getattr(model, "_orig_mod", model).named_parameters()
    grads = {n: p.grad.detach().clone() for n, p in params if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def check(spec: str, size: int, args: argparse.Namespace) -> dict:
    """The eager and compiled passes of `spec` at `size` px: finiteness, difference, images/s."""
    name, kwargs = parse_model(spec)
    torch.manual_seed(0)
    eager = create_model(name, img_size=size, **kwargs).train()
    compiled = torch.compile(copy.deepcopy(eager), dynamic=False, backend=args.backend)
    x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    want, got = pass_and_grads(eager, x, args.precision), pass_and_grads(compiled, x, args.precision)
    finite = all(bool(torch.isfinite(g).all()) for g in got.values())
    diff = max(((got[n] - want[n]).abs().max() / want[n].abs().max().clamp_min(1e-12)).item() for n in want)
    seconds: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for form, model in (("eager", eager), ("compiled", compiled)):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                pass_and_grads(model, x, args.precision)
            seconds[form].append((time.perf_counter() - t0) / args.steps)
    speed = {form: args.batch / statistics.median(s) for form, s in seconds.items()}
    return {"size": size, "finite": finite, "max_diff": diff, "eager": speed["eager"], "compiled": speed["compiled"]}


def worker(args: argparse.Namespace) -> None:
    """One vector width: set it, then check every size; one JSON line per size."""
    from torch._inductor import config  # noqa: PLC0415 - Inductor only when asked

    if args.simdlen[0] != "default":
        config.cpp.simdlen = int(args.simdlen[0])
    flush_denormals()  # as training does
    for size in args.sizes:
        print(json.dumps({"simdlen": args.simdlen[0], **check(args.model, size, args)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resmlp_tiny32:embed_dim=128", help="NAME[:key=value,...]")
    ap.add_argument("--sizes", type=int, nargs="+", default=[24, 32])
    ap.add_argument("--simdlen", nargs="+", default=["default", "256"], help="Inductor CPU vector widths in bits")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: no C++ kernels)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    bad = [s for s in args.simdlen if s != "default" and not s.isdigit()]
    if bad:
        ap.error(f"--simdlen {' '.join(bad)}: expected widths in bits (256, 512) or default")
    if args.worker:
        worker(args)
        return 0
    rows = []
    for width in args.simdlen:
        cmd = [sys.executable, __file__, "--worker", "--simdlen", width, "--sizes", *map(str, args.sizes)]
        cmd += ["--model", args.model, "--precision", args.precision, "--backend", args.backend]
        cmd += ["--batch", str(args.batch), "--rounds", str(args.rounds), "--steps", str(args.steps)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"error: --simdlen {width}: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 1
        rows += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    print(
        f"{args.model}, {args.precision}, batch {args.batch}, backend {args.backend}, {torch.get_num_threads()} threads"
    )
    print("| px | simdlen | compiled grads finite | max diff | eager img/s | compiled img/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['simdlen']} | {'yes' if r['finite'] else '**no**'} | {r['max_diff']:.2g} | "
            f"{r['eager']:.0f} | {r['compiled']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
