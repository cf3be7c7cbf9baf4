"""The report's figures: one function per plot, drawn on matplotlib `Figure` objects (Agg, no pyplot, so
importing this module never changes the caller's matplotlib backend), and the caption of each figure file."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..figures import save_figure
from ..rundir import EVAL, METRICS

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
        f"Train / validation loss and validation top-1 per epoch, from {METRICS}.",
    ),
    "confusion.png": (
        "Confusion matrix",
        f"From {EVAL}, rows normalised: row = true class, column = predicted class.",
    ),
    "pruning.png": (
        "Compression by magnitude pruning",
        "Validation top-1 (or the L1 mass kept, without --data) after zeroing the smallest |w| of each pruned "
        "matrix in every layer, against the requested sparsity.",
    ),
}
MIXER_CAPTIONS = {  # what differs for MLP-Mixer's token-mixing MLP
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
