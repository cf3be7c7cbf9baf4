"""Training a translator or a language model (paper section 3.6) on the run machinery the image runs use: the
typed config (`text.*`, `model.*`, `optim.*`, `budget.*`), the run directory (config.yaml, metrics.jsonl,
checkpoints/, summary.json, TensorBoard), the lr schedule, bf16 autocast, the time budget, stop signals and
exact resume (mid-epoch too), and DDP under torchrun (each process takes its share of the epoch's batches).

What differs from images: a joint subword tokenizer is trained on the training split first (tokenizer.model in
the run directory); batches hold about `text.max_tokens` tokens of sentences of similar length; the loss is
label-smoothed cross-entropy per target token (`data.label_smoothing`); validation reports loss, perplexity and
greedy BLEU/chrF (sacreBLEU), and the best checkpoint is the one with the best validation BLEU (a language
model: the lowest validation loss).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..checkpoint import TEXT_FORMAT, atomic_save
from ..config import TrainConfig, config_to_dict, save_config
from ..data.text import (
    PAD_ID,
    ParallelCorpus,
    SubwordTokenizer,
    TextDataError,
    TokenBatches,
    collate_lm,
    collate_pairs,
    eval_batches,
    filter_long,
    pair_length,
    read_monolingual,
    read_parallel,
    train_tokenizer,
)
from ..deploy.translate import TOKENIZER, read_text_checkpoint, score, translate_ids
from ..device import auto_precision
from ..files import remove_stale_temporaries
from ..models.sequence import SequenceModel, create_seq_model, seq_model_args
from ..optim import CosineWarmupSchedule, build_optimizer
from ..rundir import RunDir
from . import distributed as dist
from .budget import plan_steps
from .checkpointing import rng_state, seed_everything, set_rng_state
from .engine import autocast
from .lock import run_lock
from .loop import MetricsLog
from .preempt import StepGate, StopSignals, signal_name


@dataclass
class TextData:
    """The tokenised splits: train and val as (source ids, target ids) pairs (a language model: no source),
    the validation sentences as text (for BLEU), and how many training pairs were too long for the model."""

    tokenizer: SubwordTokenizer
    train: list[tuple[list[int], list[int]]]
    val: list[tuple[list[int], list[int]]]
    val_text: list[tuple[str, str]]
    dropped_long: int
    corpus: ParallelCorpus


@dataclass
class TextProgress:
    planned_epochs: float
    epoch: int = 0  # epochs done
    step: int = 0  # optimizer steps done in the current epoch (a mid-epoch checkpoint)
    loss_sum: float = 0.0  # target tokens x loss, this epoch so far
    tokens: int = 0  # target tokens this epoch so far
    best: Optional[float] = None  # best validation BLEU (language model: lowest validation loss)
    wall_time_s: float = 0.0
    stopped_by: Optional[int] = None
    tokens_per_s: float = 0.0  # of the last epoch trained in this session
    rows: list[dict[str, Any]] = field(default_factory=list)


def model_overrides(cfg: TrainConfig) -> dict[str, Any]:
    """The model fields a sequence model takes (drop_path_rate is an image-model field: it must be 0)."""
    args = cfg.model.overrides()
    if args.pop("drop_path_rate", 0.0):
        raise ValueError("model.drop_path_rate: sequence models use model.dropout; set model.drop_path_rate=0")
    if cfg.optim.lookahead or cfg.optim.norm_lr_scale != 1.0:
        raise ValueError("optim.lookahead / optim.norm_lr_scale: image runs only; a text run keeps them off")
    try:
        seq_model_args(cfg.model.name, **args)
    except ValueError as e:
        raise ValueError(f"model: {e}") from None
    return args


def read_corpus(cfg: TrainConfig) -> ParallelCorpus:
    if cfg.data.path is None:
        raise TextDataError("data.path: a text run needs --data DIR holding train.<lang> files")
    t, d = cfg.text, cfg.data
    if t.task == "language_model":
        return read_monolingual(Path(d.path), t.tgt_lang, val_split=d.val_split, seed=d.split_seed)
    return read_parallel(Path(d.path), t.src_lang, t.tgt_lang, val_split=d.val_split, seed=d.split_seed)


def prepare_data(cfg: TrainConfig, run_dir: RunDir, max_len: int, *, resume: bool) -> TextData:
    """Read the corpus, train the tokenizer on the training split (or load the run's own on resume) and encode."""
    corpus = read_corpus(cfg)
    lm = cfg.text.task == "language_model"
    path = run_dir.root / TOKENIZER
    if resume and path.is_file():
        tokenizer = SubwordTokenizer.load(path)
    else:
        texts = [t for _, t in corpus.train] if lm else [s for pair in corpus.train for s in pair]
        tokenizer = train_tokenizer(texts, cfg.text.vocab_size, model_type=cfg.text.subword_model, seed=cfg.run.seed)
        if dist.is_main():
            tokenizer.save(path)

    def encode(pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        tgt = tokenizer.encode_batch([t for _, t in pairs])
        src = [[] for _ in pairs] if lm else tokenizer.encode_batch([s for s, _ in pairs])
        return list(zip(src, tgt))

    train, val = encode(corpus.train), encode(corpus.val)
    kept, dropped = filter_long(train, max_len)
    val_kept, _ = filter_long(val, max_len)
    return TextData(tokenizer, [train[i] for i in kept], [val[i] for i in val_kept], corpus.val, dropped, corpus)


def collate(pairs: list[tuple[list[int], list[int]]], lm: bool) -> tuple[torch.Tensor, ...]:
    """Translation: (src, tgt_in, tgt_out); a language model: (inputs, targets)."""
    return collate_lm([t for _, t in pairs]) if lm else collate_pairs(pairs)


def loss_of(
    model: torch.nn.Module, batch: tuple[torch.Tensor, ...], *, label_smoothing: float
) -> tuple[torch.Tensor, int]:
    """Mean label-smoothed cross-entropy over the target tokens of `batch` (padding ignored), and their count."""
    *inputs, targets = batch
    logits = model(*inputs)
    loss = F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=PAD_ID, label_smoothing=label_smoothing
    )
    return loss, int((targets != PAD_ID).sum())


@dataclass
class TextRun:
    """The wired parts of a text run."""

    cfg: TrainConfig
    run_dir: RunDir
    data: TextData
    model: SequenceModel  # unwrapped (what checkpoints hold)
    step_model: torch.nn.Module  # under DDP when several processes train
    optimizer: torch.optim.Optimizer
    schedule: CosineWarmupSchedule
    batches: TokenBatches
    steps_per_epoch: int
    device: torch.device
    precision: str
    rank: int
    world: int

    @property
    def lm(self) -> bool:
        return self.cfg.text.task == "language_model"

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's batches of `epoch` (the same number on every process)."""
        order = self.batches.epoch(epoch)
        per_process = len(order) // self.world
        return order[self.rank :: self.world][:per_process]


def build_text_run(
    cfg: TrainConfig, run_dir: RunDir, device: torch.device, rank: int, world: int, *, resume: bool
) -> TextRun:
    args = model_overrides(cfg)
    max_len = seq_model_args(cfg.model.name, **args)["max_len"]
    data = prepare_data(cfg, run_dir, max_len, resume=resume)
    if not data.train:
        raise TextDataError(f"{cfg.data.path}: no training pair fits model.max_len={max_len}")
    model = create_seq_model(cfg.model.name, **args, vocab_size=data.tokenizer.vocab_size).to(device)
    o = cfg.optim
    optimizer = build_optimizer(
        model, name=o.name, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum, skip=("pos_embed",)
    )
    batches = TokenBatches([pair_length(s, t) for s, t in data.train], cfg.text.max_tokens, cfg.run.seed)
    steps_per_epoch = max(1, len(batches.epoch(0)) // world)
    schedule = CosineWarmupSchedule(
        optimizer,
        total_steps=o.epochs * steps_per_epoch,
        warmup_steps=round(o.warmup_epochs * steps_per_epoch),
        base_lr=o.lr,
        warmup_lr=o.warmup_lr,
        min_lr=o.min_lr,
        decay=o.sched,
    )
    precision = auto_precision(cfg.run.precision, device)
    return TextRun(
        cfg, run_dir, data, model, dist.wrap(model, device), optimizer, schedule, batches, steps_per_epoch, device,
        precision, rank, world,
    )  # fmt: skip


def train_text_epoch(run: TextRun, progress: TextProgress, gate: StepGate, steps: int) -> bool:
    """Train epoch `progress.epoch` from step `progress.step` up to `steps`; False when a stop signal (or the
    checkpoint timer) ended it early with a checkpoint written."""
    cfg = run.cfg
    run.step_model.train()
    order = run.epoch_batches(progress.epoch)
    pairs = run.data.train
    clip = cfg.optim.max_grad_norm if cfg.optim.name != "lamb" else None
    torch.manual_seed(cfg.run.seed * 100_003 + progress.epoch * 10_007 + progress.step)  # dropout, resumable
    start, seen = time.perf_counter(), 0
    for i in range(progress.step, min(steps, len(order))):
        batch = tuple(t.to(run.device) for t in collate([pairs[j] for j in order[i]], run.lm))
        with autocast(run.device, run.precision):
            loss, tokens = loss_of(run.step_model, batch, label_smoothing=cfg.data.label_smoothing)
        if not torch.isfinite(loss):
            raise ValueError(f"loss is {loss.item()} at epoch {progress.epoch}, step {i}: lower optim.lr or use fp32")
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), clip)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.schedule.step()
        progress.step = i + 1
        progress.loss_sum += loss.item() * tokens
        progress.tokens += tokens
        seen += tokens
        if cfg.run.progress and dist.is_main() and (i + 1) % 50 == 0:
            rate = seen * run.world / max(time.perf_counter() - start, 1e-9)
            print(
                f"  epoch {progress.epoch + 1} step {i + 1}/{steps} loss {progress.loss_sum / progress.tokens:.3f} "
                f"{rate:.0f} tgt tok/s",
                flush=True,
            )
        decision = gate.poll()
        if decision.stop is not None or decision.save:
            write_text_checkpoint(run, progress)
            gate.saved()
            if decision.stop is not None:
                progress.stopped_by = decision.stop
                return False
    progress.tokens_per_s = seen * run.world / max(time.perf_counter() - start, 1e-9)
    return True


