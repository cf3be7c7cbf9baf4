"""ONNX: export (fused, dynamic batch, config as metadata) and the ONNX Runtime model behind the same
contract as `optimize` (float32 images in, float32 logits out)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..files import write_atomic
from ..hub.packaged import packaged_config
from .fuse import fusable, fuse
from .quantize import smooth
from .trace import check_export, cpu_eval_copy, example_input, for_export, quiet


def onnxruntime_module():
    """The onnxruntime package, or a one-line error with the install hint."""
    try:
        import onnxruntime
    except ImportError:
        raise ValueError("the onnx runtime needs onnxruntime: pip install 'resmlp[onnx]'") from None
    return onnxruntime


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    config: dict[str, Any] | None = None,
    check: bool = True,
    atol: float = 1e-4,
    opset: int = 17,
) -> float | None:
    """Export the fused `model` (CPU, fp32; unfused if it has nothing to fold) to ONNX with a dynamic
    batch axis ("images" -> "logits").

    With `check`, ONNX Runtime's output is compared with the eager model: returns the max |difference|,
    and raises ExportError (leaving no file) if it exceeds `atol`.
    """
    model = cpu_eval_copy(model)
    diff = None

    def write(tmp: Path) -> None:
        nonlocal diff
        with quiet(), torch.no_grad():
            torch.onnx.export(
                for_export(model),
                (example_input(model, 2),),
                str(tmp),
                input_names=["images"],
                output_names=["logits"],
                opset_version=opset,
                dynamo=False,
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            )
        _add_onnx_metadata(tmp, config or packaged_config(model, version=1))
        if check:
            diff = check_export(model, OnnxRuntimeModel(tmp), what="ONNX", atol=atol)

    write_atomic(path, write)
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


class OnnxRuntimeModel(nn.Module):
    """An ONNX Runtime session behind the same contract (CPU). Holds the .onnx file it runs."""

    def __init__(self, onnx_path: str | os.PathLike, *, precision: str = "fp32", threads: int | None = None) -> None:
        super().__init__()
        ort = onnxruntime_module()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # errors only: ORT's optimiser notes are not the user's concern
        self.path = Path(onnx_path)
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.precision, self.runtime = precision, "onnx"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0]).float()

    def extra_repr(self) -> str:
        return f"precision={self.precision}, runtime=onnx"


def onnx_runtime_model(
    model: nn.Module,
    precision: str = "fp32",
    *,
    threads: int | None = None,
    workdir: str | os.PathLike | None = None,
    calibration: torch.Tensor | None = None,
) -> OnnxRuntimeModel:
    """Export `model` (fused) to ONNX and open it in ONNX Runtime; int8 = ORT's dynamic quantisation,
    after the same calibrated smoothing as `optimize` when `calibration` images are given.

    ORT's CPU provider has no bf16 kernels for these ops, so precision is fp32 or int8.
    """
    precision = "fp32" if precision == "auto" else precision
    if precision not in ("fp32", "int8"):
        raise ValueError(f"ONNX Runtime (CPU) runs fp32 or int8, not {precision}")
    onnxruntime_module()
    tmp = None if workdir else tempfile.TemporaryDirectory(prefix="resmlp-onnx-")
    folder = Path(workdir) if workdir else Path(tmp.name)
    path = folder / "model.onnx"
    if precision == "int8" and calibration is not None and fusable(model):
        model = smooth(fuse(model), calibration)[0]
    export_onnx(model, path, check=False)
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = folder / "model.int8.onnx"
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # ORT logs a generic "run pre-processing first" hint through root
        try:
            with quiet():
                quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        path = quantized
    runner = OnnxRuntimeModel(path, precision=precision, threads=threads)
    runner._tmp = tmp  # the temporary folder lives (and is deleted) with the runner
    return runner
