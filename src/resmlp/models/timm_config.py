"""A ModelSpec as timm's Hub `config.json` and back (pure dicts, no I/O).

timm's schema (what its `push_to_hub` writes and its hub loader reads):
    architecture     timm's registered function, e.g. "resmlp_12_224" (called with model_args as kwargs)
    num_classes      head size;  num_features: width after the final norm;  global_pool: "avg"
    model_args       extra constructor kwargs; here only sizes timm's function does not fix (img_size, in_chans)
    pretrained_cfg   input_size [C, H, W], fixed_input_size, interpolation, crop_pct, crop_mode, mean, std,
                     num_classes, first_conv, classifier, tag (and, here, label_names)
    label_names      class names by head index
We add one key timm ignores, "resmlp" (our `ModelSpec.to_dict()`), so our own reader rebuilds the exact
spec, including variants timm has no function for (their `architecture` is our variant name).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from .registry import VARIANTS, ModelSpec, Preprocess, model_args

_BODY = ("patch_size", "embed_dim", "depth", "mlp_ratio", "token_mlp_ratio")
# the ablation options and per-block MLP widths (a compressed model): timm builds only the defaults
_OPTIONS = ("norm", "token_mixing", "pooling", "act", "mlp_hidden")


def timm_architecture(spec: ModelSpec) -> Optional[str]:
    """timm's name for the architecture of `spec` (same body as a registered variant with a timm
    counterpart), or None when timm has no function that builds it."""
    for variant in VARIANTS.values():
        if variant.timm_name is None or variant.arch != spec.arch:
            continue
        _, registered = model_args(variant.name)
        if all(math.isclose(registered[k], spec.args[k]) for k in _BODY if k in registered) and all(
            registered[k] == spec.args.get(k, registered[k]) for k in _OPTIONS if k in registered
        ):
            return variant.timm_name
    return None


def to_timm_config(spec: ModelSpec, *, num_features: int, tag: Optional[str] = None) -> dict[str, Any]:
    """The config.json timm's hub loader reads for a model of `spec` whose pooled features have
    `num_features` dims (see the module docstring)."""
    arch = timm_architecture(spec)
    pre, classes = spec.preprocess, spec.class_names()
    c, h, w = spec.input_shape
    pretrained_cfg: dict[str, Any] = {
        "tag": tag or "resmlp",
        "custom_load": False,
        "input_size": [c, h, w],
        "fixed_input_size": True,
        "interpolation": pre.interpolation,
        "crop_pct": pre.crop_pct,
        "crop_mode": "center",
        "mean": list(pre.mean),
        "std": list(pre.std),
        "num_classes": spec.num_classes,
        "pool_size": None,
        "first_conv": "stem.proj" if spec.arch != "resnet" else "stem.0",
        "classifier": "head",
        "label_names": classes,
    }
    config: dict[str, Any] = {
        "architecture": arch or spec.name,
        "num_classes": spec.num_classes,
        "num_features": num_features,
        "global_pool": "avg",
    }
    # timm's functions fix patch size, width and depth; a size they leave free goes in model_args.
    sizes = {k: spec.args[k] for k, default in (("img_size", 224), ("in_chans", 3)) if spec.args[k] != default}
    if sizes:
        config["model_args"] = sizes
    config["pretrained_cfg"] = pretrained_cfg
    config["label_names"] = classes
    config["resmlp"] = spec.to_dict()
    return config


def from_timm_config(config: Mapping[str, Any]) -> ModelSpec:
    """The ModelSpec a timm-schema config.json describes: ours (its "resmlp" entry) or timm's own
    (architecture -> our variant; sizes, preprocessing and label names from model_args/pretrained_cfg).
    ValueError names the key that does not fit."""
    if isinstance(config.get("resmlp"), Mapping):
        return ModelSpec.from_dict(config["resmlp"])
    arch = config.get("architecture")
    name = next((v.name for v in VARIANTS.values() if v.timm_name is not None and v.timm_name == arch), None)
    if name is None:
        known = sorted(v.timm_name for v in VARIANTS.values() if v.timm_name)
        raise ValueError(f"architecture {arch!r} is not a timm architecture resmlp builds; known: {', '.join(known)}")
    cfg = dict(config.get("pretrained_cfg") or {})
    margs = dict(config.get("model_args") or {})
    unknown = sorted(set(margs) - {"img_size", "in_chans", "num_classes", "drop_path_rate"})
    if unknown:
        raise ValueError(f"model_args {unknown} have no resmlp equivalent for {arch}")
    input_size = cfg.get("input_size") or [3, 224, 224]
    img_size = margs.get("img_size", input_size[-1])
    img_size = img_size[-1] if isinstance(img_size, (list, tuple)) else img_size
    num_classes = config.get("num_classes", cfg.get("num_classes", 1000))
    overrides = dict(
        img_size=int(img_size), in_chans=int(margs.get("in_chans", input_size[0])), num_classes=int(num_classes)
    )
    if "drop_path_rate" in margs:
        overrides["drop_path_rate"] = margs["drop_path_rate"]
    _, args = model_args(name, **overrides)
    default = Preprocess()
    pre = Preprocess(
        img_size=args["img_size"],
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        interpolation=str(cfg.get("interpolation", default.interpolation)),
        mean=tuple(cfg.get("mean", default.mean)),
        std=tuple(cfg.get("std", default.std)),
    )
    labels = config.get("label_names", cfg.get("label_names"))
    if isinstance(labels, Mapping):  # timm allows {index: name}; only a complete mapping gives a list
        labels = [labels.get(str(i), labels.get(i)) for i in range(len(labels))]
        labels = None if any(v is None for v in labels) else labels
    classes = tuple(labels) if labels and len(labels) == args["num_classes"] else None
    return ModelSpec(name, args, pre, classes)