@torch.no_grad()
def validate(run: TextRun, *, bleu: bool) -> dict[str, float]:
    """Validation loss (no smoothing) and perplexity; with `bleu`, greedy BLEU and chrF of the translations."""
    run.model.eval()
    pairs = run.data.val
    sums = torch.zeros(2, dtype=torch.float64)
    mine = eval_batches([pair_length(s, t) for s, t in pairs], run.cfg.text.max_tokens)[run.rank :: run.world]
    for batch_idx in mine:
        batch = tuple(t.to(run.device) for t in collate([pairs[j] for j in batch_idx], run.lm))
        with autocast(run.device, run.precision):
            loss, tokens = loss_of(run.model, batch, label_smoothing=0.0)
        sums += torch.tensor([loss.item() * tokens, tokens], dtype=torch.float64)
    sums = dist.all_reduce_sum(sums.to(run.device)).cpu()
    val_loss = float(sums[0] / sums[1].clamp_min(1))
    row = {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0))}
    if bleu and not run.lm and dist.is_main():
        sources = run.data.tokenizer.encode_batch([s for s, _ in run.data.val_text])
        with autocast(run.device, run.precision):
            hyps = translate_ids(run.model, sources, beam=1, max_tokens=run.cfg.text.max_tokens, device=run.device)
        scores = score([run.data.tokenizer.decode(h) for h in hyps], [r for _, r in run.data.val_text])
        row.update(val_bleu=scores["bleu"], val_chrf=scores["chrf"])
    return row


