"""The report as text: the self-contained `report.html` (every figure embedded) and the per-layer table that
it shares with the terminal summary of `resmlp analyze`."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from ..rundir import EVAL

REPORT_HTML = "report.html"


def grid_text(grid) -> str:
    """'8x8' for a square grid (an int), 'HxW' for a non-square one ((h, w) or [h, w])."""
    return f"{grid}x{grid}" if isinstance(grid, int) else f"{grid[0]}x{grid[1]}"


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
        parts.append(f"<p>{EVAL}: top-1 {_num(ev.get('top1'), 2)}%, top-5 {_num(ev.get('top5'), 2)}%.</p>")
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
    path = out / REPORT_HTML
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
