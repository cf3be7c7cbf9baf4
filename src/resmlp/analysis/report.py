"""The analysis report: PNG figures, `summary.json` (every plotted number) and a self-contained `report.html`.

Figures are drawn on matplotlib `Figure` objects (Agg, no pyplot), so importing this module never changes
the caller's matplotlib backend.
"""

from __future__ import annotations

import base64
import html
import json
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn

from ..figures import plot_confusion, save_figure
from ..infer_arch import spec_of
from . import stats, weights_maps

# (file, title, one-line explanation) of every figure the report can show, in display order.
CAPTIONS = {
    "cross_patch_overview.png": (
        "Cross-patch weight maps, all layers",
        "Each small square is one row of A (what one output patch takes from every input patch) laid out on the "
        "image's patch grid (black square: that output patch); central output patches, one panel per layer; "
        "red > 0 > blue, per-layer scale.",
    ),
    "offset_profile.png": (
        "Cross-patch weights by offset",
        "Mean A[output, input] over all output patches, by the input's offset from the output patch (outlined "
        "centre = the patch itself): the average kernel A applies; a compact blob means convolution-like.",
    ),
    "sparsity.png": (
        "Sparsity across depth",
        "Share of entries with |w| < 5% of the matrix's max |w|, per layer, for A (cross-patch), B and C "
        "(channel MLP); dashed: the same variant at random init.",
    ),
    "locality.png": (
        "Locality of the cross-patch layer",
        "|A|-weighted mean Chebyshev distance between output and input patch (0 = identity, 1 = direct "
        "neighbours only), share of |A| inside the 3x3 neighbourhood, and share of output patches whose largest "
        "|A| lies there; dashed: random init, dotted: all |w| equal.",
    ),
    "layer_scale.png": (
        "LayerScale per block",
        "Mean |LayerScale| of each residual branch: ls1 scales the cross-patch sublayer, ls2 the MLP.",
    ),
    "training_curves.png": (
        "Training curves",
        "Train / validation loss and validation top-1 per epoch, from metrics.jsonl.",
    ),
    "confusion.png": (
        "Confusion matrix",
        "From eval.json, rows normalised: row = true class, column = predicted class.",
    ),
    "pruning.png": (
        "Compression by magnitude pruning",
        "Validation top-1 (or the L1 mass kept, without --data) after zeroing the smallest |w| of each pruned "
        "matrix in every layer, against the requested sparsity.",
    ),
}
_MIXER_CAPTIONS = {
    "cross_patch_overview.png": (
        "Token-mixing weight maps (fc1 rows), all layers",
        "Each small square is one row of the token-mixing MLP's fc1 (one hidden unit's weights over the input "
        "patches) on the patch grid; the strongest rows, one panel per layer; red > 0 > blue, per-layer scale.",
    ),
    "locality.png": (
        "Locality of the token-mixing layer",
        "|w|-weighted mean Chebyshev distance of each fc1 row's weights from that row's peak patch, and the share "
        "of |w| within the peak's 3x3 neighbourhood; dashed: random init.",
    ),
}


