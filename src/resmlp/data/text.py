"""Text data for the paper's machine-translation experiment (ResMLP section 3.6, here on Multi30k): parallel corpora
read from plain text files, a joint subword vocabulary, batches by token count, and the padded tensors a
sequence-to-sequence model (or a decoder-only language model) trains on.

A corpus folder holds one sentence a line, aligned by line across languages:
``train.<src>``, ``train.<tgt>`` and optionally ``val.<src>``, ``val.<tgt>`` (else validation is carved
from train). The tokenizer is one sentencepiece model shared by both languages, so the model may tie its
source and target embeddings; its special ids are fixed (`PAD_ID`..`EOS_ID`) so collation and the model
agree without carrying them around.
"""

from __future__ import annotations

import codecs
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor

from ..files import write_atomic

PAD_ID = 0  # the same ids as models.sequence (PAD_ID) and models.decoding (BOS_ID, EOS_ID)
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
MIN_VOCAB_SIZE = 8  # the 4 special ids plus a few pieces; below this nothing useful can be encoded
MODEL_TYPES = ("unigram", "bpe", "char", "word")
_BATCHES_PER_CHUNK = 100  # sort by length inside chunks of ~100 batches: low padding, still random batches


class TextDataError(ValueError):
    """Bad user input (a file, a folder, a setting); the message is one line naming it and what was expected."""


def _sentencepiece():
    """The sentencepiece module (the `text` extra: translation and language models only)."""
    try:
        import sentencepiece  # noqa: PLC0415
    except ImportError:
        raise TextDataError("text runs need sentencepiece and sacrebleu: pip install 'resmlp[text]'") from None
    return sentencepiece


# --------------------------------------------------------------------------- reading text files


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file, each stripped of surrounding whitespace (a line may end up empty).

    Lines are split on ``\\n`` only, not on the other characters `str.splitlines` treats as breaks
    (U+2028, U+0085, ...), which can occur inside a sentence and would misalign a parallel corpus.
    A UTF-8 byte-order mark at the start is dropped.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TextDataError(f"{path}: file not found") from None
    except OSError as e:
        raise TextDataError(f"{path}: cannot read ({e.strerror or e})") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise TextDataError(f"{path}: line {line} is not valid UTF-8 ({e.reason})") from None
    lines = text.split("\n")
    if lines[-1] == "":  # the newline ending the last line does not start another line
        lines.pop()
    return [line.strip() for line in lines]


@dataclass(frozen=True)
class ParallelCorpus:
    """Sentence pairs ``(source, target)`` of a translation corpus, split into train and validation."""

    src_lang: str
    tgt_lang: str
    train: list[tuple[str, str]]
    val: list[tuple[str, str]]
    val_carved: bool  # True: val was a random part of the train files (no val.* files were given)
    dropped_empty: int  # pairs dropped (train and val together) because one side was an empty line


def _read_split(root: Path, split: str, src_lang: str, tgt_lang: str) -> tuple[list[tuple[str, str]], int]:
    """The pairs of ``split.<src>``/``split.<tgt>`` with no empty side, and how many were dropped."""
    src_path, tgt_path = root / f"{split}.{src_lang}", root / f"{split}.{tgt_lang}"
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise TextDataError(
            f"{root}: {src_path.name} has {len(src)} lines, {tgt_path.name} has {len(tgt)}: "
            "the two files must be aligned line by line"
        )
    pairs = [(s, t) for s, t in zip(src, tgt) if s and t]
    return pairs, len(src) - len(pairs)


def _check_train_files(root: Path, src_lang: str, tgt_lang: str) -> None:
    """Name a missing train file together with the train files the folder does have (a language-code typo
    such as ``en`` vs ``eng`` is then visible in the message)."""
    for lang in (src_lang, tgt_lang):
        if not (root / f"train.{lang}").is_file():
            present = sorted(p.name for p in root.glob("train.*") if p.is_file())
            found = ", ".join(present) if present else "none"
            raise TextDataError(f"{root / f'train.{lang}'}: file not found (train files in {root}: {found})")


