"""Sequence ResMLP (paper section 3.6, Table 5): a Transformer encoder-decoder with every self-attention
replaced by the ResMLP block, and the Transformer it is compared with, read top to bottom.

Shapes: B = batch, S = source length, T = target length, L = either, D = embedding dim, V = vocabulary.

Encoder block (as the image block, over a sentence instead of a patch grid):
    Z = X + LayerScale_1 * (A[:L, :L] @ Aff_1(X))     # A: max_len x max_len, sliced to the batch's longest
    Y = Z + LayerScale_2 * C GELU(B Aff_2(Z))
Decoder block: the same with A lower-triangular (no token sees a later one), and between the two the
Transformer's encoder-decoder attention kept (paper: "we keep the encoder-decoder attention"):
    Z = X + LayerScale_1 * (tril(A)[:T, :T] @ Aff_1(X))
    Z = Z + LayerScale_c * Attention(LN(Z), memory)
    Y = Z + LayerScale_2 * C GELU(B Aff_2(Z))
Variable lengths (paper): sentences are zero-padded and A is sliced to the longest one of the batch. The
padded positions of the input to A are zeroed, so a sentence's outputs do not depend on what else is in
its batch. Two ablations of the decoder are options: `token_mixing="mlp"` (a causal Mixer-style token
MLP: two triangular maps T -> T -> T with GELU between) and `cross="linear"` (no attention anywhere: the
decoder's A also reads the encoder's outputs by position, a T x S matrix learned like A).

Attention's softmax depends on the scale of its inputs, which Aff does not control, so the queries and the
encoder output (the keys and values) are LayerNorm-ed, and so is the decoder's output, which the tied output
projection reads (an embedding-scale residual stream through Aff alone starts with logits far too large);
every norm inside the ResMLP blocks is Aff.
Embeddings are shared by source, target and output (a joint subword vocabulary), scaled by sqrt(D) as in
fairseq's Transformer, with learned positions.

Decoding is incremental (`start` / `step`): each decoder block keeps what the next position needs, so a step
costs one matrix-vector product per A on the prefix (ResMLP) or one attention row (Transformer), and the
encoder-decoder keys and values are projected once per sentence.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Affine, Mlp, check_choice

PAD_ID = 0  # the padding id of every sequence model (the tokenizer reserves it)
SEQ_TOKEN_MIXINGS = ("linear", "mlp")
CROSS = ("attention", "linear")
Cache = dict[str, Any]  # one decoder block's incremental-decoding state


class SequenceLengthError(ValueError):
    """A sentence longer than the model's `max_len` (its A has no row for it)."""


def check_length(length: int, max_len: int, what: str) -> None:
    if length > max_len:
        raise SequenceLengthError(
            f"{what} of {length} tokens is longer than the model's max_len={max_len}; shorten it or train a "
            f"model with a larger model.max_len"
        )


