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

from .backbone import FeatureMaps, Indices, PatchClassifier
from .convnet import CifarConvNet
from .layers import to_pair
from .mixer import MlpMixer
from .resmlp import ResMLP
from .resnet import CifarResNet
from .sequence import SEQ_VARIANTS, create_seq_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "resmlp": ResMLP,
    "mixer": MlpMixer,
    "resnet": CifarResNet,
    "convnet": CifarConvNet,
}


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for a model (stored with every checkpoint and export)."""

    img_size: Union[int, tuple[int, int]] = 224  # an int (square) or (height, width)
    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class PretrainedWeights:
    """One published set of weights for a variant: the fallback URL of the original file (used when the
    Hub copy cannot be had), its class count and the preprocessing it was trained with (timm's
    pretrained_cfg for that tag)."""

    url: str
    num_classes: int = 1000
    preprocess: Preprocess = field(default_factory=lambda: Preprocess(crop_pct=0.875))


@dataclass(frozen=True)
class Variant:
    name: str
    arch: str
    args: dict[str, Any]
    preprocess: Preprocess = field(default_factory=Preprocess)
    description: str = ""
    # timm's name for the same architecture (its Hub repos are timm/<timm_name>.<tag>), None if timm has none.
    timm_name: Optional[str] = None
    # Published weights by timm's tag (the first is the default); each also names the original file.
    weights: dict[str, PretrainedWeights] = field(default_factory=dict)


_DEIT = "https://dl.fbaipublicfiles.com/deit/"
_JX = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/"
_MIIL = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-tresnet/"
_SMALL = Preprocess(img_size=32, crop_pct=1.0, interpolation="bicubic")
_HALF = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # Google's Mixer weights take [-1, 1] inputs
_MIIL_PRE = Preprocess(crop_pct=0.875, interpolation="bilinear", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _fb(stem: str, dino: bool = False) -> dict[str, PretrainedWeights]:
    """The deit repo's ResMLP files, under timm's tags."""
    out = {
        "fb_in1k": PretrainedWeights(_DEIT + f"{stem}_no_dist.pth"),
        "fb_distilled_in1k": PretrainedWeights(_DEIT + f"{stem}_dist.pth"),
    }
    if dino:  # self-supervised (DINO) trunk
        out["fb_dino"] = PretrainedWeights(_DEIT + f"{stem}_dino.pth")
    return out


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        # Paper Table 1 / Table 3. LayerScale init is depth dependent (0.1 for 12 blocks, 1e-5 for 24, 1e-6 beyond).
        Variant(
            "resmlp_s12",
            "resmlp",
            dict(patch_size=16, embed_dim=384, depth=12, layer_scale_init=0.1),
            description="ResMLP-S12 (paper Table 1)",
            timm_name="resmlp_12_224",
            weights=_fb("resmlp_12", dino=True),
        ),
        # Table 3's patch-size rows: S12 with 14x14 patches (16 x 16 = 256 tokens) or 8x8 (28 x 28 = 784) at 224 px.
        Variant(
            "resmlp_s12_p14",
            "resmlp",
            dict(patch_size=14, embed_dim=384, depth=12, layer_scale_init=0.1),
            description="ResMLP-S12 with 14x14 patches (paper Table 3)",
        ),
        Variant(
            "resmlp_s12_p8",
            "resmlp",
            dict(patch_size=8, embed_dim=384, depth=12, layer_scale_init=0.1),
            description="ResMLP-S12 with 8x8 patches (paper Table 3)",
        ),
        Variant(
            "resmlp_s24",
            "resmlp",
            dict(patch_size=16, embed_dim=384, depth=24, layer_scale_init=1e-5),
            description="ResMLP-S24 (paper Table 1)",
            timm_name="resmlp_24_224",
            weights=_fb("resmlp_24", dino=True),
        ),
        Variant(
            "resmlp_s36",
            "resmlp",
            dict(patch_size=16, embed_dim=384, depth=36, layer_scale_init=1e-6),
            description="ResMLP-S36 (paper Table 1)",
            timm_name="resmlp_36_224",
            weights=_fb("resmlp_36"),
        ),
        Variant(
            "resmlp_b24",
            "resmlp",
            dict(patch_size=16, embed_dim=768, depth=24, layer_scale_init=1e-6),
            description="ResMLP-B24 (paper Table 1)",
        ),
        Variant(
            "resmlp_b24_p8",
            "resmlp",
            dict(patch_size=8, embed_dim=768, depth=24, layer_scale_init=1e-6),
            description="ResMLP-B24/8 (paper Table 1)",
            timm_name="resmlp_big_24_224",
            weights={**_fb("resmlpB_24"), "fb_in22k_ft_in1k": PretrainedWeights(_DEIT + "resmlpB_24_22k.pth")},
        ),
        # MLP-Mixer baselines (Tolstikhin et al. 2021, Table 1).
        Variant(
            "mixer_s16",
            "mixer",
            dict(patch_size=16, embed_dim=512, depth=8),
            description="Mixer-S/16",
            timm_name="mixer_s16_224",
        ),
        Variant(
            "mixer_b16",
            "mixer",
            dict(patch_size=16, embed_dim=768, depth=12),
            description="Mixer-B/16",
            timm_name="mixer_b16_224",
            weights={
                "goog_in21k_ft_in1k": PretrainedWeights(
                    _JX + "jx_mixer_b16_224-76587d61.pth", preprocess=Preprocess(crop_pct=0.875, **_HALF)
                ),
                "goog_in21k": PretrainedWeights(
                    _JX + "jx_mixer_b16_224_in21k-617b3de2.pth", 21843, Preprocess(crop_pct=0.875, **_HALF)
                ),
                "miil_in21k_ft_in1k": PretrainedWeights(
                    _MIIL + "mixer_b16_224_miil-9229a591.pth", preprocess=_MIIL_PRE
                ),
                "miil_in21k": PretrainedWeights(_MIIL + "mixer_b16_224_miil_in21k-2a558a71.pth", 11221, _MIIL_PRE),
            },
        ),
        Variant(
            "mixer_l16",
            "mixer",
            dict(patch_size=16, embed_dim=1024, depth=24),
            description="Mixer-L/16",
            timm_name="mixer_l16_224",
            weights={
                "goog_in21k_ft_in1k": PretrainedWeights(
                    _JX + "jx_mixer_l16_224-92f9adc4.pth", preprocess=Preprocess(crop_pct=0.875, **_HALF)
                ),
                "goog_in21k": PretrainedWeights(
                    _JX + "jx_mixer_l16_224_in21k-846aa33c.pth", 21843, Preprocess(crop_pct=0.875, **_HALF)
                ),
            },
        ),
        # Small variants that train on a laptop CPU (ours, not in the papers).
        Variant(
            "resmlp_micro8",
            "resmlp",
            dict(img_size=8, patch_size=2, embed_dim=128, depth=4, layer_scale_init=0.1, num_classes=10),
            Preprocess(img_size=8, crop_pct=1.0),
            "8x8 inputs (sklearn digits): 16 patches of 2x2",
        ),
        Variant(
            "resmlp_micro16",
            "resmlp",
            dict(img_size=16, patch_size=2, embed_dim=128, depth=6, layer_scale_init=0.1, num_classes=10),
            Preprocess(img_size=16, crop_pct=1.0),
            "16x16 inputs: 64 patches of 2x2",
        ),
        Variant(
            "resmlp_tiny32",
            "resmlp",
            dict(img_size=32, patch_size=4, embed_dim=192, depth=8, layer_scale_init=0.1, num_classes=10),
            _SMALL,
            "32x32 inputs (CIFAR): 64 patches of 4x4, the CPU workhorse",
        ),
        Variant(
            "mixer_tiny32",
            "mixer",
            dict(img_size=32, patch_size=4, embed_dim=192, depth=8, num_classes=10),
            _SMALL,
            "32x32 inputs (CIFAR): Mixer baseline of similar cost to resmlp_tiny32",
        ),
        # Convnet teachers for distillation (He et al. 2016, CIFAR ResNets), trained with `resmlp train`.
        Variant(
            "resnet20_cifar",
            "resnet",
            dict(img_size=32, blocks_per_stage=3, num_classes=10),
            _SMALL,
            "CIFAR ResNet-20 (teacher)",
        ),
        Variant(
            "resnet56_cifar",
            "resnet",
            dict(img_size=32, blocks_per_stage=9, num_classes=10),
            _SMALL,
            "CIFAR ResNet-56 (teacher)",
        ),
        Variant(
            "convnet_cifar",
            "convnet",
            dict(img_size=32, width=2, num_classes=10),
            _SMALL,
            "fast-CIFAR conv net, 32/128/128 channels (teacher inside the hour)",
        ),
    ]
}


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
        return {
            "model_name": self.name,
            "model_args": dict(self.args),
            "preprocess": pre,
            "classes": list(self.classes) if self.classes is not None else None,
        }

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
        return cls(
            name,
            args,
            Preprocess(**{"img_size": args["img_size"], **pre}),
            tuple(classes) if classes is not None else None,
        )


def _sizes_as_tuples(args: dict[str, Any]) -> dict[str, Any]:
    if isinstance(args.get("img_size"), list):
        args["img_size"] = tuple(args["img_size"])
    return args


def create_model(name: str, *, features_only: bool = False, out_indices: Indices = None, **overrides: Any) -> nn.Module:
    """Build registered variant `name`; `overrides` replace constructor arguments such as `img_size`,
    `in_chans`, `num_classes` or `drop_path_rate` (the token count N follows from img_size / patch_size).

    The model carries `model.spec` (a ModelSpec: everything needed to rebuild it and feed it images).
    `features_only=True` returns it as a backbone (`FeatureMaps`): forward gives the (B, D, h, w) maps of
    the blocks in `out_indices` (None = every block, n = the last n, or a list of indices).
    (`resmlp.create_model` adds `pretrained=...` on top of this.) The sequence models of the paper's section
    3.6 (`resmlp_mt6`, `resmlp_mt12`, `transformer_mt_base`, the CPU sizes, `models.sequence`) are built by
    name too; they take their own arguments (`vocab_size`, `max_len`, ...).
    """
    if name in SEQ_VARIANTS:
        if features_only:
            raise ValueError(f"features_only: {name} is a sequence model, not an image backbone")
        return create_seq_model(name, **overrides)
    arch, args = model_args(name, **_sizes_as_tuples(dict(overrides)))
    model = ARCHITECTURES[arch](**args)
    model.spec = ModelSpec(name, args, dataclasses.replace(get_variant(name).preprocess, img_size=args["img_size"]))
    return as_backbone(model, out_indices) if features_only else model


def as_backbone(model: nn.Module, out_indices: Indices = None) -> FeatureMaps:
    """`model` (built by create_model, weights already loaded) as a FeatureMaps backbone."""
    if not isinstance(model, PatchClassifier):
        raise ValueError(f"features_only needs a ResMLP or Mixer model, not {type(model).__name__}")
    features = FeatureMaps(model, out_indices)
    features.spec = model.spec  # the model it was cut from (preprocessing for its inputs)
    return features