def _carve(
    pairs: list[tuple[str, str]], val_split: float, seed: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Split off a seeded random `val_split` fraction (at least one pair); both parts keep the file order."""
    if not 0 < val_split < 1:
        raise TextDataError(f"val_split must be in (0, 1) to carve validation pairs from train, got {val_split}")
    n = len(pairs)
    n_val = max(1, round(val_split * n))
    if n_val >= n:
        raise TextDataError(f"cannot carve {n_val} validation pairs from {n} training pairs: give val.* files")
    generator = torch.Generator().manual_seed(seed)
    held_out = set(torch.randperm(n, generator=generator)[:n_val].tolist())
    train = [p for i, p in enumerate(pairs) if i not in held_out]
    val = [p for i, p in enumerate(pairs) if i in held_out]
    return train, val


def read_parallel(
    root: Path, src_lang: str, tgt_lang: str, *, val_split: float = 0.05, seed: int = 0
) -> ParallelCorpus:
    """Read the corpus folder `root` (layout in the module docstring).

    Without ``val.*`` files a seeded `val_split` fraction of train becomes validation (the same pairs for
    the same seed, so a resumed or repeated run validates on the same sentences). Pairs with an empty side
    are dropped: they teach nothing and an empty source would decode to an empty hypothesis.
    """
    root = Path(root)
    if not root.is_dir():
        raise TextDataError(f"{root}: not a directory (expected a folder with train.{src_lang} and train.{tgt_lang})")
    if not src_lang or not tgt_lang or src_lang == tgt_lang:
        raise TextDataError(f"need two different language codes, got src_lang={src_lang!r}, tgt_lang={tgt_lang!r}")
    _check_train_files(root, src_lang, tgt_lang)
    train, dropped = _read_split(root, "train", src_lang, tgt_lang)
    if not train:
        raise TextDataError(f"{root}: train.{src_lang}/train.{tgt_lang} hold no pair with both sides non-empty")

    val_files = [(root / f"val.{lang}").is_file() for lang in (src_lang, tgt_lang)]
    if all(val_files):
        val, dropped_val = _read_split(root, "val", src_lang, tgt_lang)
        return ParallelCorpus(src_lang, tgt_lang, train, val, val_carved=False, dropped_empty=dropped + dropped_val)
    if any(val_files):
        have, lack = (src_lang, tgt_lang) if val_files[0] else (tgt_lang, src_lang)
        raise TextDataError(
            f"{root}: has val.{have} but no val.{lack}: give both validation files or neither "
            "(then validation is carved from train)"
        )
    train, val = _carve(train, val_split, seed)
    return ParallelCorpus(src_lang, tgt_lang, train, val, val_carved=True, dropped_empty=dropped)


def read_monolingual(root: Path, lang: str, *, val_split: float = 0.05, seed: int = 0) -> ParallelCorpus:
    """One language of the corpus folder, for a language model: `train.<lang>` (and `val.<lang>`, else a
    carved `val_split`), as pairs with an empty source side; empty lines dropped."""
    root = Path(root)
    if not root.is_dir():
        raise TextDataError(f"{root}: not a directory (expected a folder with train.{lang})")
    if not (root / f"train.{lang}").is_file():
        present = ", ".join(sorted(p.name for p in root.glob("train.*") if p.is_file())) or "none"
        raise TextDataError(f"{root / f'train.{lang}'}: file not found (train files in {root}: {present})")

    def sentences(split: str) -> list[tuple[str, str]]:
        return [("", line) for line in read_lines(root / f"{split}.{lang}") if line]

    train = sentences("train")
    if not train:
        raise TextDataError(f"{root / f'train.{lang}'}: no non-empty line")
    dropped = len(read_lines(root / f"train.{lang}")) - len(train)
    if (root / f"val.{lang}").is_file():
        return ParallelCorpus("", lang, train, sentences("val"), val_carved=False, dropped_empty=dropped)
    train, val = _carve(train, val_split, seed)
    return ParallelCorpus("", lang, train, val, val_carved=True, dropped_empty=dropped)


# --------------------------------------------------------------------------- subword tokenizer


class SubwordTokenizer:
    """A sentencepiece model shared by source and target, with pad/unk/bos/eos at ids 0/1/2/3.

    Built from the serialized model proto (`train_tokenizer`, `load`); `model_proto` gives those bytes
    back, e.g. to store the tokenizer inside a checkpoint.
    """

    def __init__(self, model_proto: bytes) -> None:
        if not model_proto:
            raise ValueError("empty sentencepiece model proto")
        self._sp = _sentencepiece().SentencePieceProcessor(model_proto=model_proto)
        self._proto = bytes(model_proto)
        ids = (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
        if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise ValueError(
                f"sentencepiece model has pad/unk/bos/eos ids {ids}, expected {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}"
            )

    @classmethod
    def load(cls, path: Path) -> SubwordTokenizer:
        """The tokenizer saved at `path` (a sentencepiece ``.model`` file trained by `train_tokenizer`)."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise TextDataError(f"{path}: tokenizer file not found") from None
        except OSError as e:
            raise TextDataError(f"{path}: cannot read tokenizer ({e.strerror or e})") from None
        try:
            return cls(data)
        except (RuntimeError, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e).strip() else "cannot be parsed"
            raise TextDataError(f"{path}: not a sentencepiece model of this package ({reason})") from None

    def save(self, path: Path) -> Path:
        """Write the model atomically (a crash leaves the old file or the new one, never half of one)."""
        return write_atomic(path, lambda tmp: tmp.write_bytes(self._proto))

    @property
    def model_proto(self) -> bytes:
        return self._proto

    @property
    def vocab_size(self) -> int:
        """The real number of pieces, which may be below the requested size for a small corpus."""
        return self._sp.vocab_size()

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    def encode(self, text: str) -> list[int]:
        """Piece ids of `text`, without BOS/EOS (collation adds those where each side needs them)."""
        return self._sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(list(texts)) if texts else []

    def decode(self, ids: Sequence[int]) -> str:
        """Detokenised text of a model output: everything from the first EOS on is cut, PAD and BOS dropped."""
        pieces: list[int] = []
        size = self.vocab_size
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i in (PAD_ID, BOS_ID):
                continue
            if not 0 <= i < size:
                raise ValueError(f"token id {i} is outside the vocabulary (size {size})")
            pieces.append(i)
        return self._sp.decode(pieces)

    def __repr__(self) -> str:
        return f"SubwordTokenizer(vocab_size={self.vocab_size})"


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    seed: int = 0,
) -> SubwordTokenizer:
    """Train a joint sentencepiece model on `texts` (source and target sentences together), in memory.

    Deterministic: the input is read in order on one thread, so the same text gives byte-identical models.
    `vocab_size` is a soft limit (sentencepiece's ``hard_vocab_limit=False``): a corpus too small for it
    gives fewer pieces instead of an error; this does not change the pieces of a corpus large enough.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise TextDataError(f"vocab_size must be >= {MIN_VOCAB_SIZE}, got {vocab_size}")
    if model_type not in MODEL_TYPES:
        raise TextDataError(f"unknown tokenizer model_type {model_type!r}; valid: {list(MODEL_TYPES)}")
    if not 0 < character_coverage <= 1:
        raise TextDataError(f"character_coverage must be in (0, 1], got {character_coverage}")
    sentences = [t for t in texts if t.strip()]
    if not sentences:
        raise TextDataError("no non-empty sentences to train the tokenizer on")
    _sentencepiece().set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
        _train_sentencepiece(sentences, model, vocab_size, model_type, character_coverage)
    except RuntimeError as e:  # e.g. fewer pieces allowed than the corpus has characters
        reason = str(e).strip().splitlines()[0].split("] ")[-1] if str(e).strip() else type(e).__name__
        raise TextDataError(f"cannot train a {model_type} tokenizer with vocab_size={vocab_size}: {reason}") from None
    return SubwordTokenizer(model.getvalue())


def _train_sentencepiece(
    sentences: list[str], model: io.BytesIO, vocab_size: int, model_type: str, character_coverage: float
) -> None:
    """sentencepiece's trainer with this package's special ids, writing the model proto into `model`."""
    _sentencepiece().SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        hard_vocab_limit=False,
        shuffle_input_sentence=False,
        num_threads=1,
        minloglevel=2,  # errors only: sentencepiece otherwise logs every EM step to stderr
    )


# --------------------------------------------------------------------------- batches by token count


def _cut(order: list[int], lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Cut `order` (sorted by length) greedily into batches of at most `max_tokens` padded tokens;
    an example longer than `max_tokens` alone is its own batch."""
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = 0
    for i in order:
        grown = max(longest, lengths[i])
        if batch and (len(batch) + 1) * grown > max_tokens:
            batches.append(batch)
            batch, grown = [], lengths[i]
        batch.append(i)
        longest = grown
    if batch:
        batches.append(batch)
    return batches


