"""Typed run configuration: frozen dataclasses, loaded from YAML recipes with `--set key=value` overrides.

One name per idea: dataclass field = YAML key = CLI override = metric key (`optim.lr`, `data.batch_size`).
Unknown keys, values of the wrong type and choices outside a `Literal` are errors that name the key.
A recipe may start from another (`base: imagenet_s12`) and list only what differs.
This module sits below data/, optim/ and train/: it imports only the standard library and yaml.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import yaml

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"

# The choices of each choice field, checked on load (data.build and optim take their lists from here).
Source = Literal["digits", "cifar10", "cifar100", "folder"]
OnBad = Literal["skip", "fail"]
Crop = Literal["rrc", "pad"]  # RandomResizedCrop, or pad-and-crop for tiny images
Interpolation = Literal["bilinear", "bicubic", "nearest"]  # the filters RandAugment's geometric ops accept
Normalization = Union[Literal["dataset", "imagenet"], list[float]]  # or explicit per-channel values
OptimizerName = Literal["lamb", "adamw", "sgd", "muon"]  # muon: Muon on block matrices + AdamW
Sched = Literal["cosine", "linear"]  # the lr's decay after warmup (the paper: cosine); linear = timm's poly, power 1
DistillKind = Literal["hard", "soft"]  # DeiT hard-label, or KL at temperature tau
# What the teacher sees while a progressive run trains the student on smaller batches (train.distill)
TeacherView = Literal["resize", "native", "full"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # auto: bf16 where the hardware has it, else fp32
# Progressive resizing: "resize" shrinks the whole image (a patch covers more of the scene), "crop" takes a
# window of that size at full scale (a patch covers the same pixels; the grid covers less of the scene).
ProgressiveMode = Literal["resize", "crop"]
TokenMixingInit = Literal["default", "identity", "local"]  # models.init.TOKEN_MIXING_INITS
StemInit = Literal["default", "pca", "zca"]  # "default" or a whitening of training patches (models.whiten)
TTA = Literal["none", "flip", "flip+shift1"]  # views averaged at evaluation (models.tta)
# ResMLP's ablation options (paper Table 3 / Appendix A; models.resmlp and models.layers own the lists).
Norm = Literal["affine", "layernorm", "batchnorm"]
TokenMixing = Literal["linear", "mlp", "conv3x3", "conv3x3_depthwise", "conv3x3_separable", "none"]
Pooling = Literal["avg", "class_mlp"]
Activation = Literal["gelu", "silu", "hardswish", "relu"]


class ConfigError(ValueError):
    """A recipe or override that does not fit the config schema."""


@dataclass(frozen=True)
class ModelConfig:
    """A registered variant and the constructor arguments that replace its values (None keeps the
    variant's). Which fields a variant takes is checked when a run starts (`train.run.model_arguments`)."""

    name: str = "resmlp_micro8"
    drop_path_rate: float = 0.0
    img_size: Optional[Union[int, list[int]]] = None  # an int or [height, width]; also the data pipeline's size
    in_chans: Optional[int] = None
    embed_dim: Optional[int] = None
    depth: Optional[int] = None
    patch_size: Optional[int] = None  # ResMLP and Mixer
    mlp_ratio: Optional[float] = None  # ResMLP and Mixer
    token_mlp_ratio: Optional[float] = None  # Mixer
    layer_scale_init: Optional[float] = None  # ResMLP
    norm: Optional[Norm] = None  # ResMLP ablations (paper Table 3): None keeps the variant's
    token_mixing: Optional[TokenMixing] = None
    pooling: Optional[Pooling] = None
    act: Optional[Activation] = None
    blocks_per_stage: Optional[int] = None  # ResNet
    width: Optional[int] = None  # ResNet and the conv net (channel multiplier)
    # Initialisation levers (ResMLP): A from a local kernel instead of noise; the stem from whitened patches.
    token_mixing_init: TokenMixingInit = "default"
    stem_init: StemInit = "default"
    stem_init_samples: int = 5000  # training images whose patches the whitening is fitted on

    def __post_init__(self) -> None:
        if isinstance(self.img_size, list) and (len(self.img_size) != 2 or min(self.img_size) < 1):
            raise ConfigError(f"model.img_size: expected an int or [height, width], got {self.img_size!r}")

    def overrides(self) -> dict[str, Any]:
        """The constructor arguments this config sets: every such field that is not None."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in _NOT_CONSTRUCTOR_ARGS and getattr(self, f.name) is not None
        }


_NOT_CONSTRUCTOR_ARGS = ("name", "token_mixing_init", "stem_init", "stem_init_samples")


@dataclass(frozen=True)
class DataConfig:
    # "digits" (bundled with scikit-learn), "cifar10"/"cifar100" (official python archive at `path`, or
    # downloaded into `path` when online), or "folder" (root/<class>/*.jpg at `path`).
    source: Source = "digits"
    path: Optional[str] = None
    val_path: Optional[str] = None  # a separate validation folder; else `val_split` is carved from train
    val_split: float = 0.1
    split_seed: int = 0
    cache: bool = False  # decode every image once into memory (small images)
    on_bad: OnBad = "skip"  # corrupt/non-image files: "skip" (reported and counted) or "fail"
    # Images above this many pixels are refused from their header (decompression bombs); null: no limit.
    max_image_pixels: Optional[int] = 100_000_000
    workers: int = 2
    batch_size: int = 128  # per process
    eval_batch_size: int = 256
    # Normalisation: "dataset" (per-channel stats of the training images), "imagenet", or explicit lists.
    mean: Normalization = "dataset"
    std: Normalization = "dataset"
    # Augmentation (paper section 3.1, DeiT recipe).
    crop: Crop = "rrc"
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    padding: int = 4
    hflip: float = 0.5
    # true: the flip alternates instead (a seeded half of the images flipped in even epochs, the other half in
    # odd ones: each image is seen both ways every two epochs); it replaces the random flip, hflip must be 0.5
    hflip_alternate: bool = False
    auto_augment: Optional[str] = "rand-m9-mstd0.5-inc1"
    re_prob: float = 0.25
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    mixup_prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1
    repeated_aug: bool = True
    num_repeats: int = 3
    crop_pct: float = 0.9
    interpolation: Interpolation = "bicubic"
    # Pad-crop, flip and normalisation on whole uint8 batches on the training device (data.batch_augment)
    # instead of per image in the loader: the same draws, a fraction of the CPU time. crop=pad only.
    batch_augment: bool = False

    def __post_init__(self) -> None:
        if self.hflip_alternate and self.hflip != 0.5:
            raise ConfigError(
                f"data.hflip_alternate flips half of the images in every epoch, replacing the random "
                f"flip: data.hflip must be 0.5, got {self.hflip}"
            )
        if not self.batch_augment:
            return
        if self.crop != "pad":
            raise ConfigError(
                f"data.batch_augment: batches are augmented with crop=pad only, got data.crop="
                f"{self.crop!r}; set data.crop=pad or data.batch_augment=false"
            )
        for key, value, off in (("auto_augment", self.auto_augment, "null"), ("re_prob", self.re_prob, "0")):
            if value:
                raise ConfigError(
                    f"data.batch_augment: data.{key}={value!r} runs per image; set data.{key}={off} "
                    f"or data.batch_augment=false"
                )

    @property
    def random_hflip(self) -> float:
        """The probability of the random per-image flip (0 when the flip alternates instead)."""
        return 0.0 if self.hflip_alternate else self.hflip


@dataclass(frozen=True)
class OptimConfig:
    name: OptimizerName = "lamb"
    lr: float = 5e-3  # the learning rate for a global batch of `lr_batch`; scaled linearly (DeiT rule)
    lr_batch: int = 512
    weight_decay: float = 0.2
    epochs: int = 100
    warmup_epochs: float = 5
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    sched: Sched = "cosine"  # decay from lr to min_lr after the warmup
    max_grad_norm: Optional[float] = 1.0
    momentum: float = 0.9
    accum_steps: int = 1
    muon_token_mixing: bool = True  # name "muon": Muon also on the cross-patch A (false: A goes to AdamW)


@dataclass(frozen=True)
class DistillConfig:
    teacher: Optional[str] = None  # a checkpoint/run dir of ours, a TorchScript file, or "none"
    teacher_model: Optional[str] = None  # registered name when `teacher` is a bare state dict
    kind: DistillKind = "hard"
    alpha: float = 0.5
    tau: float = 1.0
    teacher_bf16: bool = False
    # When the student's batch is smaller than the teacher's size (progressive resizing): "resize" it to the
    # teacher's size, give it as it is ("native": teachers that take any size, e.g. the conv nets), or give the
    # full-size augmented images the student's batch was cut or shrunk from ("full": needs data.batch_augment,
    # no Mixup/CutMix). docs/training.md has the measurements.
    teacher_view: TeacherView = "resize"
    # With no `teacher` given: train one first with this recipe (a name or YAML path) on the run's data and
    # validation split, into <run>/teacher, then distil from it. Its minutes count inside `run.time_limit_min`
    # (the student gets what is left); `teacher_time_min` replaces the teacher recipe's own time limit.
    teacher_recipe: Optional[str] = None
    teacher_time_min: Optional[float] = None

    def __post_init__(self) -> None:
        if self.teacher_time_min is not None and not self.teacher_time_min > 0:
            raise ConfigError(f"distill.teacher_time_min: expected minutes > 0, got {self.teacher_time_min!r}")

    @property
    def trains_teacher(self) -> bool:
        """Whether the run trains its own teacher first (`teacher_recipe` set, no `teacher` given)."""
        return self.teacher in (None, "") and bool(self.teacher_recipe)

    @property
    def active(self) -> bool:
        """Whether the run distils: a teacher is set or will be trained (`teacher: none` turns off a recipe's
        distillation, its teacher_recipe too)."""
        return self.teacher not in (None, "", "none") or self.trains_teacher


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    precision: Precision = "fp32"  # bf16: autocast on CPU and CUDA; fp16: CUDA with loss scaling; auto
    tta: TTA = "none"  # test-time augmentation of the validation pass (mean logits over the views)
    # One more evaluation after the last planned epoch with these views (val_top1_tta in its row and
    # final_val_top1_tta in summary.json; val_top1 stays the plain curve); a time-budget fit reserves its time.
    final_tta: TTA = "none"
    compile: bool = False
    ema: bool = False
    ema_decay: float = 0.99996
    threads: Optional[int] = None  # torch intra-op threads per process (default: cores / processes)
    # On CPU with glibc: keep freed memory in the process, so each step's activations are not page-faulted
    # in afresh (+8-10 % images/s on a 2-core EPYC; device.retain_freed_cpu_memory). The process keeps its peak.
    retain_cpu_memory: bool = True
    eval_every: int = 1
    time_limit_min: Optional[float] = None  # stop after the epoch that crosses this wall-clock budget
    # With a time limit: after the first epoch, shorten optim.epochs (and the lr schedule) to what fits;
    # with progressive_sizes, each epoch priced by a forward/backward pass timed at its size, switches moved along;
    # re-fitted after every epoch (shorter if the epochs run slower, longer up to optim.epochs if they run
    # faster; train/budget.py).
    fit_to_time_limit: bool = False
    # Also write a mid-epoch checkpoint every this many minutes (for jobs killed without a warning signal).
    checkpoint_every_min: Optional[float] = None
    # Progressive resizing (train.progressive): [[epoch, size], ...] or [[epoch, height, width], ...], from
    # that epoch (0-based) on train at that size; the token mixing and its optimizer moments are resampled
    # at each switch. Before the first entry, model.img_size. E.g. [[0, 16], [4, 24], [8, 32]].
    progressive_sizes: Optional[list[list[int]]] = None
    progressive_mode: ProgressiveMode = "resize"
    tensorboard: bool = True  # used when the tensorboard package is installed
    progress: bool = True

    def __post_init__(self) -> None:
        sizes = self.progressive_sizes or []
        for i, entry in enumerate(sizes):
            if len(entry) not in (2, 3) or entry[0] < 0 or min(entry[1:]) < 1:
                raise ConfigError(
                    f"run.progressive_sizes[{i}]: expected [epoch, size] or [epoch, height, width] "
                    f"with epoch >= 0 and sizes >= 1, got {entry!r}"
                )
        epochs = [e[0] for e in sizes]
        if epochs != sorted(set(epochs)):
            raise ConfigError(f"run.progressive_sizes: the epochs must increase, got {epochs}")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        d = self.data
        if not self.distill.active or self.distill.teacher_view != "full":
            return
        if not d.batch_augment:
            raise ConfigError(
                "distill.teacher_view=full: the full-size views come from batch augmentation; "
                "set data.batch_augment=true or another distill.teacher_view"
            )
        if d.mixup_alpha or d.cutmix_alpha:
            raise ConfigError(
                "distill.teacher_view=full: Mixup/CutMix mix the student's batch only; set "
                "data.mixup_alpha=0 and data.cutmix_alpha=0 or another distill.teacher_view"
            )


def _short(value: Any, limit: int = 60) -> str:
    """repr(value) cut to one readable length (a fuzzed or pasted value can be megabytes long)."""
    if isinstance(value, int) and abs(value) >= 10**30:  # repr of a huge int can itself fail (> 4300 digits)
        return f"an integer of about {max(1, int(value.bit_length() * 0.30103))} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert `value` to annotation `tp`, naming `key` in the error."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        # The most specific complaint wins: "data.mean[1]: expected a number" over "data.mean: expected one of".
        raise ConfigError(max(errors, key=lambda e: len(e.split(":")[0])) if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, str) and value in choices:
            return value
        raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {_short(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {_short(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= 2**63:
                raise ConfigError(f"{key}: {_short(value)} is too large (expected an integer below 2**63)")
            return value
        raise ConfigError(f"{key}: expected an integer, got {_short(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{key}: expected a finite number, got {_short(value)}")
            return number
        raise ConfigError(f"{key}: expected a number, got {_short(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {_short(value)}")
    if tp is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {_short(value)}")
        item = typing.get_args(tp)
        return [_coerce(v, item[0], f"{key}[{i}]") for i, v in enumerate(value)] if item else list(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type, values: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names, key=str)  # YAML keys may be numbers, null, ...
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}; valid keys in {prefix.rstrip('.') or 'the config'}: "
            f"{', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}")
            kwargs[name] = _build(tp, value, key + ".")
        else:
            kwargs[name] = _coerce(value, tp, key)
    return cls(**kwargs)


def config_from_dict(values: dict) -> TrainConfig:
    """Build and check a config from nested mappings (a recipe, a run's config.yaml or checkpoint)."""
    return _build(TrainConfig, _migrate(values or {}), "")


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def _migrate(values: dict) -> dict:
    """Rename the keys of older run directories and recipes: `data.img_size` -> `model.img_size`, and
    `model.overrides: {...}` -> the model fields (whose names are then checked like any other key)."""
    model, data = values.get("model"), values.get("data")
    if model is not None and not isinstance(model, dict):
        return values  # _build names the problem
    legacy_model = isinstance(model, dict) and "overrides" in model
    legacy_data = isinstance(data, dict) and "img_size" in data
    if not (legacy_model or legacy_data):
        return values
    model = dict(model) if isinstance(model, dict) else {}
    moved = model.pop("overrides", None) or {}
    if not isinstance(moved, dict):
        raise ConfigError(f"model.overrides: expected a mapping of model fields, got {moved!r}")
    model.update(moved)
    if legacy_data:
        data = dict(data)
        img_size = data.pop("img_size")
        if img_size is not None:  # it took precedence over the model's img_size before the move
            model["img_size"] = img_size
    return {**values, "model": model, **({"data": data} if legacy_data else {})}


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# An override is a `--set` string ("optim.lr=1e-3", its value parsed as YAML) or a typed (key, value) pair
# (what dedicated CLI flags such as --data give: the value reaches the config as it is, never re-parsed).
Override = Union[str, tuple[str, Any]]


def override_dict(key: str, value: Any) -> dict:
    """('data.path', '/my data #1') -> {'data': {'path': '/my data #1'}}: the value is taken as given."""
    out: Any = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def parse_override(item: Override) -> dict:
    """'optim.lr=1e-3' -> {'optim': {'lr': 0.001}} (the value is parsed as YAML: numbers, lists, null);
    a (key, value) pair is taken as typed."""
    if isinstance(item, tuple):
        return override_dict(*item)
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-3)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.load(raw, Loader=_NoAliasLoader) if raw.strip() else None
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise ConfigError(
            f"override {_short(item)}: the value is not valid YAML ({_first_line(e)[:120]}); "
            "quote strings that hold ': ' or start with special characters"
        ) from None
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
    return override_dict(key, value)


def _looks_like_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def resolve_recipe(recipe: str, relative_to: Path | None = None) -> Path:
    """A recipe name (`digits`, `cifar10_cpu`, ...) from the bundled recipes, or a YAML file path
    (relative to `relative_to` when given: the folder of the recipe that names it as its `base`)."""
    path = Path(recipe)
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        return path
    bundled = RECIPES_DIR / f"{recipe}.yaml"
    if not bundled.is_file():
        names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown recipe {recipe!r}; bundled recipes: {', '.join(names)} (or give a YAML file)")
    return bundled


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load without anchors/aliases: a recipe has no use for them, and nested aliases expand to
    exponentially many values ("billion laughs") once the config is walked."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a config", event.start_mark
            )
        return super().compose_node(parent, index)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        values = yaml.load(text, Loader=_NoAliasLoader)
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{path}: not valid YAML ({_first_line(e)})") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{path}: holds a value that cannot be read ({_first_line(e)[:120]})") from None
    if values is None:
        raise ConfigError(
            f"{path}: the file is empty; a recipe is a mapping of sections (model, data, optim, distill, run)"
        )
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, optim, distill, run)")
    try:
        return _fix_floats(values)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None


