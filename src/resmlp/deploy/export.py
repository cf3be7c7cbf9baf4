"""Ship a model: ONNX (dynamic batch), TorchScript, or a packaged directory for `from_pretrained`.

Packaged directory (the layout Hugging Face Hub users expect):
    config.json          format, architecture, model_name, model_args, preprocess, classes
    model.safetensors    the unfused weights in timm layout (so the model can also be fine-tuned)
ONNX and TorchScript files hold the fused model (resmlp.fuse) and carry the same config as metadata
(ONNX metadata_props["resmlp.config"], TorchScript extra file "config.json").
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import preprocess_from_record
from ..models import Preprocess, create_model
from ..models.registry import VARIANTS, get_variant
from ..weights import WeightsError, load_weights
from .fuse import fusable, fuse
from .infer_arch import infer_architecture, input_shape
from .optimize import _onnxruntime, _quiet

PRETRAINED_FORMAT = "resmlp-pretrained"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
EXPORT_FORMATS = ("onnx", "torchscript", "safetensors")


class ExportError(ValueError):
    """An export that does not reproduce the eager model (or cannot be written)."""


def model_config(model: nn.Module, *, preprocess: Preprocess | None = None,
                 classes: list[str] | None = None) -> dict[str, Any]:
    """Everything but the weights needed to rebuild `model` and feed it images."""
    name = getattr(model, "model_name", None)
    args = dict(getattr(model, "model_args", {}) or {})
    if name not in VARIANTS:  # a model built by hand: describe it by its shapes
        name, args = infer_architecture(model.state_dict())
    pre = preprocess or getattr(model, "preprocess", None) or get_variant(name).preprocess
    classes = classes if classes is not None else getattr(model, "classes", None)
    num_classes = getattr(model, "num_classes", None)
    if classes is None and num_classes:
        classes = [f"class_{i}" for i in range(num_classes)]
    return {
        "format": PRETRAINED_FORMAT,
        "format_version": 1,
        "architectures": [type(model).__name__],
        "arch": get_variant(name).arch,
        "model_name": name,
        "model_args": args,
        "num_classes": num_classes,
        "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(pre).items()},
        "classes": list(classes) if classes is not None else None,
    }


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def save_pretrained(model: nn.Module, directory: str | os.PathLike, *, preprocess: Preprocess | None = None,
                    classes: list[str] | None = None) -> Path:
    """Write `directory`/config.json and `directory`/model.safetensors; returns the directory."""
    from safetensors.torch import save_file

    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory; a packaged model is a folder")
    out.mkdir(parents=True, exist_ok=True)
    config = model_config(model, preprocess=preprocess, classes=classes)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _write_atomic(out / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    # config last: a directory with a config always has its weights
    _write_atomic(out / CONFIG_NAME, lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    return out


def from_pretrained(directory: str | os.PathLike) -> nn.Module:
    """Load a packaged model directory (or its config.json): the model in eval mode, with `preprocess`
    and `classes` attributes set from the config."""
    path = Path(directory)
    folder = path.parent if path.name == CONFIG_NAME else path
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise WeightsError(f"{folder}: not a packaged model (no {CONFIG_NAME}); "
                           f"create one with `resmlp export WEIGHTS --format safetensors --out DIR`")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{config_path}: invalid JSON ({e})") from None
    if config.get("format") != PRETRAINED_FORMAT:
        raise WeightsError(f"{config_path}: not a resmlp config (format={config.get('format')!r}, "
                           f"expected {PRETRAINED_FORMAT!r})")
    name = config.get("model_name")
    if name not in VARIANTS:
        raise WeightsError(f"{config_path}: unknown model_name {name!r}")
    model = create_model(name, **(config.get("model_args") or {}))
    load_weights(model, folder / WEIGHTS_NAME)
    model.preprocess = preprocess_from_record(config)
    model.classes = config.get("classes")
    return model.eval()


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    """The exporters trace on CPU in fp32 and must not move or re-mode the caller's model."""
    return copy.deepcopy(model).cpu().float().eval()


def _example(model: nn.Module, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *input_shape(model), generator=torch.Generator().manual_seed(seed))


def _for_export(model: nn.Module) -> nn.Module:
    return fuse(model) if fusable(model) else model


def _max_diff(model: nn.Module, run_exported, batch: int = 3) -> float:
    # A batch size other than the one traced with (2) also proves that the batch axis is dynamic.
    x = _example(model, batch, seed=1)
    with torch.no_grad():
        want = model.eval()(x)
    return float((run_exported(x) - want).abs().max())


def export_onnx(model: nn.Module, path: str | os.PathLike, *, config: dict[str, Any] | None = None,
                check: bool = True, atol: float = 1e-4, opset: int = 17) -> float | None:
    """Export the fused `model` (CPU, fp32; unfused if it has nothing to fold) to ONNX with a dynamic batch axis ("images" -> "logits").

    With `check`, ONNX Runtime's output is compared with the eager model: returns the max |difference|,
    and raises ExportError (leaving no file) if it exceeds `atol`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = _cpu_eval_copy(model)
    diff = None

    def write(tmp: Path) -> None:
        nonlocal diff
        with _quiet(), torch.no_grad():
            torch.onnx.export(_for_export(model), (_example(model, 2),), str(tmp), input_names=["images"],
                              output_names=["logits"], opset_version=opset, dynamo=False,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
        _add_onnx_metadata(tmp, config or model_config(model))
        if check:
            from .optimize import OnnxRuntimeModel

            diff = _max_diff(model, OnnxRuntimeModel(tmp))
            if not diff <= atol:
                raise ExportError(f"ONNX output differs from eager by {diff:.3g} > {atol:g}; not written")

    _write_atomic(path, write)
    return diff


def _add_onnx_metadata(path: Path, config: dict[str, Any]) -> None:
    try:
        import onnx
    except ImportError:  # metadata is a convenience; the graph is complete without it
        return
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "resmlp.config", json.dumps(config)
    onnx.save(proto, str(path))


def export_torchscript(model: nn.Module, path: str | os.PathLike, *, config: dict[str, Any] | None = None,
                       check: bool = True, atol: float = 1e-4) -> float | None:
    """Trace the fused `model` to TorchScript (loadable with torch.jit.load, no resmlp needed).

    TorchScript is deprecated upstream in favour of torch.export but still the format many C++ and
    mobile runtimes load. Returns the max |difference| from eager when `check`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = _cpu_eval_copy(model)
    extra = {"config.json": json.dumps(config or model_config(model))}
    diff = None

    def write(tmp: Path) -> None:
        nonlocal diff
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(_for_export(model), _example(model, 2))
            torch.jit.save(traced, str(tmp), _extra_files=extra)
            if check:
                loaded = torch.jit.load(str(tmp))
                diff = _max_diff(model, lambda x: loaded(x))
                if not diff <= atol:
                    raise ExportError(f"TorchScript output differs from eager by {diff:.3g} > {atol:g}; not written")

    _write_atomic(path, write)
    return diff


def export_model(model: nn.Module, fmt: str, out: str | os.PathLike, *, preprocess: Preprocess | None = None,
                 classes: list[str] | None = None) -> tuple[Path, float | None]:
    """Dispatch on `fmt` (onnx | torchscript | safetensors); returns (written path, max diff or None)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "safetensors":
        return save_pretrained(model, out, preprocess=preprocess, classes=classes), None
    config = model_config(model, preprocess=preprocess, classes=classes)
    if fmt == "onnx":
        _onnxruntime()  # fail early with an install hint
        return Path(out), export_onnx(model, out, config=config)
    return Path(out), export_torchscript(model, out, config=config)
