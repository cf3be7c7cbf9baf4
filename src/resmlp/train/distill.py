"""Knowledge distillation from a teacher (DeiT's procedure; the objective is in `losses`).

The teacher sees the student's exact augmented, mixed batch, in eval mode and without gradients; if it
expects another resolution or normalisation the batch is converted on the fly. While progressive resizing
trains the student on smaller batches, `distill.teacher_view` says what the teacher sees instead: the batch
resized to its size, the batch as it is, or the full-size images the student's windows were cut from (the
engine hands those in).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, DistillConfig
from ..device import place
from ..files import file_sha256
from ..loading import load_model
from ..models import Preprocess
from ..models.layers import to_pair
from ..models.tta import with_tta
from ..weights import WeightsError
from .engine import autocast
from .losses import DISTILL_KINDS, distillation_loss, soft_target_cross_entropy


def load_teacher(source: str, *, model_name: Optional[str] = None) -> tuple[nn.Module, Optional[Preprocess], dict]:
    """A teacher from (a) one of our checkpoints or run directories, (b) a TorchScript file, or (c) a bare
    state dict of a registered model (`model_name`). Returns (module, its preprocessing or None, identity)."""
    path = Path(source)
    if not path.exists():
        raise ValueError(
            f"distill.teacher: {source} does not exist (expected a checkpoint, run directory or TorchScript file)"
        )
    identity: dict[str, Any] = {"source": str(path)}
    with torch.random.fork_rng(devices=[]):  # building the teacher must not shift the student's random stream
        teacher, pre = _build_teacher(path, model_name, identity)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, pre, identity


def _build_teacher(path: Path, model_name: Optional[str], identity: dict) -> tuple[nn.Module, Optional[Preprocess]]:
    if _is_torchscript(path):  # checked first: torch.load would otherwise hand it to torch.jit.load itself
        identity.update(path=str(path), sha256=file_sha256(path), kind="torchscript")
        return torch.jit.load(str(path), map_location="cpu"), None  # preprocessing unknown: the student's batch as is
    try:
        loaded = load_model(path, model_name=model_name)
    except WeightsError as e:
        raise ValueError(
            f"distill.teacher: {e} (expected one of our checkpoints or run directories, a "
            "TorchScript file, or a bare state dict with distill.teacher_model=NAME)"
        ) from None
    identity.update(
        path=str(loaded.path),
        sha256=file_sha256(loaded.path),
        model=loaded.spec.name,
        kind="checkpoint" if loaded.checkpoint else "weights",
    )
    if loaded.checkpoint:
        identity["val_top1"] = loaded.checkpoint.get("best_val_top1")
    return loaded.model, loaded.spec.preprocess


def _is_torchscript(path: Path) -> bool:
    import zipfile  # noqa: PLC0415

    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


class BatchAdapter(nn.Module):
    """Re-normalise the student's batch into what the teacher expects and, with `resize`, bring it to the
    teacher's size (without: a teacher that takes any size sees the batch's own)."""

    def __init__(self, student: Preprocess, teacher: Optional[Preprocess], *, resize: bool = True) -> None:
        super().__init__()
        teacher = teacher or student
        self.size = to_pair(teacher.img_size) if resize else None  # a progressive run's batches change size
        self.resize = resize and teacher.img_size != student.img_size
        s_mean, s_std = torch.tensor(student.mean), torch.tensor(student.std)
        t_mean, t_std = torch.tensor(teacher.mean), torch.tensor(teacher.std)
        # x_t = (x_s * s_std + s_mean - t_mean) / t_std = x_s * scale + shift
        self.register_buffer("scale", (s_std / t_std).view(1, 3, 1, 1))
        self.register_buffer("shift", ((s_mean - t_mean) / t_std).view(1, 3, 1, 1))
        self.identity = (
            not self.resize and torch.allclose(self.scale, torch.ones(1)) and torch.allclose(self.shift, torch.zeros(1))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bicubic", align_corners=False)
        return x if self.identity else x * self.scale + self.shift


class DistillationCriterion:
    """(images, student logits, soft targets) -> loss, running the teacher on the same images."""

    def __init__(
        self,
        teacher: nn.Module,
        adapter: BatchAdapter,
        *,
        kind: str,
        alpha: float,
        tau: float,
        device: torch.device,
        precision: str = "fp32",
        identity: Optional[dict] = None,
    ) -> None:
        if kind not in DISTILL_KINDS:
            raise ValueError(f"distill.kind={kind!r}: expected one of {', '.join(DISTILL_KINDS)}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"distill.alpha={alpha}: expected a value in [0, 1]")
        if tau <= 0:
            raise ValueError(f"distill.tau={tau}: expected a positive temperature")
        self.teacher = place(teacher, device).eval()
        self.adapter = adapter.to(device)
        self.kind, self.alpha, self.tau = kind, alpha, tau
        self.device = device
        self.precision = precision  # of the teacher's forward pass: "fp32" or "bf16" (autocast)
        self.identity = identity or {}
        self.teacher_time_s = 0.0

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        self.teacher.eval()  # never updated: eval-mode statistics, no gradients
        with autocast(self.device, self.precision):
            out = self.teacher(self.adapter(images)).float()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.teacher_time_s += time.perf_counter() - t0
        return out

    def pop_teacher_time(self) -> float:
        t, self.teacher_time_s = self.teacher_time_s, 0.0
        return t

    def __call__(self, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.alpha == 0:
            return soft_target_cross_entropy(logits, targets)
        return distillation_loss(
            logits, targets, self.teacher_logits(images.detach()), kind=self.kind, alpha=self.alpha, tau=self.tau
        )


def build_distillation(
    cfg: DistillConfig,
    *,
    device: torch.device,
    student_preprocess: Preprocess,
    classes: Sequence[str],
    batch_sizes: Sequence[tuple[int, int]] = (),
    student_precision: str = "fp32",
) -> DistillationCriterion:
    """The distillation loss of `cfg`; `batch_sizes`: the sizes of the student's batches other than its own
    (progressive resizing), which a `native` teacher view hands the teacher as they are; `student_precision`:
    the student's resolved precision, which `distill.teacher_precision: auto` follows where it is bf16."""
    teacher, pre, identity = load_teacher(cfg.teacher, model_name=cfg.teacher_model)
    t_classes = teacher.spec.classes if hasattr(teacher, "spec") else None  # TorchScript teachers carry none
    if t_classes is not None and list(t_classes) != list(classes):
        raise ValueError(
            f"distill.teacher {cfg.teacher}: its classes {list(t_classes)[:5]}... differ from the "
            f"data's {list(classes)[:5]}...; the teacher must be trained on the same label set"
        )
    if cfg.teacher_view == "native":
        check_native_sizes(teacher, batch_sizes, cfg.teacher)
    adapter = BatchAdapter(student_preprocess, pre, resize=cfg.teacher_view == "resize")
    precision = teacher_precision(cfg.teacher_precision, student_precision)
    if cfg.teacher_runtime == "openvino":
        teacher, precision = openvino_teacher(teacher, precision, device, cfg.teacher), "fp32"  # no autocast
    return DistillationCriterion(
        with_tta(teacher, cfg.teacher_tta),
        adapter,
        kind=cfg.kind,
        alpha=cfg.alpha,
        tau=cfg.tau,
        device=device,
        precision=precision,
        identity=identity,
    )


