"""Named model variants with their preprocessing metadata: `create_model(name, **overrides)`.

Every model `create_model` builds carries `model.spec`, a `ModelSpec`: the one description of what a
model is (registered name, every constructor argument, preprocessing, class names). Checkpoints and
packaged exports store `spec.to_dict()` and rebuild the model with `ModelSpec.from_dict(...).build()`.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

from torch import nn

from .layers import to_pair
from .mixer import MlpMixer
from .resmlp import ResMLP
from .resnet import CifarResNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHITECTURES: dict[str, type[nn.Module]] = {"resmlp": ResMLP, "mixer": MlpMixer, "resnet": CifarResNet}


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for a model (stored with every checkpoint and export)."""

    img_size: Union[int, tuple[int, int]] = 224  # an int (square) or (height, width)
    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class Variant:
    name: str
    arch: str
    args: dict[str, Any]
    preprocess: Preprocess = field(default_factory=Preprocess)
    description: str = ""
    # Official weights (deit repo), for users who are online: tag -> URL.
    urls: dict[str, str] = field(default_factory=dict)


_DEIT = "https://dl.fbaipublicfiles.com/deit/"
_SMALL = Preprocess(img_size=32, crop_pct=1.0, interpolation="bicubic")

VARIANTS: dict[str, Variant] = {v.name: v for v in [
    # Paper Table 1 / Table 3. LayerScale init is depth dependent (0.1 for 12 blocks, 1e-5 for 24, 1e-6 beyond).
    Variant("resmlp_s12", "resmlp", dict(patch_size=16, embed_dim=384, depth=12, layer_scale_init=0.1),
            description="ResMLP-S12 (paper Table 1)",
            urls={"no_dist": _DEIT + "resmlp_12_no_dist.pth", "dist": _DEIT + "resmlp_12_dist.pth"}),
    Variant("resmlp_s24", "resmlp", dict(patch_size=16, embed_dim=384, depth=24, layer_scale_init=1e-5),
            description="ResMLP-S24 (paper Table 1)",
            urls={"no_dist": _DEIT + "resmlp_24_no_dist.pth", "dist": _DEIT + "resmlp_24_dist.pth"}),
    Variant("resmlp_s36", "resmlp", dict(patch_size=16, embed_dim=384, depth=36, layer_scale_init=1e-6),
            description="ResMLP-S36 (paper Table 1)",
            urls={"no_dist": _DEIT + "resmlp_36_no_dist.pth", "dist": _DEIT + "resmlp_36_dist.pth"}),
    Variant("resmlp_b24", "resmlp", dict(patch_size=16, embed_dim=768, depth=24, layer_scale_init=1e-6),
            description="ResMLP-B24 (paper Table 1)"),
    Variant("resmlp_b24_p8", "resmlp", dict(patch_size=8, embed_dim=768, depth=24, layer_scale_init=1e-6),
            description="ResMLP-B24/8 (paper Table 1)",
            urls={"no_dist": _DEIT + "resmlpB_24_no_dist.pth", "dist": _DEIT + "resmlpB_24_dist.pth",
                  "in22k": _DEIT + "resmlpB_24_22k.pth"}),
    # MLP-Mixer baselines (Tolstikhin et al. 2021, Table 1).
    Variant("mixer_s16", "mixer", dict(patch_size=16, embed_dim=512, depth=8), description="Mixer-S/16"),
    Variant("mixer_b16", "mixer", dict(patch_size=16, embed_dim=768, depth=12), description="Mixer-B/16"),
    Variant("mixer_l16", "mixer", dict(patch_size=16, embed_dim=1024, depth=24), description="Mixer-L/16"),
    # Small variants that train on a laptop CPU (ours, not in the papers).
    Variant("resmlp_micro8", "resmlp",
            dict(img_size=8, patch_size=2, embed_dim=128, depth=4, layer_scale_init=0.1, num_classes=10),
            Preprocess(img_size=8, crop_pct=1.0), "8x8 inputs (sklearn digits): 16 patches of 2x2"),
    Variant("resmlp_micro16", "resmlp",
            dict(img_size=16, patch_size=2, embed_dim=128, depth=6, layer_scale_init=0.1, num_classes=10),
            Preprocess(img_size=16, crop_pct=1.0), "16x16 inputs: 64 patches of 2x2"),
    Variant("resmlp_tiny32", "resmlp",
            dict(img_size=32, patch_size=4, embed_dim=192, depth=8, layer_scale_init=0.1, num_classes=10),
            _SMALL, "32x32 inputs (CIFAR): 64 patches of 4x4, the CPU workhorse"),
    Variant("mixer_tiny32", "mixer",
            dict(img_size=32, patch_size=4, embed_dim=192, depth=8, num_classes=10),
            _SMALL, "32x32 inputs (CIFAR): Mixer baseline of similar cost to resmlp_tiny32"),
    # Convnet teachers for distillation (He et al. 2016, CIFAR ResNets), trained with `resmlp train`.
    Variant("resnet20_cifar", "resnet", dict(img_size=32, blocks_per_stage=3, num_classes=10), _SMALL,
            "CIFAR ResNet-20 (teacher)"),
    Variant("resnet56_cifar", "resnet", dict(img_size=32, blocks_per_stage=9, num_classes=10), _SMALL,
            "CIFAR ResNet-56 (teacher)"),
]}


