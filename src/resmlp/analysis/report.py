"""The analysis report of one model: the numbers of `stats` and the maps of `weights_maps` drawn as figures
(`plots`), written with every plotted number into the report's own `summary.json` (not the run's) and into a
self-contained `report.html` (`report_html`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..figures import plot_confusion
from ..infer_arch import spec_of
from ..rundir import RunDir
from . import plots, stats, weights_maps
from .report_html import write_html

REPORT_SUMMARY = "summary.json"  # in the report folder: every number the report plots


def read_eval(run_dir: Path) -> dict | None:
    """RUN/eval.json (written by `resmlp eval`), or None."""
    path = RunDir(run_dir).eval
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return rec if isinstance(rec, dict) else None


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _depth_trend(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean over the first and the last third of the layers (at least one layer each)."""
    k = max(1, len(values) // 3)
    return {"first_third": _mean(values[:k]), "last_third": _mean(values[-k:])}


def _trends(layers: list[dict], dist_key: str, share_key: str) -> dict:
    out = {
        "mean_distance": _depth_trend([l["locality"][dist_key] for l in layers]),
        "share_3x3": _depth_trend([l["locality"][share_key] for l in layers]),
        "sparsity_A": _depth_trend([l["sparsity"]["A"] for l in layers]),
    }
    if "peak_in_3x3" in layers[0]["locality"]:
        out["peak_in_3x3"] = _depth_trend([l["locality"]["peak_in_3x3"] for l in layers])
    return out


def build_report(
    model: nn.Module,
    out_dir: str | Path,
    *,
    source: str,
    reference: nn.Module | None = None,
    run_dir: Path | None = None,
    pruning: list[dict] | None = None,
    pruning_targets: Sequence[str] = (),
) -> dict[str, Any]:
    """Analyse `model` (compared with `reference`, a random init of the same variant) and write the
    figures, `REPORT_SUMMARY` and `REPORT_HTML` into `out_dir`. Returns the summary."""
    out = Path(out_dir)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    arch = stats.architecture(model)
    grid = model.stem.grid_size
    layers = stats.layer_stats(model)
    ref_layers = stats.layer_stats(reference) if reference is not None else None
    scales = stats.layer_scale(model)
    for i, l in enumerate(layers):
        l["layer"] = i
        if scales:
            l["layer_scale"] = scales[i]

    # Maps: one mosaic per layer, then all layers together.
    tiles, map_rows, marks, arrays = [], [], [], {}
    what = stats.token_weight_name(model)
    for i, ws in enumerate(stats.block_matrices(model)):
        rows = weights_maps.map_rows(arch, ws["A"], grid)
        maps = weights_maps.patch_maps(ws["A"], grid, rows)
        tile = weights_maps.mosaic(maps)
        marks.append(weights_maps.output_marks(rows, grid) if arch == "resmlp" else None)
        layers[i]["map_vmax"] = weights_maps.plot_layer(
            tile, out / "maps" / f"layer{i:02d}.png", title=f"layer {i}: rows of {what}", marks=marks[-1]
        )
        tiles.append(tile)
        map_rows.append(rows)
        arrays[f"layer{i:02d}"] = maps.numpy()
        arrays[f"layer{i:02d}_rows"] = np.asarray(rows)
    weights_maps.plot_overview(
        tiles, out / "cross_patch_overview.png", title=f"{what}: rows on the patch grid", marks=marks
    )

    figures = ["cross_patch_overview.png"]
    if arch == "resmlp":
        profiles = [weights_maps.offset_profile(ws["A"], grid) for ws in stats.block_matrices(model)]
        weights_maps.plot_offsets(profiles, out / "offset_profile.png", title="mean A by input offset")
        arrays.update({f"layer{i:02d}_offsets": p.numpy() for i, p in enumerate(profiles)})
        figures.append("offset_profile.png")
    np.savez_compressed(out / "maps" / "maps.npz", **arrays)

    plots.plot_sparsity(layers, ref_layers, out / "sparsity.png")
    centred = "output" if arch == "resmlp" else "peak"
    num_patches = model.stem.num_patches
    uniform = stats.locality(torch.ones(num_patches, num_patches), grid)  # no locality at all
    uniform["peak_in_3x3"] = uniform["share_3x3"]  # chance that a uniformly random peak falls in the 3x3
    plots.plot_locality(
        layers, ref_layers, out / "locality.png", centred=centred, uniform=uniform if arch == "resmlp" else None
    )
    figures += ["sparsity.png", "locality.png"]
    if scales:
        plots.plot_layer_scale(scales, out / "layer_scale.png")
        figures.append("layer_scale.png")

    metrics = RunDir(run_dir).read_metrics() if run_dir else []
    if metrics:
        plots.plot_training(metrics, out / "training_curves.png")
        figures.append("training_curves.png")
    evaluation = read_eval(run_dir) if run_dir else None
    if evaluation and evaluation.get("confusion"):
        plot_confusion(
            np.asarray(evaluation["confusion"], dtype=float), evaluation.get("classes"), out / "confusion.png"
        )
        figures.append("confusion.png")
    if pruning:
        plots.plot_pruning(pruning, out / "pruning.png")
        figures.append("pruning.png")

    dist_key = "mean_distance" if arch == "resmlp" else "peak_mean_distance"
    share_key = "share_3x3" if arch == "resmlp" else "peak_share_3x3"
    captions = {**plots.CAPTIONS, **(plots.MIXER_CAPTIONS if arch == "mixer" else {})}
    summary = {
        "source": source,
        "model_name": spec_of(model).name,
        "model_args": dict(spec_of(model).args),
        "architecture": arch,
        "grid_size": grid,  # an int, or [h, w] for a non-square grid
        "num_patches": num_patches,
        "sparsity_threshold": stats.SPARSITY_THRESHOLD,
        "distance": "chebyshev (max(|dr|, |dc|)) between patch grid positions; euclidean also given",
        "locality_centre": "output patch" if arch == "resmlp" else "peak patch of each fc1 row",
        "map_rows": map_rows,
        "layers": layers,
        "random_init_layers": ref_layers,
        "uniform_weights_locality": uniform,
        "maps_file": "maps/maps.npz: layerLL (plotted rows on the grid), layerLL_rows, layerLL_offsets",
        "depth_trend": _trends(layers, dist_key, share_key),
        "depth_trend_random_init": _trends(ref_layers, dist_key, share_key) if ref_layers else None,
        "training": metrics or None,
        "eval": evaluation,
        "pruning": {"targets": list(pruning_targets), "results": pruning} if pruning else None,
        "figures": [{"file": f, "title": captions[f][0], "caption": captions[f][1]} for f in figures],
    }
    (out / REPORT_SUMMARY).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    write_html(out, summary)
    return summary
