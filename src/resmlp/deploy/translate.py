"""Translating with a trained sequence model: load a run (model + its tokenizer), translate lines in batches,
score them with sacreBLEU (BLEU and chrF on detokenised text, each with its signature), and the
`resmlp eval --src --ref` report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..checkpoint import TEXT_FORMAT
from ..data.text import SubwordTokenizer, TextDataError, collate_sources, eval_batches, read_lines
from ..files import write_text_atomic
from ..models.decoding import beam_search
from ..models.sequence import SeqSpec, SequenceModel, Translator
from ..rundir import RunDir
from ..weights import torch_load_safely

TOKENIZER = "tokenizer.model"  # in the run directory, beside checkpoints/


@dataclass
class TextModel:
    """A trained sequence model with what it needs to read and write text."""

    model: SequenceModel
    tokenizer: SubwordTokenizer
    config: dict[str, Any]  # the run's config (text.src_lang, text.tgt_lang, text.beam, ...)
    path: Path  # the checkpoint

    @property
    def text(self) -> dict[str, Any]:
        return self.config.get("text", {})


def text_checkpoint_path(path: str | Path) -> Path:
    """A run directory's best (else last) checkpoint, or the file itself."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        for cand in (run.best, run.last):
            if cand.is_file():
                return cand
        raise TextDataError(f"{path}: run directory has no checkpoints/best.pt or checkpoints/last.pt")
    if not path.is_file():
        raise TextDataError(f"{path}: no such checkpoint file or run directory")
    return path


def is_text_model(path: str | Path) -> bool:
    """Whether `path` is a text run directory or checkpoint (train/text.py), not an image model's."""
    try:
        ckpt = torch_load_safely(text_checkpoint_path(path))
    except (TextDataError, ValueError, OSError):
        return False
    return isinstance(ckpt, dict) and ckpt.get("format") == TEXT_FORMAT


def read_text_checkpoint(path: Path) -> dict[str, Any]:
    ckpt = torch_load_safely(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != TEXT_FORMAT:
        raise TextDataError(f"{path}: not a translation or language-model checkpoint (format {TEXT_FORMAT!r})")
    return ckpt


def load_text_model(path: str | Path, device: str | torch.device = "cpu") -> TextModel:
    """The model of a text run directory or checkpoint file, with the run's tokenizer (tokenizer.model in the run
    directory, i.e. beside checkpoints/)."""
    ckpt_path = text_checkpoint_path(path)
    ckpt = read_text_checkpoint(ckpt_path)
    try:
        model = SeqSpec.from_dict(ckpt["spec"]).build()
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError) as e:
        raise TextDataError(f"{ckpt_path}: the weights do not fit the model the checkpoint describes ({e})") from None
    tokenizer = SubwordTokenizer.load(ckpt_path.parent.parent / TOKENIZER)
    return TextModel(model.to(device).eval(), tokenizer, ckpt.get("config", {}), ckpt_path)


@torch.no_grad()
def translate_ids(
    model: Translator,
    sources: Sequence[list[int]],
    *,
    beam: int = 4,
    len_penalty: float = 1.0,
    max_tokens: int = 4096,
    device: torch.device | str = "cpu",
) -> list[list[int]]:
    """Target ids for every source (ids without EOS), in the sources' order; sentences are batched by length
    (longest first), a source longer than the model's positions is cut to fit."""
    model.eval()
    limit = model.max_len - 1  # the EOS the collate appends takes one
    cut = [list(s[:limit]) for s in sources]
    out: list[list[int]] = [[] for _ in cut]
    for batch in eval_batches([len(s) + 1 for s in cut], max_tokens):
        src = collate_sources([cut[i] for i in batch]).to(device)
        for i, hyp in zip(batch, beam_search(model, src, beam=beam, len_penalty=len_penalty)):
            out[i] = hyp
    return out


def translate_lines(tm: TextModel, lines: Sequence[str], *, beam: int = 4, len_penalty: float = 1.0) -> list[str]:
    """Detokenised translations of `lines`, one per line, in order."""
    ids = translate_ids(tm.model, tm.tokenizer.encode_batch(list(lines)), beam=beam, len_penalty=len_penalty)
    return [tm.tokenizer.decode(h) for h in ids]


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Corpus BLEU and chrF (sacreBLEU's defaults: 13a tokenisation, exp smoothing; chrF n=6, beta=2) with
    their signatures."""
    try:
        import sacrebleu  # noqa: PLC0415 - only text runs need it
    except ImportError:
        raise TextDataError("scoring translations needs sacrebleu: pip install 'resmlp[text]'") from None

    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(list(hypotheses), [list(references)])
    c = chrf.corpus_score(list(hypotheses), [list(references)])
    return {
        "bleu": b.score,
        "chrf": c.score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def evaluate_translation(
    path: str | Path,
    src_file: str | Path,
    ref_file: str | Path,
    *,
    beam: Optional[int] = None,
    len_penalty: Optional[float] = None,
    out: str | Path | None = None,
    samples: int = 3,
) -> dict[str, Any]:
    """Translate `src_file` with the model at `path` and score against `ref_file`; writes
    translate_eval.json and the translations (one a line) into `out` (default: the run directory)."""
    tm = load_text_model(path)
    sources, refs = read_lines(Path(src_file)), read_lines(Path(ref_file))
    if len(sources) != len(refs):
        raise TextDataError(
            f"{src_file} has {len(sources)} lines, {ref_file} has {len(refs)}: "
            "the two files must be aligned line by line"
        )
    beam = beam or tm.text.get("beam", 4)
    len_penalty = tm.text.get("len_penalty", 1.0) if len_penalty is None else len_penalty
    start = time.perf_counter()
    hyps = translate_lines(tm, sources, beam=beam, len_penalty=len_penalty)
    seconds = time.perf_counter() - start
    result = {
        "checkpoint": str(tm.path),
        "src": str(src_file),
        "ref": str(ref_file),
        "sentences": len(sources),
        "beam": beam,
        "len_penalty": len_penalty,
        "sentences_per_s": len(sources) / max(seconds, 1e-9),
        **score(hyps, refs),
        "samples": [{"src": s, "hyp": h, "ref": r} for s, h, r in list(zip(sources, hyps, refs))[:samples]],
    }
    out_dir = Path(out) if out else tm.path.parent.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(src_file).name
    write_text_atomic(out_dir / f"{stem}.beam{beam}.hyp", "\n".join(hyps) + "\n")
    write_text_atomic(out_dir / "translate_eval.json", json.dumps(result, indent=1))
    return {**result, "hypotheses_file": str(out_dir / f"{stem}.beam{beam}.hyp")}