def causal_mask(rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """(rows, cols) bool, True on and below the diagonal: what position i may read."""
    return torch.ones(rows, cols, dtype=torch.bool, device=device).tril()


class SeqTokenMixing(nn.Module):
    """A over a sequence (B, L, D) -> (B, L, D): out_i = sum_j A[i, j] x_j + b_i, shared by all channels,
    sliced to L. `causal`: only j <= i (the decoder's triangular A)."""

    def __init__(self, max_len: int, *, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.weight = nn.Parameter(torch.empty(max_len, max_len))  # A
        self.bias = nn.Parameter(torch.zeros(max_len))
        with torch.no_grad():  # row i starts as the mean of what it may read (+ noise): context from step one
            rows = torch.ones(max_len, max_len).tril() if causal else torch.ones(max_len, max_len)
            self.weight.copy_(rows / rows.sum(1, keepdim=True))
            self.weight.add_(torch.randn(max_len, max_len) * 0.02)

    def matrix(self, rows: int, cols: int) -> torch.Tensor:
        a = self.weight[:rows, :cols]
        return a.masked_fill(~causal_mask(rows, cols, a.device), 0.0) if self.causal else a

    def forward(self, x: torch.Tensor, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        del keep  # the caller zeroes padded inputs; a linear map needs nothing else
        n = x.shape[1]
        y = F.linear(x.transpose(1, 2), self.matrix(n, n), self.bias[:n])  # (B, D, L) @ A^T -> (B, D, L)
        return y.transpose(1, 2)  # -> (B, L, D)

    def row(self, prefix: torch.Tensor) -> torch.Tensor:
        """The output at the last position of `prefix` (B, t, D) -> (B, 1, D): one matrix-vector product."""
        t = prefix.shape[1]
        a = self.weight[t - 1, :t]  # causal: the last row reads the whole prefix
        return (torch.einsum("j,bjd->bd", a.to(prefix.dtype), prefix) + self.bias[t - 1].to(prefix.dtype))[:, None]


class SeqTokenMlp(nn.Module):
    """The Mixer-style alternative to A: A_2 GELU(A_1 x) over the sequence, both maps L x L (triangular when
    `causal`, so position i still reads only j <= i through hidden positions k <= i)."""

    def __init__(self, max_len: int, *, causal: bool) -> None:
        super().__init__()
        self.fc1 = SeqTokenMixing(max_len, causal=causal)
        self.act = nn.GELU()
        self.fc2 = SeqTokenMixing(max_len, causal=causal)

    def forward(self, x: torch.Tensor, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        # the hidden positions of padding hold GELU(bias): zeroed too, or they would reach the real ones
        return self.fc2(_masked(self.act(self.fc1(x)), keep))


class Attention(nn.Module):
    """Multi-head scaled dot-product attention with its projections (q, k, v, proj: 4 D^2 + 4 D parameters,
    as torch.nn.MultiheadAttention)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, L, D) -> (B, H, L, D/H)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.k(x)), self.heads(self.v(x))

    def attend(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Queries from `x` (B, T, D) over keys/values (B, H, S, D/H); `mask` (B or 1, 1, T, S) True = may attend."""
        q = self.heads(self.q(x))
        y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask)
        b, _, t, _ = y.shape
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))  # (B, H, T, D/H) -> (B, T, D)


@dataclass
class Memory:
    """The encoder's output and which source positions are real."""

    x: torch.Tensor  # (B, S, D), LayerNorm-ed
    keep: torch.Tensor  # (B, S) bool, False at padding

    def attention_mask(self) -> torch.Tensor:
        return self.keep[:, None, None, :]  # (B, 1, 1, S): every query may see the real source tokens

    def select(self, index: torch.Tensor) -> Memory:
        return Memory(self.x.index_select(0, index), self.keep.index_select(0, index))


def layer_scale(dim: int, init: float) -> nn.Parameter:
    return nn.Parameter(torch.full((dim,), init))


def _masked(x: torch.Tensor, keep: Optional[torch.Tensor]) -> torch.Tensor:
    return x if keep is None else x * keep[..., None].to(x.dtype)  # padded positions -> 0


class ResMLPEncoderBlock(nn.Module):
    def __init__(
        self, *, dim: int, max_len: int, mlp_ratio: float, layer_scale_init: float, dropout: float, token_mixing: str
    ) -> None:
        super().__init__()
        self.norm1 = Affine(dim)
        mixing = (
            SeqTokenMixing if check_choice("token_mixing", token_mixing, SEQ_TOKEN_MIXINGS) == "linear" else SeqTokenMlp
        )
        self.linear_tokens = mixing(max_len, causal=False)  # A
        self.ls1 = layer_scale(dim, layer_scale_init)
        self.norm2 = Affine(dim)
        self.mlp_channels = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = layer_scale(dim, layer_scale_init)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.ls1 * self.linear_tokens(_masked(self.norm1(x), keep), keep))
        return x + self.drop(self.ls2 * self.mlp_channels(self.norm2(x)))


