"""Exporting a trained translator to ONNX: the encoder (source ids -> memory) and the decoder step (memory +
the target prefix -> the next token's logits), each checked against the eager model with ONNX Runtime at two
sentence lengths, written with the tokenizer and a config.json into one directory:

    encoder.onnx   src (B, S) int64                                      -> memory (B, S, D), keep (B, S) bool
    decoder.onnx   memory (B, S, D), keep (B, S) bool, prefix (B, T) int64 -> logits (B, V) of position T
    tokenizer.model, config.json (languages, special ids, max_len, beam, len_penalty)

The exported decoder reads the whole prefix at every step (no cache crosses the ONNX boundary); greedy or
beam search around it is a few lines in any language (see docs/translation.md).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..files import write_atomic, write_text_atomic
from ..models.sequence import Memory, Translator
from .onnx import onnxruntime_module
from .trace import quiet
from .translate import TextModel


class _Encoder(nn.Module):
    def __init__(self, model: Translator) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory = self.model.encode(src)
        return memory.x, memory.keep


class _DecoderStep(nn.Module):
    def __init__(self, model: Translator) -> None:
        super().__init__()
        self.model = model

    def forward(self, memory: torch.Tensor, keep: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        return self.model._decode(prefix, Memory(memory, keep))[:, -1]  # (B, T, V) -> the last position's


def _example(model: Translator, batch: int, src_len: int, tgt_len: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, model.vocab_size, (batch, src_len), generator=g)
    src[-1, src_len // 2 :] = 0  # one padded sentence
    prefix = torch.randint(4, model.vocab_size, (batch, tgt_len), generator=g)
    prefix[:, 0] = 2  # BOS
    return src, prefix


def export_translator_onnx(tm: TextModel, out: str | Path, *, tolerance: float = 1e-4, opset: int = 17) -> float:
    """Write the directory `out` (layout in the module docstring); the largest |ONNX - eager| of the checks,
    relative to max(1, max|logit|). A ValueError when it exceeds `tolerance`."""
    if not isinstance(tm.model, Translator):
        raise ValueError(f"{tm.path}: a language model; the ONNX export is for translators")
    model = tm.model.cpu().eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    src, prefix = _example(model, 2, 7, 5, seed=0)
    # in eval mode: the exporter puts a module back into the mode it found it in, submodules included
    encoder, decoder = _Encoder(model).eval(), _DecoderStep(model).eval()
    with torch.no_grad():
        memory, keep = encoder(src)

    def write_encoder(tmp: Path) -> None:
        with quiet(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the max_len check: shapes are checked below
            torch.onnx.export(
                encoder, (src,), str(tmp), input_names=["src"], output_names=["memory", "keep"], opset_version=opset,
                dynamo=False, dynamic_axes={"src": {0: "batch", 1: "src_len"}, "memory": {0: "batch", 1: "src_len"},
                                            "keep": {0: "batch", 1: "src_len"}},
            )  # fmt: skip

    def write_decoder(tmp: Path) -> None:
        with quiet(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                decoder, (memory, keep, prefix), str(tmp), input_names=["memory", "keep", "prefix"],
                output_names=["logits"], opset_version=opset, dynamo=False,
                dynamic_axes={"memory": {0: "batch", 1: "src_len"}, "keep": {0: "batch", 1: "src_len"},
                              "prefix": {0: "batch", 1: "tgt_len"}, "logits": {0: "batch"}},
            )  # fmt: skip

    write_atomic(out / "encoder.onnx", write_encoder)
    write_atomic(out / "decoder.onnx", write_decoder)
    diff = check_onnx(model, out)
    if diff > tolerance:
        raise ValueError(f"{out}: the ONNX translator differs from the eager one by {diff:.2e} (limit {tolerance:g})")
    tm.tokenizer.save(out / "tokenizer.model")
    text = tm.text
    config = {
        "model": model.spec.to_dict(),
        "src_lang": text.get("src_lang"),
        "tgt_lang": text.get("tgt_lang"),
        "pad_id": 0,
        "bos_id": 2,
        "eos_id": 3,
        "max_len": model.max_len,
        "beam": text.get("beam", 4),
        "len_penalty": text.get("len_penalty", 1.0),
    }
    write_text_atomic(out / "config.json", json.dumps(config, indent=1))
    return diff


@torch.no_grad()
def check_onnx(model: Translator, out: Path) -> float:
    """max |ONNX Runtime - eager| of the encoder output and the decoder step's logits at two shapes, relative to
    max(1, max|logit|)."""
    ort = onnxruntime_module()
    enc = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, src_len, tgt_len, seed in ((3, 11, 4, 1), (1, 5, 9, 2)):
        src, prefix = _example(model, batch, src_len, tgt_len, seed)
        memory = model.encode(src)
        expected = model._decode(prefix, memory)[:, -1]
        x, keep = enc.run(None, {"src": src.numpy()})
        logits = dec.run(None, {"memory": x, "keep": keep, "prefix": prefix.numpy()})[0]
        scale = max(1.0, float(expected.abs().max()))
        worst = max(
            worst, float(np.abs(x - memory.x.numpy()).max()), float(np.abs(logits - expected.numpy()).max()) / scale
        )
    return worst
