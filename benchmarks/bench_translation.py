"""The translation half of the paper at CPU scale (section 3.6, Table 5): the sequence ResMLP against a Transformer
of equal parameters, at equal wall-clock minutes, one after the other on this machine; the decoder ablations;
the decoder alone as a language model; decoding speed.

    python benchmarks/bench_translation.py --data multi30k --out runs/mt --minutes 10 --plan de ablation fr lm

Plans: `de` / `fr` (ResMLP and Transformer, English -> German / French), `ablation` (En -> De: the decoder's
token MLP instead of triangular A; the linear T x S map instead of encoder-decoder attention), `lm` (both as
German language models, `--lm-minutes` each), `speed` (sentences/s of greedy and beam 4 at batch 1 and 64 on
the test sentences, from the `de` runs). Each run is OUT/NAME; a finished run (summary.json) is reused, so an
interrupted benchmark resumes. Test BLEU is beam 4 on test_2016_flickr (sacreBLEU, signature recorded). Writes
OUT/translation.json, OUT/translation.md and OUT/translation_curves.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
from common import cpu_model
from figures import draw_translation

from resmlp.config import load_config
from resmlp.data.text import collate_sources, read_lines
from resmlp.deploy.translate import evaluate_translation, load_text_model
from resmlp.files import write_text_atomic
from resmlp.models.decoding import beam_search
from resmlp.rundir import RunDir
from resmlp.train.run import train

RESMLP, TRANSFORMER = "resmlp_mt_small", "transformer_mt_small"
PLANS = {
    "de": [("resmlp-de", "multi30k_en_de", {}), ("transformer-de", "multi30k_en_de", {"model.name": TRANSFORMER})],
    "fr": [("resmlp-fr", "multi30k_en_fr", {}), ("transformer-fr", "multi30k_en_fr", {"model.name": TRANSFORMER})],
    "ablation": [
        ("resmlp-de-token-mlp", "multi30k_en_de", {"model.token_mixing": "mlp"}),
        ("resmlp-de-linear-cross", "multi30k_en_de", {"model.cross": "linear"}),
    ],
    "lm": [
        ("resmlp-lm-de", "multi30k_en_de", {"text.task": "language_model", "model.name": "resmlp_lm_small"}),
        ("transformer-lm-de", "multi30k_en_de", {"text.task": "language_model", "model.name": "transformer_lm_small"}),
    ],
}


def train_run(
    name: str, recipe: str, overrides: dict, data: Path, out: Path, minutes: float, common: Sequence[str] = ()
) -> dict:
    run = out / name
    summary = RunDir(run).read_summary()
    if summary is not None and not summary.get("stopped_by"):
        print(f"=== {name}: finished before, reused", flush=True)
        return summary
    print(f"=== {name}: {recipe} {overrides} for {minutes} min", flush=True)
    cfg = load_config(
        recipe,
        [("data.path", str(data)), ("budget.time_limit_min", minutes), *common, *overrides.items()],
    )
    return train(cfg, out=run, resume=run if (run / "checkpoints" / "last.pt").is_file() else None)


def test_scores(run: Path, data: Path, tgt: str) -> dict:
    cached = run / "translate_eval.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    return evaluate_translation(run, data / "test_2016_flickr.en", data / f"test_2016_flickr.{tgt}", beam=4)


@torch.no_grad()
def decoding_speed(runs: dict[str, Path], sources: list[str], repeats: int = 5) -> dict[str, dict[str, float]]:
    """Sentences/s of greedy and beam 4 at batch 1 (the first 32 sentences) and 64 (the first 256) for each run,
    the runs interleaved repeat by repeat (a noisy host slows both alike); medians."""
    models = {name: load_text_model(run) for name, run in runs.items()}
    ids = {name: tm.tokenizer.encode_batch(sources) for name, tm in models.items()}
    out: dict[str, dict[str, float]] = {name: {} for name in runs}
    for beam in (1, 4):
        for batch, count in ((1, min(32, len(sources))), (64, min(256, len(sources)))):
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(repeats):
                for name, tm in models.items():
                    start = time.perf_counter()
                    for i in range(0, count, batch):
                        beam_search(tm.model, collate_sources(ids[name][i : i + batch]), beam=beam)
                    times[name].append(time.perf_counter() - start)
            for name in runs:
                out[name][f"beam{beam}_batch{batch}"] = count / statistics.median(times[name])
    return out


def markdown(results: dict, machine: str) -> str:
    lines = [
        f"CPU: {machine}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}; seed 0",
        "",
        "| run | params (M) | minutes | epochs | tgt tokens/s | val loss | val BLEU (greedy) | test BLEU (beam 4) "
        "| test chrF |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        s, t = r["summary"], r.get("test", {})
        bleu = f"{s['best_val_bleu']:.2f}" if s.get("best_val_bleu") is not None else "-"
        test_bleu = f"{t['bleu']:.2f}" if t else "-"
        test_chrf = f"{t['chrf']:.2f}" if t else "-"
        lines.append(
            f"| {name} | {s['params'] / 1e6:.2f} | {s['wall_time_s'] / 60:.1f} | {s['epochs']} "
            f"| {s['tokens_per_s']:.0f} | {s['best_val_loss']:.3f} | {bleu} | {test_bleu} | {test_chrf} |"
        )
    sigs = {t["bleu_signature"] for r in results.values() if (t := r.get("test"))}
    lines += ["", *(f"sacreBLEU: `{s}`" for s in sorted(sigs))]
    speed = {n: r["speed"] for n, r in results.items() if "speed" in r}
    if speed:
        keys = sorted(next(iter(speed.values())))
        lines += ["", "| decoding (sentences/s) | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {n} | " + " | ".join(f"{v[k]:.1f}" for k in keys) + " |" for n, v in speed.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="Multi30k folder (train/val/test_2016_flickr .en/.de/.fr)")
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget of each translation run")
    p.add_argument("--lm-minutes", type=float, default=4.0, help="wall-clock budget of each language model")
    p.add_argument("--plan", nargs="+", default=["de"], choices=[*PLANS, "speed"])
    p.add_argument("--set", dest="common", nargs="+", default=[], help="overrides for every run (KEY=VALUE)")
    args = p.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    if not (data / "train.en").is_file():
        raise SystemExit(f"error: --data {data}: no train.en (extract multi30k-task1.tar.gz)")
    out.mkdir(parents=True, exist_ok=True)
    record = out / "translation.json"
    results = json.loads(record.read_text()) if record.is_file() else {}
    for plan in args.plan:
        for name, recipe, overrides in PLANS.get(plan, []):
            lm = overrides.get("text.task") == "language_model"
            minutes = args.lm_minutes if lm else args.minutes
            summary = train_run(name, recipe, overrides, data, out, minutes, args.common)
            if summary.get("stopped_by"):  # a stop signal: the run resumes when the benchmark is started again
                print(f"{name} stopped by {summary['stopped_by']}; run the same command again to resume", flush=True)
                return 1
            entry = {"summary": summary, "overrides": overrides, "recipe": recipe}
            if not lm:
                entry["test"] = test_scores(out / name, data, "fr" if name.endswith("-fr") else "de")
            results[name] = {**results.get(name, {}), **entry}
            write_text_atomic(record, json.dumps(results, indent=1))
    if "speed" in args.plan:
        sources = read_lines(data / "test_2016_flickr.en")
        runs = {name: out / name for name in ("resmlp-de", "transformer-de") if (out / name).is_dir()}
        for name, speed in decoding_speed(runs, sources).items():
            results.setdefault(name, {})["speed"] = speed
        write_text_atomic(record, json.dumps(results, indent=1))
    done = {n: r for n, r in results.items() if "summary" in r}
    write_text_atomic(out / "translation.md", markdown(done, cpu_model()))
    draw_translation([RunDir(out / name) for name in done], out / "translation_curves.png")
    print((out / "translation.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