def write_text_checkpoint(run: TextRun, progress: TextProgress, *, best: bool = False) -> None:
    """checkpoints/last.pt (previous.pt kept) with everything a resume needs; best.pt holds the model only."""
    if not dist.is_main():
        return
    record = {
        "format": TEXT_FORMAT,
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "spec": run.model.spec.to_dict(),
        "config": config_to_dict(run.cfg),
        "epoch": progress.epoch,
        "step": progress.step,
    }
    if best:
        atomic_save(record, run.run_dir.best)
        return
    record.update(
        optimizer=run.optimizer.state_dict(),
        schedule=run.schedule.state_dict(),
        rng=rng_state(),
        progress={
            "planned_epochs": progress.planned_epochs,
            "loss_sum": progress.loss_sum,
            "tokens": progress.tokens,
            "best": progress.best,
            "wall_time_s": progress.wall_time_s,
        },
    )
    atomic_save(record, run.run_dir.last, keep_previous=run.run_dir.previous)


def restore_text(run: TextRun, path: Path) -> TextProgress:
    ckpt = read_text_checkpoint(path)
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.schedule.load_state_dict(ckpt["schedule"])
    set_rng_state(ckpt["rng"])
    p = ckpt["progress"]
    return TextProgress(
        planned_epochs=p["planned_epochs"],
        epoch=ckpt["epoch"],
        step=ckpt["step"],
        loss_sum=p["loss_sum"],
        tokens=p["tokens"],
        best=p["best"],
        wall_time_s=p["wall_time_s"],
    )


