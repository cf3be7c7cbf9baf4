"""What the time-budget fit prices a progressive run's epochs at: `time_passes` on the recipe's model.

    python benchmarks/bench_fit_pricing.py --model "resmlp_tiny32:embed_dim=128" --sizes 24 32 \
        --batch 128 --passes 351 --first-epoch-s 192 --probes 3

Prints each probe's seconds per forward/backward pass at every size and the cost of an epoch at each size
relative to a first epoch of `--first-epoch-s` at the first size (`relative_epoch_cost`), to set beside the
epoch times a run's metrics.jsonl recorded.
"""

from __future__ import annotations

import argparse

import torch

from resmlp.models import create_model
from resmlp.train.progressive import relative_epoch_cost, time_passes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resmlp_tiny32:embed_dim=128", help="NAME[:key=value,...]")
    ap.add_argument("--sizes", type=int, nargs="+", default=[24, 32])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--passes", type=int, default=351, help="forward/backward passes per epoch")
    ap.add_argument("--first-epoch-s", type=float, default=192.0)
    ap.add_argument("--probes", type=int, default=3)
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args(argv)
    name, _, rest = args.model.partition(":")
    kwargs = {k: int(v) for k, v in (item.split("=") for item in rest.split(",") if item)}
    model = create_model(name, **kwargs)
    sizes = [(s, s) for s in args.sizes]
    schedule = [(i, size) for i, size in enumerate(sizes)]  # epoch i at the i-th size
    for probe in range(args.probes):
        seconds = time_passes(
            model, sizes, batch_size=args.batch, device=torch.device("cpu"), precision=args.precision, mode="crop"
        )
        costs = [
            relative_epoch_cost(schedule, i, sizes[0], seconds, args.passes, args.first_epoch_s)
            for i in range(len(sizes))
        ]
        print(
            f"probe {probe + 1}: "
            + ", ".join(f"{h} px {seconds[(h, w)]:.3f} s/pass, epoch x{c:.3f}" for (h, w), c in zip(sizes, costs)),
            flush=True,
        )


if __name__ == "__main__":
    main()
