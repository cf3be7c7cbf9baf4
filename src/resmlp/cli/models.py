"""`resmlp models`, `resmlp summary NAME`, `resmlp convert SRC DST --to deit|timm`."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..files import write_atomic
from ..models import (
    SEQ_VARIANTS,
    count_macs,
    count_params,
    create_model,
    create_seq_model,
    get_variant,
    list_models,
    list_seq_models,
)
from ..weights import convert_state_dict, read_state_dict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="table of registered variants with params and GFLOPs")
    p.set_defaults(func=run_models)
    p = sub.add_parser("summary", help="layer-by-layer summary of one variant")
    p.add_argument("name", help="a registered variant (see `resmlp models`)")
    p.add_argument("--img-size", type=int, default=None, help="override the input size")
    p.add_argument("--num-classes", type=int, default=None, help="override the number of classes")
    p.set_defaults(func=run_summary)
    p = sub.add_parser("convert", help="convert a ResMLP checkpoint between the deit and timm layouts")
    p.add_argument("src", help=".pth/.pt/.safetensors weights in any supported layout")
    p.add_argument("dst", help="output path (.pth or .safetensors)")
    p.add_argument("--to", required=True, choices=("deit", "timm"))
    p.set_defaults(func=run_convert)


def _meta_model(name: str, **overrides):
    with torch.device("meta"):  # shapes only: counting params and MACs costs no arithmetic
        return create_model(name, **overrides)


def _input_shape(model) -> tuple[int, int, int, int]:
    return (1, *model.spec.input_shape)


def run_models(args: argparse.Namespace) -> int:
    header = (
        f"{'name':<16}{'arch':<8}{'img':>5}{'patch':>6}{'dim':>6}{'depth':>6}{'params':>14}{'GFLOPs':>8}  description"
    )
    print(header)
    print("-" * len(header))
    for name in list_models():
        v = get_variant(name)
        m = _meta_model(name)
        a = m.spec.args
        gmacs = count_macs(m, _input_shape(m)) / 1e9
        depth = a.get("depth", 6 * a.get("blocks_per_stage", 0) + 2)  # CIFAR ResNets: 6n + 2 layers
        print(
            f"{name:<16}{v.arch:<8}{a['img_size']:>5}{a.get('patch_size', '-'):>6}{m.embed_dim:>6}{depth:>6}"
            f"{count_params(m):>14,}{gmacs:>8.2f}  {v.description}"
        )
    print("GFLOPs = multiply-adds of one image at the listed size, as the paper counts them.")
    print()
    print(f"{'sequence model':<22}{'dim':>6}{'depth':>6}{'max_len':>8}{'params (8k vocab)':>19}  description")
    for name in list_seq_models():
        with torch.device("meta"):
            m = create_seq_model(name, vocab_size=8000)
        a = m.spec.args
        depth = f"{a['depth']}+{a.get('decoder_depth') or a['depth']}" if "decoder_depth" in a else str(a["depth"])
        print(
            f"{name:<22}{a['embed_dim']:>6}{depth:>6}{a['max_len']:>8}{count_params(m):>19,}  {SEQ_VARIANTS[name][2]}"
        )
    return 0


def run_summary(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("img_size", args.img_size), ("num_classes", args.num_classes)) if v is not None}
    m = _meta_model(args.name, **overrides)
    shapes: dict[str, tuple] = {}
    hooks = [
        mod.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
        for n, mod in m.named_children()
        if n != "blocks"
    ]
    hooks += [
        b.register_forward_hook(lambda mod, i, o, n=f"blocks.{j}": shapes.__setitem__(n, tuple(o.shape)))
        for j, b in enumerate(m.blocks)
    ]
    macs = count_macs(m, _input_shape(m))
    for h in hooks:
        h.remove()
    print(f"{args.name}: {type(m).__name__}({', '.join(f'{k}={v}' for k, v in m.spec.args.items())})")
    print(f"{'module':<20}{'output shape':<22}{'params':>14}")
    rows = (
        [("stem", m.stem)]
        + [(f"blocks.{j}", b) for j, b in enumerate(m.blocks)]
        + [(n, getattr(m, n)) for n in ("norm", "head") if hasattr(m, n)]
    )
    for n, mod in rows:
        if n in shapes:
            print(f"{n:<20}{str(shapes[n]):<22}{count_params(mod):>14,}")
    print(
        f"total params {count_params(m):,}; {macs / 1e9:.2f} GFLOPs (multiply-adds) per image; "
        f"tokens N={m.forward_features(torch.zeros(_input_shape(m), device='meta')).shape[1]}, dim D={m.embed_dim}"
    )
    p = m.spec.preprocess
    print(f"preprocessing: {p.img_size}px, crop_pct {p.crop_pct}, {p.interpolation}, mean {p.mean}, std {p.std}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    sd = convert_state_dict(read_state_dict(args.src), to=args.to)
    dst = Path(args.dst)
    if dst.suffix == ".safetensors":
        from safetensors.torch import save_file

        write_atomic(dst, lambda tmp: save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp)))
    else:
        write_atomic(dst, lambda tmp: torch.save(sd, tmp))
    print(f"wrote {dst} ({args.to} layout, {len(sd)} tensors)")
    return 0