class ResMLPDecoderBlock(nn.Module):
    """Triangular A, then the encoder-decoder attention (or, `cross="linear"`, a T x S map of the encoder's
    outputs by position; `cross=None`: neither, a language model's block), then the channel MLP."""

    def __init__(
        self,
        *,
        dim: int,
        max_len: int,
        mlp_ratio: float,
        layer_scale_init: float,
        dropout: float,
        token_mixing: str,
        cross: Optional[str],
        num_heads: int,
    ) -> None:
        super().__init__()
        self.token_mixing = check_choice("token_mixing", token_mixing, SEQ_TOKEN_MIXINGS)
        self.cross = None if cross is None else check_choice("cross", cross, CROSS)
        self.norm1 = Affine(dim)
        self.linear_tokens = (SeqTokenMixing if token_mixing == "linear" else SeqTokenMlp)(max_len, causal=True)
        self.ls1 = layer_scale(dim, layer_scale_init)
        if cross == "attention":
            self.norm_cross = nn.LayerNorm(dim)
            self.cross_attn = Attention(dim, num_heads)
        elif cross == "linear":
            self.norm_cross = Affine(dim)
            self.cross_tokens = SeqTokenMixing(max_len, causal=False)  # rows: target positions, cols: source
        if cross is not None:
            self.ls_cross = layer_scale(dim, layer_scale_init)
        self.norm2 = Affine(dim)
        self.mlp_channels = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = layer_scale(dim, layer_scale_init)
        self.drop = nn.Dropout(dropout)

    def _cross_linear(self, t0: int, t: int, memory: Memory) -> torch.Tensor:
        """Rows t0..t-1 of the T x S map applied to the (masked) encoder outputs, (B, t - t0, D)."""
        s = memory.x.shape[1]
        m = _masked(self.norm_cross(memory.x), memory.keep)
        a = self.cross_tokens.weight[t0:t, :s].to(m.dtype)
        return torch.einsum("ts,bsd->btd", a, m) + self.cross_tokens.bias[t0:t, None].to(m.dtype)

    def _cross(self, x: torch.Tensor, memory: Memory, t0: int, cache: Optional[Cache]) -> torch.Tensor:
        if self.cross == "linear":
            return self._cross_linear(t0, t0 + x.shape[1], memory)
        if cache is not None and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k, v = self.cross_attn.keys_values(memory.x)
            if cache is not None:  # projected once per sentence
                cache["k"], cache["v"] = k, v
        return self.cross_attn.attend(self.norm_cross(x), k, v, memory.attention_mask())

    def forward(self, x: torch.Tensor, memory: Optional[Memory]) -> torch.Tensor:
        x = x + self.drop(self.ls1 * self.linear_tokens(self.norm1(x)))
        if self.cross is not None:
            x = x + self.drop(self.ls_cross * self._cross(x, memory, 0, None))
        return x + self.drop(self.ls2 * self.mlp_channels(self.norm2(x)))

    def step(self, x: torch.Tensor, memory: Optional[Memory], cache: Cache) -> torch.Tensor:
        """The next position (B, 1, D) given the prefix this block has seen (in `cache`)."""
        z = _append(cache, "z", self.norm1(x))  # (B, t, D): Aff_1 of the whole prefix
        if self.token_mixing == "linear":
            mixed = self.linear_tokens.row(z)
        else:  # hidden positions k <= t are kept too: the new one reads the prefix, the output reads them all
            h = _append(cache, "h", self.linear_tokens.act(self.linear_tokens.fc1.row(z)))
            mixed = self.linear_tokens.fc2.row(h)
        x = x + self.ls1 * mixed
        if self.cross is not None:
            x = x + self.ls_cross * self._cross(x, memory, z.shape[1] - 1, cache)
        return x + self.ls2 * self.mlp_channels(self.norm2(x))


def _append(cache: Cache, key: str, x: torch.Tensor) -> torch.Tensor:
    cache[key] = x if key not in cache else torch.cat([cache[key], x], dim=1)
    return cache[key]


class TransformerEncoderBlock(nn.Module):
    """Pre-norm Transformer encoder layer (self-attention, then the same channel MLP as ResMLP)."""

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp_channels = Mlp(dim, int(dim * mlp_ratio))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.drop(self.attn.attend(y, *self.attn.keys_values(y), keep[:, None, None, :]))
        return x + self.drop(self.mlp_channels(self.norm2(x)))


