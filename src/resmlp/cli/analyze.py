"""`resmlp analyze SOURCE --out DIR`: the paper's weight analyses (Fig. 2-3, B.1-B.2) as a report."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..analysis.prune import parse_sparsities, parse_targets, pruning_sweep
from ..checkpoint import model_from_checkpoint, read_checkpoint
from ..models import create_model
from ..models.registry import model_args
from ..deploy.infer_arch import infer_architecture
from ..weights import WeightsError, convert_state_dict, load_weights, read_state_dict


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
        "analyze", help="cross-patch weight maps, sparsity, locality, LayerScale, pruning: figures + report.html",
        description="Analyse a model's weights as in the ResMLP paper (Fig. 2-3, B.1-B.2) and write PNGs, "
                    "summary.json and report.html into --out.")
    p.add_argument("source", help="a run directory, one of our checkpoints, or a plain weights file "
                                  "(.pth/.pt/.safetensors, deit or timm layout; needs --model)")
    p.add_argument("--out", required=True, help="output directory for the figures and the report")
    g = p.add_argument_group("plain weights files")
    g.add_argument("--model", default=None, help="registered variant the file holds (default: inferred from the tensor shapes)")
    g.add_argument("--img-size", type=int, default=None, help="default: inferred from the number of patches")
    g.add_argument("--num-classes", type=int, default=None, help="default: inferred from the head")
    g.add_argument("--key", default=None, help="entry of the file holding the weights (e.g. model_ema)")
    p.add_argument("--weights", default="model", choices=("model", "ema"), help="which weights of our checkpoints")
    g = p.add_argument_group("compression")
    g.add_argument("--prune", type=_arg_type(parse_sparsities), default=None, metavar="S1,S2,...",
                   help="magnitude-prune to these sparsities per layer, e.g. 0.5,0.8,0.9")
    g.add_argument("--prune-targets", type=_arg_type(parse_targets), default=("A",), metavar="A[,B,C]",
                   help="which matrices of every block to prune: A (cross-patch), B, C (channel MLP); default A")
    g.add_argument("--data", default=None, help="validation image folder (root/<class>/*): accuracy per sparsity")
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init reference model")
    p.set_defaults(func=run_analyze)


def _shape_overrides(sd: dict[str, torch.Tensor], name: str) -> dict[str, int]:
    """img_size, num_classes and in_chans read off the tensors, so e.g. a 10-class 32px file loads as such."""
    patch = model_args(name)[1]["patch_size"]
    out = {}
    tokens = sd.get("blocks.0.linear_tokens.weight", sd.get("blocks.0.mlp_tokens.fc1.weight"))
    if tokens is not None and math.isqrt(tokens.shape[1]) ** 2 == tokens.shape[1]:
        out["img_size"] = math.isqrt(tokens.shape[1]) * patch
    if "head.weight" in sd:
        out["num_classes"] = sd["head.weight"].shape[0]
    if "stem.proj.weight" in sd:
        out["in_chans"] = sd["stem.proj.weight"].shape[1]
    return out


def load_source(args: argparse.Namespace) -> tuple[nn.Module, Path | None, str]:
    """(model, run directory or None, the checkpoint path actually read)."""
    path = Path(args.source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    ckpt = None
    if path.is_dir():
        ckpt = read_checkpoint(path)  # a run directory: checkpoints/best.pt, else last.pt
    else:
        try:
            ckpt = read_checkpoint(path)
        except WeightsError:
            pass  # not ours: a plain weights file, read below
    if ckpt is not None:
        if args.model or args.img_size or args.num_classes or args.key:
            print("note: --model/--img-size/--num-classes/--key apply to plain weights files; the checkpoint "
                  "describes its own model", file=sys.stderr)
        model = model_from_checkpoint(ckpt, weights=args.weights)
        read = Path(ckpt["path"])
        run_dir = read.parent.parent if read.parent.name == "checkpoints" else None
        return model, run_dir, str(read)
    sd = convert_state_dict(read_state_dict(path, key=args.key), to="timm")
    if args.model is None:  # the architecture from the tensor shapes
        name, overrides = infer_architecture(sd)
    else:
        name, overrides = args.model, _shape_overrides(sd, args.model)
    overrides.update({k: v for k, v in (("img_size", args.img_size), ("num_classes", args.num_classes)) if v})
    model = create_model(name, **overrides)
    load_weights(model, sd)
    model.classes = None
    return model, None, str(path)


def _loader(args: argparse.Namespace, model: nn.Module) -> DataLoader:
    from ..data.datasets import ImageDataset
    from ..data.transforms import build_eval_transform

    pre = model.preprocess
    transform = build_eval_transform(pre.img_size, mean=pre.mean, std=pre.std, crop_pct=pre.crop_pct,
                                     interpolation=pre.interpolation)
    ds = ImageDataset.from_folder(args.data, transform=transform)
    classes = getattr(model, "classes", None)
    if classes and list(ds.classes) != list(classes):
        diff = sorted(set(ds.classes) ^ set(classes))[:5]
        raise ValueError(f"--data {args.data}: class folders do not match the checkpoint's {len(classes)} classes "
                         f"(found {len(ds.classes)}; differing: {', '.join(diff) or 'same names, other order'})")
    if len(ds.classes) > model.num_classes:
        raise ValueError(f"--data {args.data}: {len(ds.classes)} class folders but the model has "
                         f"{model.num_classes} outputs")
    return DataLoader(ds, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)


def _fmt(x: float | None) -> str:
    return "    -" if x is None else f"{x:5.3f}"


def print_summary(summary: dict, out: Path) -> None:
    arch = summary["architecture"]
    dist, share = ("mean_distance", "share_3x3") if arch == "resmlp" else ("peak_mean_distance", "peak_share_3x3")
    ref = summary["random_init_layers"]
    g = summary["grid_size"]
    print(f"{summary['model_name']} ({arch}, {g}x{g} patches) from {summary['source']}")
    peak = arch == "resmlp"
    print(f"{'layer':>5}  {'sparsity A':>10} {'B':>5} {'C':>5} {'rand A':>6}  {'mean dist':>9} {'rand':>5}"
          f"  {'3x3 share':>9} {'rand':>5}" + (f"  {'peak in 3x3':>11} {'rand':>5}" if peak else ""))
    for i, l in enumerate(summary["layers"]):
        r, loc = ref[i], l["locality"]
        print(f"{i:>5}  {l['sparsity']['A']:>10.3f} {l['sparsity']['B']:5.3f} {l['sparsity']['C']:5.3f} "
              f"{r['sparsity']['A']:6.3f}  {_fmt(loc[dist]):>9} {_fmt(r['locality'][dist])}"
              f"  {_fmt(loc[share]):>9} {_fmt(r['locality'][share])}"
              + (f"  {_fmt(loc['peak_in_3x3']):>11} {_fmt(r['locality']['peak_in_3x3'])}" if peak else ""))
    t = summary["depth_trend"]
    print(f"locality: mean distance {_fmt(t['mean_distance']['first_third']).strip()} (first third of the layers) "
          f"vs {_fmt(t['mean_distance']['last_third']).strip()} (last third); 3x3 share "
          f"{_fmt(t['share_3x3']['first_third']).strip()} vs {_fmt(t['share_3x3']['last_third']).strip()}")
    if summary["pruning"]:
        targets = summary["pruning"]["targets"]
        for rec in summary["pruning"]["results"]:
            acc = f", top-1 {rec['top1']:.2f}%" if "top1" in rec else ""
            kept = ", ".join(f"{t} {rec['targets'][t]['sparsity']:.3f} zero / {rec['targets'][t]['l1_kept']:.3f} "
                             f"L1 kept" for t in targets)
            print(f"prune {rec['sparsity']:.2f}: {kept}{acc}")
    print(f"wrote {len(summary['figures'])} figures, maps/, summary.json and report.html to {out}")


def run_analyze(args: argparse.Namespace) -> int:
    from ..analysis.report import build_report  # matplotlib: imported only when analysing

    if args.data and not args.prune:
        raise ValueError("--data evaluates pruned models: add --prune, e.g. --prune 0.5,0.8,0.9")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    model, run_dir, read = load_source(args)
    model.eval()
    torch.manual_seed(args.seed)
    reference = create_model(model.model_name, **model.model_args)
    pruning = None
    if args.prune:
        loader = _loader(args, model) if args.data else None
        pruning = pruning_sweep(model, args.prune, args.prune_targets, loader=loader, device=device)
    out = Path(args.out)
    summary = build_report(model.cpu(), out, source=read, reference=reference, run_dir=run_dir,
                           pruning=pruning, pruning_targets=args.prune_targets)
    print_summary(summary, out)
    return 0