def openvino_teacher(teacher: nn.Module, precision: str, device: torch.device, source: str) -> nn.Module:
    """`teacher` compiled by OpenVINO for the CPU at `precision` (fp32 or bf16): float32 images in, float32
    logits out, like the PyTorch teacher it replaces (`distill.teacher_runtime=openvino`)."""
    if device.type != "cpu":
        raise ConfigError(f"distill.teacher_runtime=openvino runs the teacher on the CPU; this run is on {device}")
    if isinstance(teacher, torch.jit.ScriptModule):
        raise ConfigError(f"distill.teacher_runtime=openvino: the teacher {source} is TorchScript; use eager")
    from ..deploy.openvino import openvino_model  # noqa: PLC0415 - OpenVINO only when asked for

    return openvino_model(teacher, precision)


def teacher_precision(setting: str, student_precision: str) -> str:
    """`distill.teacher_precision` resolved: auto runs the teacher in bf16 when the student trains in bf16 (the
    hardware multiplies bf16 natively there), else in fp32."""
    if setting == "auto":
        return "bf16" if student_precision == "bf16" else "fp32"
    return setting


@torch.no_grad()
def check_native_sizes(teacher: nn.Module, sizes: Sequence[tuple[int, int]], source: str) -> None:
    """Refuse, before training, a teacher that cannot take the student's batches as they are (a ResMLP's token
    mixing is made for one patch grid): one image of each size through it."""
    teacher.eval()
    device = next(teacher.parameters(), torch.zeros(0)).device
    for h, w in sizes:
        try:
            teacher(torch.zeros(1, 3, h, w, device=device))
        except (RuntimeError, ValueError, AssertionError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise ConfigError(
                f"distill.teacher_view=native: the teacher {source} cannot take the student's {h}x{w} "
                f"batches ({first}); use distill.teacher_view=resize or full"
            ) from None