class TransformerDecoderBlock(nn.Module):
    """Pre-norm Transformer decoder layer: causal self-attention, encoder-decoder attention (none in a
    language model), channel MLP."""

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float, dropout: float, cross: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        if cross:
            self.norm_cross = nn.LayerNorm(dim)
            self.cross_attn = Attention(dim, num_heads)
        self.cross = cross
        self.norm2 = nn.LayerNorm(dim)
        self.mlp_channels = Mlp(dim, int(dim * mlp_ratio))
        self.drop = nn.Dropout(dropout)

    def _cross(self, x: torch.Tensor, memory: Memory, cache: Optional[Cache]) -> torch.Tensor:
        if cache is not None and "ck" in cache:
            k, v = cache["ck"], cache["cv"]
        else:
            k, v = self.cross_attn.keys_values(memory.x)
            if cache is not None:
                cache["ck"], cache["cv"] = k, v
        return self.cross_attn.attend(self.norm_cross(x), k, v, memory.attention_mask())

    def forward(self, x: torch.Tensor, memory: Optional[Memory]) -> torch.Tensor:
        y = self.norm1(x)
        t = x.shape[1]
        causal = causal_mask(t, t, x.device)[None, None]  # (1, 1, T, T)
        x = x + self.drop(self.attn.attend(y, *self.attn.keys_values(y), causal))
        if self.cross:
            x = x + self.drop(self._cross(x, memory, None))
        return x + self.drop(self.mlp_channels(self.norm2(x)))

    def step(self, x: torch.Tensor, memory: Optional[Memory], cache: Cache) -> torch.Tensor:
        y = self.norm1(x)
        k, v = self.attn.keys_values(y)
        k, v = _append_heads(cache, "k", k), _append_heads(cache, "v", v)  # (B, H, t, D/H): the prefix's
        x = x + self.attn.attend(y, k, v)
        if self.cross:
            x = x + self._cross(x, memory, cache)
        return x + self.mlp_channels(self.norm2(x))


def _append_heads(cache: Cache, key: str, x: torch.Tensor) -> torch.Tensor:
    cache[key] = x if key not in cache else torch.cat([cache[key], x], dim=2)
    return cache[key]


