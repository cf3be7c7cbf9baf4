"""`resmlp analyze SOURCE --out DIR`: the paper's weight analyses (Fig. 2-3, B.1-B.2) as a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..analysis.prune import parse_sparsities, parse_targets, pruning_sweep
from ..device import resolve_device
from ..loading import folder_dataset, load_model


def _arg_type(parse):
    """argparse reports ArgumentTypeError messages verbatim (a ValueError only as 'invalid value')."""

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="cross-patch weight maps, sparsity, locality, LayerScale, pruning: figures + report.html",
        description="Analyse a model's weights as in the ResMLP paper (Fig. 2-3, B.1-B.2) and write PNGs, "
        "summary.json and report.html into --out.",
    )
    p.add_argument(
        "source",
        help="a run directory, one of our checkpoints, or a plain weights file "
        "(.pth/.pt/.safetensors, deit or timm layout; needs --model)",
    )
    p.add_argument("--out", required=True, help="output directory for the figures and the report")
    g = p.add_argument_group("plain weights files")
    g.add_argument(
        "--model", default=None, help="registered variant the file holds (default: inferred from the tensor shapes)"
    )
    g.add_argument("--img-size", type=int, default=None, help="default: inferred from the number of patches")
    g.add_argument("--num-classes", type=int, default=None, help="default: inferred from the head")
    g.add_argument("--key", default=None, help="entry of the file holding the weights (e.g. model_ema)")
    p.add_argument("--weights", default="model", choices=("model", "ema"), help="which weights of our checkpoints")
    g = p.add_argument_group("compression")
    g.add_argument(
        "--prune",
        type=_arg_type(parse_sparsities),
        default=None,
        metavar="S1,S2,...",
        help="magnitude-prune to these sparsities per layer, e.g. 0.5,0.8,0.9",
    )
    g.add_argument(
        "--prune-targets",
        type=_arg_type(parse_targets),
        default=("A",),
        metavar="A[,B,C]",
        help="which matrices of every block to prune: A (cross-patch), B, C (channel MLP); default A",
    )
    g.add_argument("--data", default=None, help="validation image folder (root/<class>/*): accuracy per sparsity")
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init reference model")
    p.set_defaults(func=run_analyze)


def _loader(args: argparse.Namespace, spec) -> DataLoader:
    return DataLoader(
        folder_dataset(args.data, spec), batch_size=args.batch_size, shuffle=False, num_workers=args.workers
    )


def print_summary(summary: dict, out: Path) -> None:
    from ..analysis.report import REPORT_SUMMARY
    from ..analysis.report_html import REPORT_HTML, grid_text, layer_table

    print(
        f"{summary['model_name']} ({summary['architecture']}, {grid_text(summary['grid_size'])} patches) "
        f"from {summary['source']}"
    )
    head, rows = layer_table(summary)
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(head)]
    for cells in [head, *rows]:
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    t = summary["depth_trend"]
    print(
        f"locality: mean distance {_fmt(t['mean_distance']['first_third'])} (first third of the layers) "
        f"vs {_fmt(t['mean_distance']['last_third'])} (last third); 3x3 share "
        f"{_fmt(t['share_3x3']['first_third'])} vs {_fmt(t['share_3x3']['last_third'])}"
    )
    if summary["pruning"]:
        targets = summary["pruning"]["targets"]
        for rec in summary["pruning"]["results"]:
            acc = f", top-1 {rec['top1']:.2f}%" if "top1" in rec else ""
            kept = ", ".join(
                f"{t} {rec['targets'][t]['sparsity']:.3f} zero / {rec['targets'][t]['l1_kept']:.3f} L1 kept"
                for t in targets
            )
            print(f"prune {rec['sparsity']:.2f}: {kept}{acc}")
    print(f"wrote {len(summary['figures'])} figures, maps/, {REPORT_SUMMARY} and {REPORT_HTML} to {out}")


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def run_analyze(args: argparse.Namespace) -> int:
    from ..analysis.report import build_report  # matplotlib: imported only when analysing

    if args.data and not args.prune:
        raise ValueError("--data evaluates pruned models: add --prune, e.g. --prune 0.5,0.8,0.9")
    device = resolve_device(args.device)
    loaded = load_model(
        args.source,
        model_name=args.model,
        weights=args.weights,
        key=args.key,
        overrides={"img_size": args.img_size, "num_classes": args.num_classes},
    )
    if loaded.checkpoint and (args.img_size or args.num_classes or args.key):
        print(
            "note: --img-size/--num-classes/--key apply to plain weights files; the checkpoint describes its own model",
            file=sys.stderr,
        )
    model = loaded.model
    torch.manual_seed(args.seed)
    reference = loaded.spec.build()
    pruning = None
    if args.prune:
        loader = _loader(args, loaded.spec) if args.data else None
        pruning = pruning_sweep(model, args.prune, args.prune_targets, loader=loader, device=device)
    out = Path(args.out)
    summary = build_report(
        model.cpu(),
        out,
        source=str(loaded.path),
        reference=reference,
        run_dir=loaded.run_dir,
        pruning=pruning,
        pruning_targets=args.prune_targets,
    )
    print_summary(summary, out)
    return 0
