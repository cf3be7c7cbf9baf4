"""Decoding a translator: greedy search and beam search (fairseq's: 2K candidates a step, a hypothesis that
ends in EOS is set aside with its score divided by length**len_penalty, a sentence is done when K have
ended), both on the incremental `start` / `step` of `models.sequence`."""

from __future__ import annotations

import torch

from .sequence import Translator

PAD_ID, BOS_ID, EOS_ID = 0, 2, 3  # the tokenizer's (data.text)


def allowed(logits: torch.Tensor) -> torch.Tensor:
    """Padding and BOS are never generated (fairseq's rule)."""
    logits = logits.clone()
    logits[:, [PAD_ID, BOS_ID]] = float("-inf")
    return logits


def length_limits(src: torch.Tensor, max_len: int, *, a: float = 1.5, b: int = 10) -> torch.Tensor:
    """The most target tokens (EOS included) each sentence may get: a * source length + b, at most what the
    model's positions hold (the BOS takes one)."""
    src_len = (src != 0).sum(1)
    return torch.clamp((a * src_len).long() + b, max=max_len - 1)


@torch.no_grad()
def greedy(
    model: Translator,
    src: torch.Tensor,
    *,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    bos: int = BOS_ID,
    eos: int = EOS_ID,
) -> list[list[int]]:
    """The most likely token at every step; one id list per sentence (no BOS, no EOS), at most
    `max_len_a` x source length + `max_len_b` tokens with the EOS."""
    memory = model.encode(src)
    limits = length_limits(src, model.max_len, a=max_len_a, b=max_len_b)
    state = model.start(memory)
    prev = torch.full((src.shape[0],), bos, dtype=torch.long, device=src.device)
    out = torch.full((src.shape[0], int(limits.max())), eos, dtype=torch.long, device=src.device)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for t in range(int(limits.max())):
        logits = allowed(model.step(prev, t, memory, state).float())
        prev = torch.where(done | (t + 1 >= limits), eos, logits.argmax(-1))
        out[:, t] = prev
        done |= prev == eos
        if bool(done.all()):
            break
    return [_until_eos(row, eos) for row in out.tolist()]


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


@torch.no_grad()
def beam_search(
    model: Translator,
    src: torch.Tensor,
    *,
    beam: int = 4,
    len_penalty: float = 1.0,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    bos: int = BOS_ID,
    eos: int = EOS_ID,
) -> list[list[int]]:
    """The best of `beam` hypotheses per sentence by log-probability / length**len_penalty (length with the EOS);
    one id list per sentence (no BOS, no EOS), at most `max_len_a` x source length + `max_len_b` tokens."""
    if beam == 1:
        return greedy(model, src, max_len_a=max_len_a, max_len_b=max_len_b, bos=bos, eos=eos)
    n, k = src.shape[0], beam
    memory = model.encode(src)
    index = torch.arange(n, device=src.device).repeat_interleave(k)  # (N * K,): the sentence of each beam
    memory = memory.select(index)
    limits = length_limits(src, model.max_len, a=max_len_a, b=max_len_b)
    state = model.start(memory)
    tokens = torch.full((n * k, 1), bos, dtype=torch.long, device=src.device)  # (N * K, t + 1), BOS first
    scores = torch.full((n, k), float("-inf"), device=src.device)
    scores[:, 0] = 0.0  # the K beams start identical: only one may expand at the first step
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    for t in range(int(limits.max())):
        lp = torch.log_softmax(allowed(model.step(tokens[:, -1], t, memory, state).float()), -1).view(n, k, -1)
        last = (t + 1 >= limits)[:, None, None]  # a sentence at its limit may only end
        lp = torch.where(last & (torch.arange(lp.shape[-1], device=lp.device) != eos), float("-inf"), lp)
        vocab = lp.shape[-1]
        cand, flat = (scores[:, :, None] + lp).view(n, -1).topk(2 * k)  # (N, 2K)
        beam_of, token = flat // vocab, flat % vocab
        ended = token == eos
        _set_aside(finished, cand, beam_of, ended, tokens.view(n, k, -1), k=k, len_penalty=len_penalty, length=t + 1)
        done = torch.tensor([len(f) >= k for f in finished], device=src.device)
        if bool(done.all()):
            break
        # the K best candidates that go on (EOS ones are out), per sentence
        go_on = cand.masked_fill(ended, float("-inf")).topk(k)
        scores = go_on.values.masked_fill(done[:, None], float("-inf"))
        pick = go_on.indices
        src_beam = (beam_of.gather(1, pick) + torch.arange(n, device=src.device)[:, None] * k).view(-1)
        state = model.reorder(state, src_beam)
        tokens = torch.cat([tokens[src_beam], token.gather(1, pick).view(-1, 1)], dim=1)
    return [max(f, key=lambda h: h[0])[1] if f else [] for f in finished]


def _set_aside(
    finished: list[list[tuple[float, list[int]]]],
    cand: torch.Tensor,
    beam_of: torch.Tensor,
    ended: torch.Tensor,
    tokens: torch.Tensor,
    *,
    k: int,
    len_penalty: float,
    length: int,
) -> None:
    """Hypotheses that end here (an EOS among a sentence's K best candidates) join its finished list."""
    hits = (ended[:, :k] & torch.isfinite(cand[:, :k])).nonzero().tolist()
    for s, c in hits:
        if len(finished[s]) < k:
            ids = tokens[s, beam_of[s, c]].tolist()[1:]  # without the BOS
            finished[s].append((cand[s, c].item() / length**len_penalty, ids))
