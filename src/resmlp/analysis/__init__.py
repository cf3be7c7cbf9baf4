"""Paper analyses of trained weights (ResMLP section 4.2, figures 2-3, B.1-B.2), run by `resmlp analyze`.

`stats` (sparsity, locality, LayerScale) and `prune` (magnitude pruning) need only torch and are
re-exported here; `weights_maps` (cross-patch maps and mosaics), `plots` (the figures and their captions)
and `report` (the report folder: figures, summary.json, and report.html from `report_html`) import
matplotlib, so they are imported from their modules, e.g. `from resmlp.analysis.report import build_report`.
"""

from .prune import PRUNE_TARGETS, magnitude_prune_, prune_model, pruning_sweep
from .stats import (
    block_matrices,
    block_weights,
    layer_scale,
    layer_stats,
    locality,
    patch_distances,
    peak_locality,
    sparsity,
)

__all__ = [
    "PRUNE_TARGETS",
    "block_matrices",
    "block_weights",
    "layer_scale",
    "layer_stats",
    "locality",
    "magnitude_prune_",
    "patch_distances",
    "peak_locality",
    "prune_model",
    "pruning_sweep",
    "sparsity",
]
