"""OpenVINO: the model as an OpenVINO IR (`resmlp export --format openvino`) and run by OpenVINO's CPU plugin
behind the same contract as `optimize` (float32 images in, float32 logits out): fp32, bf16 (the plugin's inference
precision) or int8 (post-training quantisation by NNCF on calibration images).

What a ResMLP needs to keep its predictions in int8 is the part added here on top of the engine
(`INT8_RECIPE`), measured part by part on a CIFAR-10 ResMLP (docs/results.md#inference, bench_int8.py):
- NNCF quantises the inputs of element-wise Add and Multiply by default, which in a ResMLP is the residual stream
  itself (and Aff's scale): every block then adds its update to a rounded stream. Left in float (only the
  matmuls are int8), top-1 agreement with fp32 goes from 98.2 % to 98.9 %;
- this project's per-layer smoothing of the channel MLPs' inputs (`quantize.smooth`, SmoothQuant): 99.2 %;
- the patch embedding, the classifier and the cross-patch products A x in float (6 % of S12's multiply-adds):
  99.5 %;
- the first block's channel MLP in float (its fc1 is the layer whose rounding cost most, one layer in float at
  a time on a student): on four students with depthwise token mixing, 99.36-99.58 % -> 99.56-99.70 %, at 8 % of
  their int8 images/s and about 20 % of S12's.
NNCF's own TRANSFORMER model type (its SmoothQuant) keeps 97.2 % on the same model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..device import auto_precision
from ..files import write_text_atomic
from ..hub.packaged import CONFIG_NAME, packaged_config
from .fuse import fusable, fuse
from .quantize import smooth
from .trace import DEFAULT_TOLERANCE, check_export, cpu_eval_copy, example_input, for_export, quiet

IR_NAME = "model.xml"  # beside it: model.bin (the weights) and config.json (our config, as the other exports)
OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")
_HINT = {"fp32": "f32", "bf16": "bf16"}


def openvino_module():
    """The openvino package, or a one-line error with the install hint."""
    try:
        import openvino
    except ImportError:
        raise ValueError("the openvino runtime needs openvino: pip install 'resmlp[openvino]'") from None
    return openvino


def nncf_module():
    """The nncf package (int8 calibration for OpenVINO), or a one-line error with the install hint."""
    try:
        with quiet():
            import nncf
    except ImportError:
        raise ValueError("int8 with OpenVINO needs nncf: pip install 'resmlp[openvino]'") from None
    nncf.set_log_level(logging.ERROR)  # its per-layer INFO lines say nothing about the user's model
    return nncf


@dataclass(frozen=True)
class Int8Recipe:
    """How a ResMLP is quantised for OpenVINO (see the module docstring)."""

    smooth: bool = True  # this project's calibrated SmoothQuant of the channel MLPs first
    preset: str = "performance"  # NNCF QuantizationPreset: symmetric activations (mixed: asymmetric)
    transformer: bool = False  # NNCF's model_type=TRANSFORMER (its own SmoothQuant, other fused patterns)
    keep_float: tuple[str, ...] = ("stem", "head", "token_mixing", "first_mlp")  # matmuls left float (FLOAT_PARTS)
    elementwise: bool = False  # also quantise the inputs of Add / Multiply (NNCF's default): the residual stream
    fast_bias_correction: bool = True


INT8_RECIPE = Int8Recipe()


def to_openvino(model: nn.Module):
    """The fused fp32 `model` (CPU copy) as an `openvino.Model` with a dynamic batch axis."""
    ov = openvino_module()
    model = cpu_eval_copy(model)
    example = example_input(model, 2)
    with quiet(), torch.no_grad():
        converted = ov.convert_model(for_export(model), example_input=example, input=[(-1, *example.shape[1:])])
    converted.inputs[0].get_tensor().set_names({"images"})
    converted.outputs[0].get_tensor().set_names({"logits"})
    return converted


# What `Int8Recipe.keep_float` may name: the matmuls of the patch embedding, of the classifier, the token mixing
# of every block (the cross-patch products A x, or Table 3's 3x3 convolutions in their place), and the first
# block's channel MLP (fc1, fc2; or its fc1 alone).
# OpenVINO names a converted node after the module it came from, `__module.<module path>/aten::<op>/<node type>`.
FLOAT_PARTS = {
    "stem": re.compile(r"__module\.stem(\.[\w.]+)?/.*"),
    "head": re.compile(r"__module\.head/.*"),
    "token_mixing": re.compile(
        r"__module\.blocks\.\d+/aten::matmul/MatMul"  # A x
        r"|__module\.blocks\.\d+\.(conv_tokens\.)?(conv|pointwise)/.*"  # conv3x3, _depthwise, _separable (fused)
    ),
    "first_mlp": re.compile(r"__module\.blocks\.0\.([\w.]+\.)?fc[12](\.linear)?/.*"),
    "first_fc1": re.compile(r"__module\.blocks\.0\.([\w.]+\.)?fc1(\.linear)?/.*"),  # first_mlp's fc1 alone
}


def float_scope(ov_model, parts: tuple[str, ...]) -> list[str]:
    """The names of the MatMul / (Group)Convolution nodes of `ov_model` that belong to `parts` (keys of
    FLOAT_PARTS)."""
    unknown = set(parts) - set(FLOAT_PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)} to keep in float; choose from {', '.join(FLOAT_PARTS)}")
    return [
        op.get_friendly_name()
        for op in ov_model.get_ops()
        if op.get_type_name() in ("MatMul", "Convolution", "GroupConvolution")
        and any(FLOAT_PARTS[p].fullmatch(op.get_friendly_name()) for p in parts)
    ]


def quantize_openvino(model: nn.Module, calibration: torch.Tensor, recipe: Int8Recipe = INT8_RECIPE):
    """`model` as an int8 `openvino.Model`, calibrated by NNCF on `calibration` (B, C, H, W) images."""
    nncf = nncf_module()
    if calibration is None or len(calibration) == 0:
        raise ValueError("int8 with OpenVINO needs calibration images (--calibration FOLDER, a few hundred)")
    model = cpu_eval_copy(model)
    if recipe.smooth and fusable(model):
        model = smooth(fuse(model), calibration)[0]
    ov_model = to_openvino(model)
    # one image per item: NNCF's range estimates average over items, and were measured this way
    items = [image[None].numpy().astype(np.float32) for image in calibration]
    options: dict[str, Any] = {
        "preset": nncf.QuantizationPreset(recipe.preset),
        "subset_size": len(items),
        "fast_bias_correction": recipe.fast_bias_correction,
    }
    if recipe.transformer:
        options["model_type"] = nncf.ModelType.TRANSFORMER
    kept = float_scope(ov_model, recipe.keep_float)
    types = [] if recipe.elementwise else ["Add", "Multiply"]
    if kept or types:
        options["ignored_scope"] = nncf.IgnoredScope(names=kept, types=types, validate=False)
    # NNCF draws its progress bars on stdout, where `resmlp predict --format json` writes its result
    with quiet(), contextlib.redirect_stdout(sys.stderr):
        return nncf.quantize(ov_model, nncf.Dataset(items), **options)


class OpenVinoModel(nn.Module):
    """An OpenVINO model compiled for the CPU behind the `optimize` contract. `precision` is the plugin's
    inference precision (fp32 or bf16); an int8 model runs its quantised layers in int8 and the rest in fp32."""

    def __init__(self, ov_model, *, precision: str = "fp32", threads: int | None = None) -> None:
        super().__init__()
        ov = openvino_module()
        config = {
            "INFERENCE_PRECISION_HINT": _HINT.get(precision, "f32"),
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time, all threads on it: the contract's use
        }
        self.compiled = ov.Core().compile_model(ov_model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision, self.runtime = precision, "openvino"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        self.request.infer({0: x})
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy()).float()

    def extra_repr(self) -> str:
        return f"precision={self.precision}, runtime=openvino"


def openvino_model(
    model: nn.Module,
    precision: str = "fp32",
    *,
    threads: int | None = None,
    calibration: torch.Tensor | None = None,
    recipe: Int8Recipe = INT8_RECIPE,
) -> OpenVinoModel:
    """`model` converted to OpenVINO (fused) and compiled at `precision` (auto: bf16 where native, else fp32;
    int8: NNCF on `calibration`)."""
    precision = auto_precision(precision, "cpu") if precision == "auto" else precision
    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"OpenVINO runs {', '.join(OPENVINO_PRECISIONS)}, not {precision}")
    if precision == "int8":
        return OpenVinoModel(quantize_openvino(model, calibration, recipe), precision="int8", threads=threads)
    return OpenVinoModel(to_openvino(model), precision=precision, threads=threads)


def export_openvino(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    config: dict[str, Any] | None = None,
    precision: str = "fp32",
    calibration: torch.Tensor | None = None,
    check: bool = True,
    atol: float = DEFAULT_TOLERANCE,
) -> float | None:
    """Write `directory`/model.xml + model.bin (the OpenVINO IR; int8 when `precision` is int8, calibrated on
    `calibration`) and config.json (preprocessing, classes). With `check` (fp32 only), the compiled IR must
    reproduce the eager model; returns the max |difference|."""
    ov = openvino_module()
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory; an OpenVINO export is a folder")
    model = cpu_eval_copy(model)
    if precision == "int8":
        ov_model = quantize_openvino(model, calibration)
    elif precision == "fp32":
        ov_model = to_openvino(model)
    else:
        raise ValueError(f"an OpenVINO IR is written in fp32 or int8 (bf16 is chosen when it is run), not {precision}")
    diff = None
    if check and precision == "fp32":
        diff = check_export(model, OpenVinoModel(ov_model), what="OpenVINO", atol=atol)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".openvino-", dir=out) as tmp:
        ov.save_model(ov_model, str(Path(tmp) / IR_NAME), compress_to_fp16=False)
        for name in ("model.bin", IR_NAME):  # the graph after its weights: a model.xml always has its model.bin
            os.replace(Path(tmp) / name, out / name)
    record = config or packaged_config(model, version=1)
    write_text_atomic(out / CONFIG_NAME, json.dumps({**record, "openvino": {"precision": precision}}, indent=2) + "\n")
    return diff