class SequenceModel(nn.Module):
    """What the translators and language models share: the token and position embeddings (one table for
    source, target and output), the decoder stack, its final norm and the tied output projection."""

    pad_id = PAD_ID

    def __init__(self, *, vocab_size: int, max_len: int, embed_dim: int, dropout: float) -> None:
        super().__init__()
        self.vocab_size, self.max_len, self.embed_dim = vocab_size, max_len, embed_dim
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        nn.init.normal_(self.embed.weight, std=embed_dim**-0.5)
        nn.init.zeros_(self.embed.weight[PAD_ID])
        self.pos_embed = nn.Parameter(torch.zeros(max_len, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.spec: Optional[SeqSpec] = None

    def embed_tokens(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, L) ids -> (B, L, D), positions start .. start + L - 1."""
        check_length(start + ids.shape[1], self.max_len, "a sequence")
        x = self.embed(ids) * math.sqrt(self.embed_dim) + self.pos_embed[start : start + ids.shape[1]]
        return self.drop(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.decoder_norm(x), self.embed.weight)  # (B, T, D) -> (B, T, V), tied

    def _decode(self, tgt_in: torch.Tensor, memory: Optional[Memory]) -> torch.Tensor:
        y = self.embed_tokens(tgt_in)
        for block in self.decoder:
            y = block(y, memory)
        return self.logits(y)

    def start(self, memory: Optional[Memory] = None) -> list[Cache]:
        """Empty incremental-decoding state (one cache per decoder block)."""
        return [{} for _ in self.decoder]

    def step(self, token: torch.Tensor, position: int, memory: Optional[Memory], state: list[Cache]) -> torch.Tensor:
        """Logits (B, V) of the next token after `token` (B,) at `position`; `state` is updated in place."""
        y = self.embed_tokens(token[:, None], start=position)
        for block, cache in zip(self.decoder, state):
            y = block.step(y, memory, cache)
        return self.logits(y)[:, 0]

    @staticmethod
    def reorder(state: list[Cache], index: torch.Tensor) -> list[Cache]:
        """The state of the hypotheses `index` (beam search keeps some, repeats others)."""
        return [{k: v.index_select(0, index) for k, v in cache.items()} for cache in state]


class Translator(SequenceModel):
    """An encoder-decoder: `forward(src, tgt_in)` -> logits (B, T, V) for teacher forcing; `encode` and
    `start`/`step` for decoding."""

    def encode(self, src: torch.Tensor) -> Memory:
        """(B, S) source ids (PAD_ID-padded) -> the encoder's outputs."""
        keep = src != PAD_ID
        x = self.embed_tokens(src)
        for block in self.encoder:
            x = block(x, keep)
        return Memory(self.encoder_norm(x), keep)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self._decode(tgt_in, self.encode(src))


class ResMLPTranslator(Translator):
    """Paper section 3.6: `depth` ResMLP encoder blocks and `decoder_depth` (default: `depth`) decoder blocks."""

    def __init__(
        self,
        *,
        vocab_size: int = 8000,
        max_len: int = 128,
        embed_dim: int = 512,
        depth: int = 6,
        decoder_depth: Optional[int] = None,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 0.2,
        dropout: float = 0.1,
        num_heads: int = 8,
        token_mixing: str = "linear",
        cross: str = "attention",
    ) -> None:
        super().__init__(vocab_size=vocab_size, max_len=max_len, embed_dim=embed_dim, dropout=dropout)
        common = dict(dim=embed_dim, max_len=max_len, mlp_ratio=mlp_ratio, layer_scale_init=layer_scale_init)
        self.encoder = nn.ModuleList(
            ResMLPEncoderBlock(**common, dropout=dropout, token_mixing=token_mixing) for _ in range(depth)
        )
        self.encoder_norm = nn.LayerNorm(embed_dim)  # attention reads it (see the module docstring)
        self.decoder = nn.ModuleList(
            ResMLPDecoderBlock(**common, dropout=dropout, token_mixing=token_mixing, cross=cross, num_heads=num_heads)
            for _ in range(decoder_depth or depth)
        )
        self.decoder_norm = nn.LayerNorm(embed_dim)  # the tied output projection reads it


class TransformerTranslator(Translator):
    """The baseline: a pre-norm Transformer encoder-decoder of the same width, embeddings and channel MLP."""

    def __init__(
        self,
        *,
        vocab_size: int = 8000,
        max_len: int = 128,
        embed_dim: int = 512,
        depth: int = 6,
        decoder_depth: Optional[int] = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        num_heads: int = 8,
    ) -> None:
        super().__init__(vocab_size=vocab_size, max_len=max_len, embed_dim=embed_dim, dropout=dropout)
        common = dict(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
        self.encoder = nn.ModuleList(TransformerEncoderBlock(**common) for _ in range(depth))
        self.encoder_norm = nn.LayerNorm(embed_dim)
        self.decoder = nn.ModuleList(
            TransformerDecoderBlock(**common, cross=True) for _ in range(decoder_depth or depth)
        )
        self.decoder_norm = nn.LayerNorm(embed_dim)


class LanguageModel(SequenceModel):
    """A decoder alone, predicting the next token: `forward(ids)` -> logits (B, L, V)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._decode(ids, None)


class ResMLPLanguageModel(LanguageModel):
    """The paper's corollary: the triangular-A decoder as a causal language model (no encoder, no attention)."""

    def __init__(
        self,
        *,
        vocab_size: int = 8000,
        max_len: int = 128,
        embed_dim: int = 512,
        depth: int = 6,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 0.2,
        dropout: float = 0.1,
        token_mixing: str = "linear",
    ) -> None:
        super().__init__(vocab_size=vocab_size, max_len=max_len, embed_dim=embed_dim, dropout=dropout)
        self.decoder = nn.ModuleList(
            ResMLPDecoderBlock(
                dim=embed_dim,
                max_len=max_len,
                mlp_ratio=mlp_ratio,
                layer_scale_init=layer_scale_init,
                dropout=dropout,
                token_mixing=token_mixing,
                cross=None,
                num_heads=1,
            )
            for _ in range(depth)
        )
        self.decoder_norm = nn.LayerNorm(embed_dim)


class TransformerLanguageModel(LanguageModel):
    """A pre-norm Transformer decoder (GPT-style) of the same width: the LM baseline."""

    def __init__(
        self,
        *,
        vocab_size: int = 8000,
        max_len: int = 128,
        embed_dim: int = 512,
        depth: int = 6,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        num_heads: int = 8,
    ) -> None:
        super().__init__(vocab_size=vocab_size, max_len=max_len, embed_dim=embed_dim, dropout=dropout)
        self.decoder = nn.ModuleList(
            TransformerDecoderBlock(
                dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout, cross=False
            )
            for _ in range(depth)
        )
        self.decoder_norm = nn.LayerNorm(embed_dim)


# --- the registry of sequence variants ---------------------------------------------------------------------

SEQ_ARCHITECTURES: dict[str, type[SequenceModel]] = {
    "resmlp_mt": ResMLPTranslator,
    "transformer_mt": TransformerTranslator,
    "resmlp_lm": ResMLPLanguageModel,
    "transformer_lm": TransformerLanguageModel,
}

_PAPER = dict(embed_dim=512, mlp_ratio=4.0, layer_scale_init=0.2)  # section 3.6: width 512, MLP 2048, LS 0.2
_SMALL = dict(embed_dim=256, mlp_ratio=4.0, max_len=96)
# name -> (architecture, arguments, description). The CPU sizes are matched in parameters: a ResMLP block
# has ~8 D^2 (+ L^2 for A) against the Transformer's 12 D^2 (encoder) / 16 D^2 (decoder), so ResMLP gets
# 4 + 4 blocks where the Transformer has 3 + 3.
SEQ_VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "resmlp_mt6": ("resmlp_mt", dict(_PAPER, depth=6), "the paper's ResMLP-6 translator (Table 5)"),
    "resmlp_mt12": ("resmlp_mt", dict(_PAPER, depth=12), "the paper's ResMLP-12 translator (Table 5)"),
    "transformer_mt_base": (
        "transformer_mt",
        dict(embed_dim=512, depth=6, num_heads=8, dropout=0.1),
        "Transformer-base (Vaswani et al.), the paper's comparison",
    ),
    # LayerScale starts at 1 here: at 4 + 4 blocks and minutes of training it learns faster than the paper's 0.2
    # (made for 6-12 blocks trained for days); docs/translation.md
    "resmlp_mt_small": (
        "resmlp_mt",
        dict(_SMALL, depth=4, num_heads=4, layer_scale_init=1.0),
        "a CPU-sized ResMLP translator",
    ),
    "transformer_mt_small": (
        "transformer_mt",
        dict(_SMALL, depth=3, num_heads=4),
        "the Transformer matched in parameters to resmlp_mt_small",
    ),
    "resmlp_lm_small": (
        "resmlp_lm",
        dict(_SMALL, depth=6, layer_scale_init=1.0),
        "the ResMLP decoder as a language model",
    ),
    "transformer_lm_small": (
        "transformer_lm",
        dict(_SMALL, depth=4, num_heads=4),
        "a Transformer language model matched in parameters to resmlp_lm_small",
    ),
}


@dataclass(frozen=True)
class SeqSpec:
    """What a sequence model is: its registered name and every constructor argument (checkpoints store it)."""

    name: str
    args: dict[str, Any]

    @property
    def arch(self) -> str:
        return SEQ_VARIANTS[self.name][0]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "args": dict(self.args), "kind": "sequence"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeqSpec:
        return cls(d["name"], dict(d["args"]))

    def build(self) -> SequenceModel:
        return create_seq_model(self.name, **self.args)


def list_seq_models() -> list[str]:
    return sorted(SEQ_VARIANTS)


def seq_model_args(name: str, **overrides: Any) -> dict[str, Any]:
    """Every constructor argument of sequence variant `name` with `overrides` applied; a ValueError names
    an unknown variant or an argument it does not take."""
    if name not in SEQ_VARIANTS:
        raise ValueError(f"unknown sequence model {name!r}; choose one of: {', '.join(list_seq_models())}")
    arch, args, _ = SEQ_VARIANTS[name]
    params = inspect.signature(SEQ_ARCHITECTURES[arch].__init__).parameters
    defaults = {p.name: p.default for p in params.values() if p.name != "self"}
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"{name} does not accept {', '.join(unknown)}; accepted: {', '.join(defaults)}")
    return {**defaults, **args, **overrides}


def create_seq_model(name: str, **overrides: Any) -> SequenceModel:
    """Build sequence variant `name` (e.g. `resmlp_mt6`, `transformer_mt_small`, `resmlp_lm_small`) with
    `overrides` (`vocab_size`, `max_len`, `depth`, ...); the model carries `model.spec`."""
    args = seq_model_args(name, **overrides)
    model = SEQ_ARCHITECTURES[SEQ_VARIANTS[name][0]](**args)
    model.spec = SeqSpec(name, args)
    return model
