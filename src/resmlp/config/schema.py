"""The config schema: one frozen dataclass per section (model, data, optim, distill, run), the choice lists
(`Literal` types) and the checks that span fields. Standard library only."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

# The choices of each choice field, checked on load (data.build, optim and the CLI take their lists from here).
Source = Literal["digits", "cifar10", "cifar100", "folder"]
OnBad = Literal["skip", "fail"]
Crop = Literal["rrc", "pad"]  # RandomResizedCrop, or pad-and-crop for tiny images
Interpolation = Literal["bilinear", "bicubic", "nearest"]  # the filters RandAugment's geometric ops accept
Normalization = Union[Literal["dataset", "imagenet"], list[float]]  # or explicit per-channel values
OptimizerName = Literal["lamb", "adamw", "sgd", "muon", "muon_sgd"]  # muon: Muon on block matrices + AdamW;
# muon_sgd: normalised Muon on a conv net's kernels + Nesterov SGD (optim.muon_lr)
Sched = Literal["cosine", "linear"]  # the lr's decay after warmup (the paper: cosine); linear = timm's poly, power 1
DistillKind = Literal["hard", "soft"]  # DeiT hard-label, or KL at temperature tau
# What the teacher sees while a progressive run trains the student on smaller batches (train.distill)
TeacherView = Literal["resize", "native", "full"]
# The teacher's forward pass during distillation: auto = bf16 when the student trains in bf16, else fp32.
TeacherPrecision = Literal["auto", "fp32", "bf16"]
TeacherRuntime = Literal["eager", "openvino"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # auto: bf16 where the hardware has it, else fp32
# Progressive resizing: "resize" shrinks the whole image (a patch covers more of the scene), "crop" takes a
# window of that size at full scale (a patch covers the same pixels; the grid covers less of the scene).
ProgressiveMode = Literal["resize", "crop"]
TokenMixingInit = Literal["default", "identity", "local"]  # models.init.TOKEN_MIXING_INITS
StemInit = Literal["default", "pca", "zca"]  # "default" or a whitening of training patches (models.whiten)
ConvInit = Literal["kaiming", "dirac"]  # the conv net's 3x3 convs (models.convnet.CONV_INITS)
TTA = Literal["none", "flip", "flip+shift1"]  # views averaged at evaluation (models.tta; --tta of the CLI)
# ResMLP's ablation options (paper Table 3 / Appendix A; models.resmlp and models.layers own the lists).
Norm = Literal["affine", "layernorm", "batchnorm"]
TokenMixing = Literal["linear", "mlp", "conv3x3", "conv3x3_depthwise", "conv3x3_separable", "none"]
Pooling = Literal["avg", "class_mlp"]
Activation = Literal["gelu", "silu", "hardswish", "relu"]
# Sequence models (paper section 3.6; models.sequence, train.text): what a run trains on text, how the
# decoder reads the source, and the subword model.
TextTask = Literal["translation", "language_model"]
Cross = Literal["attention", "linear"]
SubwordModel = Literal["unigram", "bpe"]


class ConfigError(ValueError):
    """A recipe or override that does not fit the config schema."""


@dataclass(frozen=True)
class ModelConfig:
    """A registered variant and the constructor arguments that replace its values (None keeps the
    variant's). Which fields a variant takes is checked when a run starts (`train.wiring.model_arguments`)."""

    name: str = "resmlp_micro8"
    drop_path_rate: float = 0.0
    img_size: Optional[Union[int, list[int]]] = None  # an int or [height, width]; also the data pipeline's size
    in_chans: Optional[int] = None
    embed_dim: Optional[int] = None
    depth: Optional[int] = None
    patch_size: Optional[int] = None  # ResMLP and Mixer
    mlp_ratio: Optional[float] = None  # ResMLP and Mixer
    mlp_hidden: Optional[list[int]] = None  # ResMLP: one hidden width per block (a compressed model)
    token_mlp_ratio: Optional[float] = None  # Mixer
    layer_scale_init: Optional[float] = None  # ResMLP
    norm: Optional[Norm] = None  # ResMLP ablations (paper Table 3): None keeps the variant's
    token_mixing: Optional[TokenMixing] = None
    pooling: Optional[Pooling] = None
    act: Optional[Activation] = None
    blocks_per_stage: Optional[int] = None  # ResNet
    width: Optional[int] = None  # ResNet and the conv net (channel multiplier)
    # The conv net's airbench levers (models.convnet): BatchNorm's running-statistics momentum (PyTorch's), a
    # BatchNorm scale that trains (false: fixed at 1, only the shift trains), identity-initialised convs.
    batchnorm_momentum: Optional[float] = None
    batchnorm_scale: Optional[bool] = None
    conv_init: Optional[ConvInit] = None
    # Sequence models (models.sequence): the longest sentence in tokens (A is max_len x max_len), the
    # decoder's depth when it differs from the encoder's, attention heads, dropout, and how the decoder reads
    # the source (cross: attention = the paper's, linear = a learned T x S map, no attention at all).
    max_len: Optional[int] = None
    decoder_depth: Optional[int] = None
    num_heads: Optional[int] = None
    dropout: Optional[float] = None
    cross: Optional[Cross] = None
    # Initialisation levers (ResMLP): A from a local kernel instead of noise; the stem from whitened patches.
    token_mixing_init: TokenMixingInit = "default"
    stem_init: StemInit = "default"
    stem_init_samples: int = 5000  # training images whose patches the whitening is fitted on
    stem_frozen: bool = False  # the stem's weights stay as initialised (a whitened stem; its bias still trains)
    # Weights to start from (what `resmlp train --finetune` sets): published weights by name (VARIANT.TAG, e.g.
    # resmlp_s12.fb_distilled_in1k, through the Hub cache), a run directory, checkpoint, packaged directory or
    # weights file. A head of another class count is re-initialised; a resumed run starts from its checkpoint.
    finetune: Optional[str] = None

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


_NOT_CONSTRUCTOR_ARGS = ("name", "token_mixing_init", "stem_init", "stem_init_samples", "stem_frozen", "finetune")


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
    # With cache: each image is resized as it is cached (shorter side to this many pixels, centre square), so a
    # folder of photos of mixed sizes fits one array; null: every image must already have one size.
    cache_size: Optional[int] = None
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
        if self.cache_size is not None and self.cache_size < 1:
            raise ConfigError(f"data.cache_size: expected pixels >= 1 or null, got {self.cache_size!r}")
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
    # The lr of normalisation layers' parameters (BatchNorm, LayerNorm, GroupNorm: optim.param_groups.NORM_LAYERS;
    # not Aff) is lr x this (airbench scales its BatchNorm shifts' lr by 64); 1: one lr for all. Not with "muon".
    norm_lr_scale: float = 1.0
    # name "muon_sgd": the lr of the conv kernels' normalised Muon steps (about the angle each step turns a kernel,
    # so not scaled with the batch); the rest (head, biases, BatchNorm shifts) take `lr` with Nesterov SGD.
    muon_lr: float = 0.24
    # Lookahead (Zhang et al. 2019; airbench's EMA form): every `lookahead_every` steps the weights move to an
    # average of themselves, decay 0.95^5 x (step / total)^3 (none early, strong late), and the last step
    # takes the average itself.
    lookahead: bool = False
    lookahead_every: int = 5

    def __post_init__(self) -> None:
        if self.norm_lr_scale <= 0:
            raise ConfigError(f"optim.norm_lr_scale: expected a factor > 0, got {self.norm_lr_scale!r}")
        if self.norm_lr_scale != 1.0 and self.name == "muon":
            raise ConfigError("optim.norm_lr_scale: not with optim.name=muon (its AdamW groups keep one lr)")
        if self.muon_lr <= 0:
            raise ConfigError(f"optim.muon_lr: expected a learning rate > 0, got {self.muon_lr!r}")
        if self.lookahead_every < 1:
            raise ConfigError(f"optim.lookahead_every: expected steps >= 1, got {self.lookahead_every!r}")


@dataclass(frozen=True)
class DistillConfig:
    teacher: Optional[str] = None  # a checkpoint/run dir of ours, a TorchScript file, or "none"
    teacher_model: Optional[str] = None  # registered name when `teacher` is a bare state dict
    kind: DistillKind = "hard"
    alpha: float = 0.5
    tau: float = 1.0
    teacher_precision: TeacherPrecision = "auto"
    # What runs the teacher's forward pass: PyTorch ("eager", autocast at teacher_precision), or OpenVINO at that
    # precision ("openvino", CPU only, the teacher compiled for its own input size: not with teacher_view=native;
    # needs resmlp[openvino]). benchmarks/bench_teacher.py --runtimes eager,openvino times both.
    teacher_runtime: TeacherRuntime = "eager"
    # The teacher's logits averaged over these views of each batch (models.tta): "flip" is the image and its
    # mirror, two teacher passes per step.
    teacher_tta: TTA = "none"
    # When the student's batch is smaller than the teacher's size (progressive resizing): "resize" it to the
    # teacher's size, give it as it is ("native": teachers that take any size, e.g. the conv nets), or give the
    # full-size augmented images the student's batch was cut or shrunk from ("full": needs data.batch_augment,
    # no Mixup/CutMix). docs/training.md has the measurements.
    teacher_view: TeacherView = "resize"
    # With no `teacher` given: train one first with this recipe (a name or YAML path) on the run's data and
    # validation split, into <run>/teacher, then distil from it. Its minutes count inside `budget.time_limit_min`
    # (the student gets what is left); `teacher_time_min` replaces the teacher recipe's own time limit.
    teacher_recipe: Optional[str] = None
    teacher_time_min: Optional[float] = None
    # Overrides of that recipe's keys, in `--set` syntax (e.g. ["data.batch_size=256"]), applied after what the
    # teacher takes from the run itself (its data, split, cache, workers and seed: train/teacher.py).
    teacher_set: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.teacher_runtime == "openvino" and self.teacher_view == "native":
            raise ConfigError(
                "distill.teacher_runtime=openvino compiles the teacher for its own input size, so it cannot take "
                "the student's batches as they are: set distill.teacher_view=resize or full, or teacher_runtime=eager"
            )
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
    # The training step through torch.compile: true, false, or "auto" (compiled where a C++ compiler / Triton is
    # found, else eager with one line saying so: device.resolve_compile). Evaluation runs the plain model.
    compile: Union[bool, Literal["auto"]] = False
    ema: bool = False
    ema_decay: float = 0.99996
    threads: Optional[int] = None  # torch intra-op threads per process (default: cores / processes)
    # On CPU with glibc: keep freed memory in the process, so each step's activations are not page-faulted
    # in afresh (+8-10 % images/s on a 2-core EPYC; device.retain_freed_cpu_memory). The process keeps its peak.
    retain_cpu_memory: bool = True
    eval_every: int = 1
    # Also write a mid-epoch checkpoint every this many minutes (for jobs killed without a warning signal).
    checkpoint_every_min: Optional[float] = None
    tensorboard: bool = True  # used when the tensorboard package is installed
    progress: bool = True


@dataclass(frozen=True)
class BudgetConfig:
    """A wall-clock budget for the run (train/budget.py)."""

    time_limit_min: Optional[float] = None  # stop after the epoch that crosses this wall-clock budget
    # With a time limit: after the first epoch, shorten optim.epochs (and the lr schedule) to what fits;
    # with progressive.sizes, each epoch priced by a forward/backward pass timed at its size, switches moved along;
    # re-fitted after every epoch (shorter if the epochs run slower, longer up to optim.epochs if they run
    # faster).
    fit_to_time_limit: bool = False


@dataclass(frozen=True)
class ProgressiveConfig:
    """Progressive resizing (train/progressive.py): train the first epochs on smaller images."""

    # [[epoch, size], ...] or [[epoch, height, width], ...]: from that epoch (0-based) on train at that size; the
    # token mixing and its optimizer moments are resampled at each switch. Before the first entry,
    # model.img_size. E.g. [[0, 16], [4, 24], [8, 32]].
    sizes: Optional[list[list[int]]] = None
    mode: ProgressiveMode = "resize"

    def __post_init__(self) -> None:
        sizes = self.sizes or []
        for i, entry in enumerate(sizes):
            if len(entry) not in (2, 3) or entry[0] < 0 or min(entry[1:]) < 1:
                raise ConfigError(
                    f"progressive.sizes[{i}]: expected [epoch, size] or [epoch, height, width] "
                    f"with epoch >= 0 and sizes >= 1, got {entry!r}"
                )
        epochs = [e[0] for e in sizes]
        if epochs != sorted(set(epochs)):
            raise ConfigError(f"progressive.sizes: the epochs must increase, got {epochs}")


@dataclass(frozen=True)
class TextConfig:
    """Sequence tasks (paper section 3.6, train/text.py): with `task` set, the run trains a translator or a
    language model on a folder of sentence files (train.<lang>, val.<lang> optional: data.val_split of train
    carved off when absent; data.path is the folder) instead of an image classifier."""

    task: Optional[TextTask] = None  # None: an image run
    src_lang: str = "en"
    tgt_lang: str = "de"  # a language model's language
    vocab_size: int = 8000  # the joint subword vocabulary, trained on the training split (tokenizer.model)
    subword_model: SubwordModel = "unigram"
    max_tokens: int = 4096  # tokens per batch (sentences x the longest of the batch, padding included)
    beam: int = 4  # decoding of `resmlp translate` / `resmlp eval --src`; validation BLEU is greedy
    len_penalty: float = 1.0
    # Greedy BLEU and chrF on the validation split every this many epochs (0: never; the loss always).
    bleu_every: int = 1

    def __post_init__(self) -> None:
        if self.src_lang == self.tgt_lang and self.task == "translation":
            raise ConfigError(f"text.src_lang and text.tgt_lang are both {self.src_lang!r}: translate between two")
        for key in ("vocab_size", "max_tokens", "beam"):
            if getattr(self, key) < 1:
                raise ConfigError(f"text.{key}: expected an integer >= 1, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    run: RunConfig = field(default_factory=RunConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)
    text: TextConfig = field(default_factory=TextConfig)

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