def refit(run: TextRun, progress: TextProgress, elapsed_s: float) -> None:
    """A time-budgeted run's plan after each epoch: as many (possibly fractional) epochs as the budget holds
    at the pace so far, at most optim.epochs; the lr schedule ends with the plan."""
    limit = run.cfg.budget.time_limit_min
    if not (limit and run.cfg.budget.fit_to_time_limit and progress.epoch):
        return
    per_epoch = elapsed_s / progress.epoch
    fitted = min(float(run.cfg.optim.epochs), progress.epoch + max(0.0, limit * 60 - elapsed_s) / per_epoch)
    fitted = max(fitted, float(progress.epoch))
    if abs(fitted - progress.planned_epochs) > 1e-6:
        progress.planned_epochs = fitted
        run.schedule.end_at(plan_steps(fitted, run.steps_per_epoch))


def run_text_epochs(run: TextRun, progress: TextProgress, gate: StepGate) -> None:
    cfg = run.cfg
    logger = MetricsLog(run.run_dir, cfg.run.tensorboard) if dist.is_main() else None
    t0 = time.perf_counter() - progress.wall_time_s
    while progress.epoch < progress.planned_epochs:
        planned_steps = plan_steps(progress.planned_epochs, run.steps_per_epoch)
        steps = min(run.steps_per_epoch, planned_steps - progress.epoch * run.steps_per_epoch)
        epoch_start = time.perf_counter()
        if not train_text_epoch(run, progress, gate, steps):
            break
        row = {
            "epoch": progress.epoch + 1,
            "train_loss": progress.loss_sum / max(progress.tokens, 1),
            "lr": run.optimizer.param_groups[0]["lr"],
            "tokens_per_s": progress.tokens_per_s,
            "epoch_time_s": time.perf_counter() - epoch_start,
        }
        if steps < run.steps_per_epoch:
            row["epoch_fraction"] = steps / run.steps_per_epoch
        last = progress.epoch + 1 >= progress.planned_epochs
        every = cfg.text.bleu_every
        eval_start = time.perf_counter()
        row.update(validate(run, bleu=bool(every) and ((progress.epoch + 1) % every == 0 or last)))
        row["eval_time_s"] = time.perf_counter() - eval_start
        progress.epoch, progress.step, progress.loss_sum, progress.tokens = progress.epoch + 1, 0, 0.0, 0
        row["wall_time_s"] = progress.wall_time_s = time.perf_counter() - t0
        improved = _improved(run, progress, row)
        if dist.is_main():
            logger.log(row)
            progress.rows.append(row)
            print(epoch_text_line(row, progress.planned_epochs), flush=True)
        if improved:
            write_text_checkpoint(run, progress, best=True)
        refit(run, progress, row["wall_time_s"])
        write_text_checkpoint(run, progress)
        gate.saved()
        limit = cfg.budget.time_limit_min
        if limit and progress.wall_time_s >= limit * 60 and progress.epoch < progress.planned_epochs:
            print(f"time limit of {limit} min reached after epoch {progress.epoch}")
            break
        progress.stopped_by = gate.poll().stop
        if progress.stopped_by is not None:
            break
    progress.wall_time_s = time.perf_counter() - t0