def read_metrics(run_dir: Path) -> list[dict]:
    """Per-epoch records of RUN/metrics.jsonl (lines that are not JSON objects with an epoch are skipped,
    e.g. a last line cut short by a crash)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    out, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict) and "epoch" in rec:
            out.append(rec)
    if bad:
        warnings.warn(f"{path}: skipped {bad} line(s) that are not JSON", stacklevel=2)
    return out


def read_eval(run_dir: Path) -> dict | None:
    """RUN/eval.json (written by `resmlp eval`), or None."""
    path = run_dir / "eval.json"
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


# --------------------------------------------------------------------------- figures


def _layer_axis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_sparsity(layers: list[dict], reference: list[dict] | None, path: Path) -> None:
    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.add_subplot()
    depth = range(len(layers))
    for key, colour in zip("ABC", ("tab:red", "tab:blue", "tab:green")):
        ax.plot(depth, [l["sparsity"][key] for l in layers], "o-", color=colour, label=key, ms=3)
        if reference:
            ax.plot(
                depth,
                [l["sparsity"][key] for l in reference],
                "--",
                color=colour,
                alpha=0.6,
                label=f"{key} random init",
            )
    ax.set(xlabel="layer", ylabel="fraction |w| < 5% max", ylim=(0, 1))
    _layer_axis(ax)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)


def plot_locality(
    layers: list[dict], reference: list[dict] | None, path: Path, *, centred: str, uniform: dict | None = None
) -> None:
    if centred == "output":
        panels = [
            ("mean_distance", "mean distance (patches)"),
            ("share_3x3", "share of |w| in 3x3"),
            ("peak_in_3x3", "rows whose max |w| is in 3x3"),
        ]
    else:
        panels = [("peak_mean_distance", "mean distance from peak"), ("peak_share_3x3", "share of |w| in 3x3")]
    fig = Figure(figsize=(4 * len(panels), 3.2))
    depth = range(len(layers))
    for i, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.plot(depth, [l["locality"][key] for l in layers], "o-", color="tab:red", ms=3, label="trained")
        if reference:
            ax.plot(depth, [l["locality"][key] for l in reference], "--", color="grey", label="random init")
        if uniform and uniform.get(key) is not None:
            ax.axhline(uniform[key], linestyle=":", color="black", linewidth=1, label="uniform |w|")
        ax.set(xlabel="layer", ylabel=label)
        ax.set_ylim(bottom=0)
        _layer_axis(ax)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_layer_scale(scales: list[dict], path: Path) -> None:
    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.add_subplot()
    for key in ("ls1", "ls2"):
        ax.plot(range(len(scales)), [s[key] for s in scales], "o-", ms=3, label=key)
    ax.set(xlabel="block", ylabel="mean |LayerScale|", yscale="log")
    _layer_axis(ax)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_training(metrics: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, and accuracy against wall-clock minutes when the run logged it."""
    timed = [m for m in metrics if "wall_time_s" in m and "val_top1" in m]
    panels = 3 if timed else 2
    fig = Figure(figsize=(4 * panels, 3.2))
    epochs = [m["epoch"] for m in metrics]
    for i, (keys, ylabel) in enumerate(
        ((("train_loss", "val_loss"), "loss"), (("val_top1", "val_top5"), "accuracy (%)"))
    ):
        ax = fig.add_subplot(1, panels, i + 1)
        for key in keys:
            if any(key in m for m in metrics):
                ax.plot(epochs, [m.get(key, math.nan) for m in metrics], "o-", ms=3, label=key)
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.legend(fontsize=7)
    if timed:
        ax = fig.add_subplot(1, panels, 3)
        ax.plot([m["wall_time_s"] / 60 for m in timed], [m["val_top1"] for m in timed], "o-", ms=3, label="val_top1")
        ax.set(xlabel="wall-clock minutes", ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_pruning(results: list[dict], path: Path) -> None:
    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.add_subplot()
    xs = [r["sparsity"] for r in results]
    if "top1" in results[0]:
        ax.plot(xs, [r["top1"] for r in results], "o-", label=f"top-1, pruning {', '.join(results[0]['targets'])}")
        ax.set_ylabel("validation top-1 (%)")
    else:
        for t in results[0]["targets"]:
            ax.plot(xs, [r["targets"][t]["l1_kept"] for r in results], "o-", label=f"{t}: L1 mass kept")
        ax.set_ylabel("share of L1 mass kept")
    ax.set(xlabel="sparsity of the pruned matrices")
    ax.legend(fontsize=7)
    save_figure(fig, path)


# --------------------------------------------------------------------------- report


def grid_text(grid) -> str:
    """'8x8' for a square grid (an int), 'HxW' for a non-square one ((h, w) or [h, w])."""
    return f"{grid}x{grid}" if isinstance(grid, int) else f"{grid[0]}x{grid[1]}"


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
    figures, summary.json and report.html into `out_dir`. Returns the summary."""
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

    plot_sparsity(layers, ref_layers, out / "sparsity.png")
    centred = "output" if arch == "resmlp" else "peak"
    num_patches = model.stem.num_patches
    uniform = stats.locality(torch.ones(num_patches, num_patches), grid)  # no locality at all
    uniform["peak_in_3x3"] = uniform["share_3x3"]  # chance that a uniformly random peak falls in the 3x3
    plot_locality(
        layers, ref_layers, out / "locality.png", centred=centred, uniform=uniform if arch == "resmlp" else None
    )
    figures += ["sparsity.png", "locality.png"]
    if scales:
        plot_layer_scale(scales, out / "layer_scale.png")
        figures.append("layer_scale.png")

    metrics = read_metrics(run_dir) if run_dir else []
    if metrics:
        plot_training(metrics, out / "training_curves.png")
        figures.append("training_curves.png")
    evaluation = read_eval(run_dir) if run_dir else None
    if evaluation and evaluation.get("confusion"):
        plot_confusion(
            np.asarray(evaluation["confusion"], dtype=float), evaluation.get("classes"), out / "confusion.png"
        )
        figures.append("confusion.png")
    if pruning:
        plot_pruning(pruning, out / "pruning.png")
        figures.append("pruning.png")

    dist_key = "mean_distance" if arch == "resmlp" else "peak_mean_distance"
    share_key = "share_3x3" if arch == "resmlp" else "peak_share_3x3"
    captions = {**CAPTIONS, **(_MIXER_CAPTIONS if arch == "mixer" else {})}
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
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    write_html(out, summary)
    return summary


def _img(path: Path, css: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}" style="{css}">'


def _num(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def write_html(out: Path, summary: dict) -> Path:
    """report.html with every figure embedded (base64), so the one file can be mailed or archived."""
    esc = html.escape
    arch = summary["architecture"]
    args = ", ".join(f"{k}={v}" for k, v in summary["model_args"].items())
    trend, ref_trend = summary["depth_trend"], summary["depth_trend_random_init"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>resmlp analysis</title><style>"
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "figure{margin:1.5em 0}figcaption{font-size:13px;color:#444}.maps img{margin:2px}</style></head><body>",
        f"<h1>Weight analysis: {esc(str(summary['model_name']))}</h1>",
        f"<p>Source: <code>{esc(summary['source'])}</code><br>Architecture: {esc(arch)} ({esc(args)})<br>"
        f"Patch grid {grid_text(summary['grid_size'])}; distance: {esc(summary['distance'])}; "
        f"locality measured from the {esc(summary['locality_centre'])}.</p>",
        "<p><b>Locality across depth</b>, first third of the layers vs last third (random init in brackets): "
        + "; ".join(
            f"{label} {_num(trend[k]['first_third'])} vs {_num(trend[k]['last_third'])}"
            + (f" ({_num(ref_trend[k]['first_third'])} vs {_num(ref_trend[k]['last_third'])})" if ref_trend else "")
            for k, label in (
                ("mean_distance", "mean distance"),
                ("share_3x3", "3x3 share"),
                ("peak_in_3x3", "peak in 3x3"),
            )
            if k in trend
        )
        + ".</p>",
    ]
    if summary.get("eval"):
        ev = summary["eval"]
        parts.append(f"<p>eval.json: top-1 {_num(ev.get('top1'), 2)}%, top-5 {_num(ev.get('top5'), 2)}%.</p>")
    for fig in summary["figures"]:
        parts.append(
            f"<figure><h3>{esc(fig['title'])}</h3>{_img(out / fig['file'], 'max-width:100%')}"
            f"<figcaption>{esc(fig['caption'])}</figcaption></figure>"
        )

    head, table = layer_table(summary)
    rows = ["<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" for cells in table]
    parts.append(
        "<h3>Per-layer numbers</h3><p>Sparsity = share of |w| &lt; 5% of max |w|; random = the same "
        "variant freshly initialised (seeded).</p><table><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )

    if summary.get("pruning"):
        pr = summary["pruning"]
        with_acc = "top1" in pr["results"][0]
        head = ["requested", *(f"{t} achieved" for t in pr["targets"]), *(f"{t} L1 kept" for t in pr["targets"])]
        head += ["top-1 %", "top-5 %", "loss"] if with_acc else []
        rows = []
        for rec in pr["results"]:
            cells = [
                f"{rec['sparsity']:.2f}",
                *(_num(rec["targets"][t]["sparsity"], 4) for t in pr["targets"]),
                *(_num(rec["targets"][t]["l1_kept"]) for t in pr["targets"]),
            ]
            cells += [_num(rec["top1"], 2), _num(rec["top5"], 2), _num(rec["loss"])] if with_acc else []
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append(
            f"<h3>Magnitude pruning of {esc(', '.join(pr['targets']))}</h3><table><tr>"
            + "".join(f"<th>{h}</th>" for h in head)
            + "</tr>"
            + "".join(rows)
            + "</table>"
        )

    maps = sorted((out / "maps").glob("layer*.png"))
    parts.append(
        "<h3>Per-layer maps</h3><p>One mosaic per layer, with its colour scale.</p><div class='maps'>"
        + "".join(_img(p, "width:230px") for p in maps)
        + "</div></body></html>"
    )
    path = out / "report.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def layer_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The per-layer numbers (sparsity, locality against the random-init reference, LayerScale) as a
    header and rows of strings: one table for report.html and the terminal."""
    arch, ref = summary["architecture"], summary.get("random_init_layers")
    dist_key = "mean_distance" if arch == "resmlp" else "peak_mean_distance"
    share_key = "share_3x3" if arch == "resmlp" else "peak_share_3x3"
    head = ["layer", "sparsity A", "B", "C", "A random", "mean dist", "random", "3x3 share", "random"]
    head += ["peak in 3x3", "random"] if arch == "resmlp" else []
    has_ls = any("layer_scale" in l for l in summary["layers"])
    head += ["|ls1|", "|ls2|"] if has_ls else []
    rows = []
    for i, l in enumerate(summary["layers"]):
        r = ref[i] if ref else None
        cells = [
            str(i),
            *(_num(l["sparsity"][k]) for k in "ABC"),
            _num(r["sparsity"]["A"] if r else None),
            _num(l["locality"][dist_key]),
            _num(r["locality"][dist_key] if r else None),
            _num(l["locality"][share_key]),
            _num(r["locality"][share_key] if r else None),
        ]
        if arch == "resmlp":
            cells += [_num(l["locality"]["peak_in_3x3"]), _num(r["locality"]["peak_in_3x3"] if r else None)]
        if has_ls:
            cells += [f"{l['layer_scale']['ls1']:.3g}", f"{l['layer_scale']['ls2']:.3g}"]
        rows.append(cells)
    return head, rows
