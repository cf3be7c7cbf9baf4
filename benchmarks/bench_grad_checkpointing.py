"""Activation memory of one training step with and without gradient checkpointing (set_grad_checkpointing).

    python benchmarks/bench_grad_checkpointing.py [--model resmlp_b24_p8] [--batch 2] [--repeats 3]

Each measurement is a fresh subprocess (so the allocator starts clean): build the model, note the resident
set size (RSS), run forward + backward of one batch, and report peak RSS minus the RSS before the step (the
memory the step itself needed: activations kept for backward, plus gradients of the parameters, which are
the same in both settings). Runs alternate (off, on, off, on, ...) so that load from other processes hits
both alike; medians are reported. A second, noise-free number counts the bytes autograd saves for backward
(torch.autograd.graph.saved_tensors_hooks) in one forward pass of the same model and batch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time, torch
import resmlp
name, batch, ckpt = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
torch.manual_seed(0)
model = resmlp.models.create_model(name).train()
model.set_grad_checkpointing(ckpt)
x = torch.randn(batch, *model.spec.input_shape)
page = 4096
rss_before = int(open("/proc/self/statm").read().split()[1]) * page
t0 = time.perf_counter()
model(x).logsumexp(1).mean().backward()
step_s = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
print(json.dumps({"step_mb": (peak - rss_before) / 2**20, "step_s": step_s}))
"""


def saved_for_backward_mb(name: str, batch: int, checkpointing: bool) -> float:
    import torch

    import resmlp

    torch.manual_seed(0)
    model = resmlp.models.create_model(name).train()
    model.set_grad_checkpointing(checkpointing)
    x = torch.randn(batch, *model.spec.input_shape)
    params = {p.data_ptr() for p in model.parameters()}
    total = 0

    def pack(t):
        nonlocal total
        if t.data_ptr() not in params:  # weights are saved by reference, not extra memory
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).logsumexp(1).mean()
    return total / 2**20


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resmlp_b24_p8")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for r in range(args.repeats):
        for mode in ("off", "on"):
            argv = [sys.executable, "-c", CHILD, args.model, str(args.batch), "1" if mode == "on" else "0"]
            out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} checkpointing {mode:>3}: {runs[mode][-1]}", flush=True)
    saved = {mode: saved_for_backward_mb(args.model, args.batch, mode == "on") for mode in ("off", "on")}
    result = {
        "model": args.model,
        "batch": args.batch,
        "repeats": args.repeats,
        "date": time.strftime("%Y-%m-%d"),
        **{f"step_mb_{m}": statistics.median(r["step_mb"] for r in runs[m]) for m in runs},
        **{f"step_s_{m}": statistics.median(r["step_s"] for r in runs[m]) for m in runs},
        **{f"saved_for_backward_mb_{m}": saved[m] for m in saved},
    }
    print(json.dumps(result, indent=2))
    print(
        f"peak step memory: {result['step_mb_off']:.0f} MB -> {result['step_mb_on']:.0f} MB with checkpointing "
        f"({1 - result['step_mb_on'] / result['step_mb_off']:.0%} less); tensors saved for backward "
        f"{saved['off']:.0f} MB -> {saved['on']:.0f} MB; step time x{result['step_s_on'] / result['step_s_off']:.2f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