def _fix_floats(values: Any) -> Any:
    if isinstance(values, dict):
        return {k: _fix_floats(v) for k, v in values.items()}
    if isinstance(values, list):
        return [_fix_floats(v) for v in values]
    if isinstance(values, str) and _looks_like_float(values) and any(c in values for c in "eE"):
        return float(values)
    return values


def load_recipe(recipe: str) -> dict:
    """The values of a recipe merged over those of its `base:` recipe (and its base's, ...). Each file is
    checked on its own, so an error names the file that holds the bad key."""
    return _load_recipe(resolve_recipe(recipe), ())


def _load_recipe(path: Path, chain: tuple[Path, ...]) -> dict:
    chain = (*chain, path.resolve())
    if chain[-1] in chain[:-1]:
        raise ConfigError(f"recipe base cycle: {' -> '.join(map(str, chain))}")
    values = load_yaml(path)
    base = values.pop("base", None)
    try:
        values = _migrate(values)
        config_from_dict(values)
        if base is not None and not isinstance(base, str):
            raise ConfigError(f"base: expected a recipe name or a YAML path, got {base!r}")
        base_path = resolve_recipe(base, relative_to=path.parent) if base is not None else None
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return values if base_path is None else _deep_merge(_load_recipe(base_path, chain), values)


def load_config(recipe: str | None = None, overrides: Sequence[Override] = (), base: dict | None = None) -> TrainConfig:
    """Defaults <- `base` (e.g. a resumed run's config) <- recipe YAML <- overrides (`--set` strings or
    typed (key, value) pairs, see `parse_override`)."""
    values = _migrate(dict(base or {}))
    if recipe:
        values = _deep_merge(values, load_recipe(recipe))
    for item in overrides:
        values = _deep_merge(values, _migrate(parse_override(item)))
    return config_from_dict(values)


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