def list_models() -> list[str]:
    """Names of every registered variant, sorted."""
    return sorted(VARIANTS)


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return VARIANTS[name]


def model_args(name: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """The architecture and the full constructor arguments of variant `name` with `overrides` applied."""
    variant = get_variant(name)
    cls = ARCHITECTURES[variant.arch]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(f"{name} does not accept {', '.join(unknown)}; accepted overrides: {', '.join(accepted)}")
    defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"}
    return variant.arch, {**defaults, **variant.args, **overrides}


@dataclass(frozen=True)
class ModelSpec:
    """What a model is: registered variant `name`, every constructor argument (`args`), how its images
    are prepared (`preprocess`) and its class names (`classes`, None when unknown)."""

    name: str
    args: dict[str, Any]
    preprocess: Preprocess
    classes: Optional[tuple[str, ...]] = None

    @property
    def arch(self) -> str:
        return get_variant(self.name).arch

    @property
    def num_classes(self) -> int:
        return self.args["num_classes"]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model takes."""
        return (self.args.get("in_chans", 3), *to_pair(self.args["img_size"]))

    def class_names(self) -> list[str]:
        """The class names, or class_0, class_1, ... when the spec has none."""
        return list(self.classes) if self.classes is not None else [f"class_{i}" for i in range(self.num_classes)]

    def replace(self, **changes: Any) -> "ModelSpec":
        if changes.get("classes") is not None:
            changes["classes"] = tuple(changes["classes"])
        return dataclasses.replace(self, **changes)

    def build(self) -> nn.Module:
        """A freshly initialised model of this spec (with `model.spec` = self)."""
        model = create_model(self.name, **self.args)
        model.spec = self
        return model

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML/torch.save-ready: model_name, model_args, preprocess, classes."""
        pre = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.preprocess).items()}
        return {"model_name": self.name, "model_args": dict(self.args), "preprocess": pre,
                "classes": list(self.classes) if self.classes is not None else None}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "ModelSpec":
        """The inverse of `to_dict` (extra keys are ignored); ValueError names what does not fit."""
        name = record.get("model_name")
        if name not in VARIANTS:
            raise ValueError(f"unknown model_name {name!r}")
        _, args = model_args(name, **_sizes_as_tuples(dict(record.get("model_args") or {})))
        pre = dict(record.get("preprocess") or {})
        known = {f.name for f in dataclasses.fields(Preprocess)}
        if set(pre) - known:
            raise ValueError(f"unknown preprocess keys {sorted(set(pre) - known)}")
        pre.update({k: tuple(pre[k]) for k in ("mean", "std") if k in pre})
        if isinstance(pre.get("img_size"), list):  # JSON/YAML keep (h, w) as a list
            pre["img_size"] = tuple(pre["img_size"])
        classes = record.get("classes")
        return cls(name, args, Preprocess(**{"img_size": args["img_size"], **pre}),
                   tuple(classes) if classes is not None else None)


def _sizes_as_tuples(args: dict[str, Any]) -> dict[str, Any]:
    if isinstance(args.get("img_size"), list):
        args["img_size"] = tuple(args["img_size"])
    return args


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build registered variant `name`; `overrides` replace constructor arguments such as `img_size`,
    `in_chans`, `num_classes` or `drop_path_rate` (the token count N follows from img_size / patch_size).

    The model carries `model.spec` (a ModelSpec: everything needed to rebuild it and feed it images).
    """
    arch, args = model_args(name, **_sizes_as_tuples(dict(overrides)))
    model = ARCHITECTURES[arch](**args)
    model.spec = ModelSpec(name, args, dataclasses.replace(get_variant(name).preprocess, img_size=args["img_size"]))
    return model
