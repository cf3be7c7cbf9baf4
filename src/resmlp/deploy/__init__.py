"""Inference and deployment: fused model, precision/runtime choice, export, predict, benchmark.

Every command loads its weights through `resmlp.loading.load_model` (checkpoint, run directory,
packaged directory or bare state dict). The packaged directory and publishing on the Hub live in
`resmlp.hub` (re-exported here).
"""

from ..hub import from_pretrained, model_card, package_for_hub, push_to_hub, save_pretrained
from .export import EXPORT_FORMATS, export_model, export_torchscript
from .fuse import FusedClassifier, fuse
from .onnx import OnnxRuntimeModel, export_onnx
from .optimize import OptimizedModel, build_runtime, optimize, resolve_precision
from .trace import ExportError

__all__ = [
    "EXPORT_FORMATS",
    "ExportError",
    "FusedClassifier",
    "OnnxRuntimeModel",
    "OptimizedModel",
    "build_runtime",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "from_pretrained",
    "fuse",
    "optimize",
    "resolve_precision",
    "save_pretrained",
    "model_card",
    "package_for_hub",
    "push_to_hub",
]