def _improved(run: TextRun, progress: TextProgress, row: dict[str, Any]) -> bool:
    """Whether this epoch's model is the best so far: higher validation BLEU, or (language model, or no BLEU
    this epoch and none yet) lower validation loss."""
    key, sign = ("val_bleu", 1.0) if "val_bleu" in row else ("val_loss", -1.0)
    value = sign * row[key]
    if progress.best is None or value > progress.best:
        progress.best = value
        return True
    return False


def epoch_text_line(row: dict[str, Any], planned: float) -> str:
    bleu = f"  val BLEU {row['val_bleu']:.2f}  chrF {row['val_chrf']:.1f}" if "val_bleu" in row else ""
    return (
        f"epoch {row['epoch']}/{math.ceil(planned)}  train loss {row['train_loss']:.3f}  val loss {row['val_loss']:.3f}"
        f"  ppl {row['val_ppl']:.2f}{bleu}  {row['tokens_per_s']:.0f} tgt tok/s  {row['wall_time_s'] / 60:.1f} min"
    )


def train_text(
    cfg: TrainConfig, run_dir: RunDir, device: torch.device, rank: int, world: int, *, resume: bool
) -> dict[str, Any]:
    """Train (or resume) a text run in `run_dir`; its summary (also summary.json)."""
    with run_lock(run_dir.root) if dist.is_main() else contextlib.nullcontext():
        if dist.is_main():
            run_dir.checkpoints.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir.config)
            remove_stale_temporaries(run_dir.checkpoints)
        seed_everything(cfg.run.seed + rank)
        resume_from = _resume_file(run_dir) if resume else None
        run = build_text_run(cfg, run_dir, device, rank, world, resume=resume_from is not None)
        progress = restore_text(run, resume_from) if resume_from else TextProgress(planned_epochs=cfg.optim.epochs)
        if dist.is_main():
            print(start_text_line(run), flush=True)
        with StopSignals() as signals:
            gate = StepGate(signals, every_min=cfg.run.checkpoint_every_min, device=device)
            run_text_epochs(run, progress, gate)
        summary = summarize_text(run, progress)
        if dist.is_main():
            run_dir.write_summary(summary)
        return summary


def _resume_file(run_dir: RunDir) -> Optional[Path]:
    for path in (run_dir.last, run_dir.previous):
        if path.is_file():
            return path
    raise TextDataError(f"{run_dir.root}: no checkpoints/last.pt or previous.pt to resume from")


def start_text_line(run: TextRun) -> str:
    d = run.data
    n_params = sum(p.numel() for p in run.model.parameters())
    what = "language model" if run.lm else f"{run.cfg.text.src_lang}->{run.cfg.text.tgt_lang}"
    carved = " (carved from train)" if d.corpus.val_carved else ""
    return (
        f"run {run.run_dir.root}: {run.model.spec.name} {what} ({n_params:,} params), vocabulary "
        f"{d.tokenizer.vocab_size}, {len(d.train)} train / {len(d.val)} val{carved} sentence pairs"
        f" ({d.dropped_long} longer than model.max_len left out), {run.world} process(es) on {run.device}, "
        f"{run.precision}, ~{run.cfg.text.max_tokens} tokens a batch, {run.steps_per_epoch} steps an epoch"
    )


def summarize_text(run: TextRun, progress: TextProgress) -> dict[str, Any]:
    rows = run.run_dir.read_metrics() if dist.is_main() else progress.rows
    last = rows[-1] if rows else {}
    bleus = [r["val_bleu"] for r in rows if "val_bleu" in r]
    return {
        "run_dir": str(run.run_dir.root),
        "task": run.cfg.text.task,
        "model": run.model.spec.name,
        "params": sum(p.numel() for p in run.model.parameters()),
        "epochs": progress.epoch,
        "best_val_bleu": max(bleus) if bleus else None,
        "final_val_bleu": last.get("val_bleu"),
        "best_val_loss": min((r["val_loss"] for r in rows), default=None),
        "final_val_ppl": last.get("val_ppl"),
        "tokens_per_s": sum(r["tokens_per_s"] for r in rows) / len(rows) if rows else None,
        "wall_time_s": progress.wall_time_s,
        "stopped_by": None if progress.stopped_by is None else signal_name(progress.stopped_by),
    }


__all__ = ["TextData", "TextRun", "train_text"]