def _check_batching(lengths: Sequence[int], max_tokens: int) -> None:
    if max_tokens < 1:
        raise TextDataError(f"max_tokens must be >= 1, got {max_tokens}")
    if any(length < 1 for length in lengths):
        raise ValueError("every example length must be >= 1 (it counts the EOS/BOS token collation adds)")


@dataclass(frozen=True)
class TokenBatches:
    """Training batches of about `max_tokens` padded tokens each, the same for the same (seed, epoch).

    `lengths[i]` is example i's `pair_length`. Batching by tokens rather than by sentences keeps the work
    per step even when sentence lengths vary (the usual recipe for translation, e.g. fairseq's
    ``--max-tokens``). The trainer resumes mid-epoch by recomputing `epoch(e)` and skipping done batches.
    """

    lengths: list[int]
    max_tokens: int
    seed: int = 0

    def __post_init__(self) -> None:
        _check_batching(self.lengths, self.max_tokens)

    def _chunk_size(self) -> int:
        """Examples per length-sorted chunk: ~100 typical batches."""
        mean_length = math.ceil(sum(self.lengths) / max(1, len(self.lengths)))
        return _BATCHES_PER_CHUNK * max(1, self.max_tokens // max(1, mean_length))

    def epoch(self, epoch: int) -> list[list[int]]:
        """The batches (lists of example indices) of `epoch`, in training order; each index once."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        chunk = self._chunk_size()
        batches: list[list[int]] = []
        for start in range(0, len(order), chunk):
            # a stable sort keeps the random order among equal lengths, so batches differ across epochs
            part = sorted(order[start : start + chunk], key=self.lengths.__getitem__)
            batches.extend(_cut(part, self.lengths, self.max_tokens))
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[j] for j in shuffled]


def eval_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Batches for evaluation and decoding: longest first (an out-of-memory shows at once), no shuffling.
    The caller puts the outputs back in the original order."""
    _check_batching(lengths, max_tokens)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return _cut(order, lengths, max_tokens)


# --------------------------------------------------------------------------- collation


def pair_length(src_ids: Sequence[int], tgt_ids: Sequence[int]) -> int:
    """Padded length an example costs: the source gets EOS appended, each target side gets BOS or EOS."""
    return max(len(src_ids) + 1, len(tgt_ids) + 1)


def filter_long(pairs: list[tuple[list[int], list[int]]], max_len: int) -> tuple[list[int], int]:
    """Indices of the pairs whose `pair_length` is at most `max_len`, and how many were dropped."""
    if max_len < 1:
        raise TextDataError(f"max_len must be >= 1, got {max_len}")
    keep = [i for i, (src, tgt) in enumerate(pairs) if pair_length(src, tgt) <= max_len]
    return keep, len(pairs) - len(keep)


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> Tensor:
    """Right-pad `seqs` with `pad_id` into int64 (B, L), L the longest sequence."""
    if not seqs:
        raise ValueError("cannot collate an empty batch")
    out = torch.full((len(seqs), max(len(s) for s in seqs)), pad_id, dtype=torch.int64)
    for row, s in enumerate(seqs):
        out[row, : len(s)] = torch.as_tensor(s, dtype=torch.int64)
    return out


def collate_pairs(
    pairs: Sequence[tuple[list[int], list[int]]],
    *,
    pad_id: int = PAD_ID,
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
) -> tuple[Tensor, Tensor, Tensor]:
    """Teacher-forcing tensors: the decoder reads `tgt_in` and is trained to predict `tgt_out`, the same
    sequence shifted by one. Returns ``src`` (B, S), ``tgt_in`` (B, T), ``tgt_out`` (B, T), int64."""
    src = _pad([list(s) + [eos_id] for s, _ in pairs], pad_id)  # (B, S): x_1..x_n EOS PAD..
    tgt_in = _pad([[bos_id] + list(t) for _, t in pairs], pad_id)  # (B, T): BOS y_1..y_m PAD..
    tgt_out = _pad([list(t) + [eos_id] for _, t in pairs], pad_id)  # (B, T): y_1..y_m EOS PAD..
    return src, tgt_in, tgt_out


def collate_sources(sources: Sequence[list[int]], *, pad_id: int = PAD_ID, eos_id: int = EOS_ID) -> Tensor:
    """Source side alone, as `collate_pairs` builds it, for decoding: int64 (B, S)."""
    return _pad([list(s) + [eos_id] for s in sources], pad_id)  # (B, S): x_1..x_n EOS PAD..


def collate_lm(
    seqs: Sequence[list[int]], *, pad_id: int = PAD_ID, bos_id: int = BOS_ID, eos_id: int = EOS_ID
) -> tuple[Tensor, Tensor]:
    """Inputs and next-token targets for a decoder-only language model on one language: (B, L) each."""
    inputs = _pad([[bos_id] + list(s) for s in seqs], pad_id)  # (B, L): BOS y_1..y_m PAD..
    targets = _pad([list(s) + [eos_id] for s in seqs], pad_id)  # (B, L): y_1..y_m EOS PAD..
    return inputs, targets
