"""Greedy and beam search against references built from the full (non-incremental) forward pass."""

import itertools

import pytest
import torch

from resmlp.models.decoding import BOS_ID, EOS_ID, allowed, beam_search, greedy, length_limits
from resmlp.models.sequence import create_seq_model

V = 7  # ids 4..6 are words: small enough to enumerate every hypothesis


def model(name: str = "resmlp_mt_small", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_seq_model(name, vocab_size=V, max_len=8, embed_dim=16, depth=1, dropout=0.0, num_heads=2, **kw)
    with torch.no_grad():  # spread the logits so that hypotheses differ clearly
        m.embed.weight.mul_(4.0)
    return m.eval()


def sequence_logprob(m, src: torch.Tensor, ids: list[int]) -> float:
    """log p(ids + EOS | src) by teacher forcing with the full forward pass, over the tokens decoding may emit."""
    tgt_in = torch.tensor([[BOS_ID, *ids]])
    with torch.no_grad():
        lp = torch.log_softmax(allowed(m(src, tgt_in).float()[0]), -1)
    return float(sum(lp[t, tok] for t, tok in enumerate([*ids, EOS_ID])))


def test_greedy_takes_the_argmax_of_the_full_pass_at_every_step():
    m = model()
    src = torch.tensor([[4, 5, 6, 3], [6, 4, 3, 0]])
    for row, out in zip(src, greedy(m, src)):
        prefix = [BOS_ID]
        expected = []
        for t in range(int(length_limits(row[None], m.max_len)[0])):
            if t + 1 >= int(length_limits(row[None], m.max_len)[0]):
                break  # the last position may only hold the EOS
            nxt = int(allowed(m(row[None], torch.tensor([prefix]))[:, -1]).argmax())
            if nxt == EOS_ID:
                break
            expected.append(nxt)
            prefix.append(nxt)
        assert out == expected


@pytest.mark.parametrize("name", ["resmlp_mt_small", "transformer_mt_small"])
def test_a_wide_beam_finds_the_best_hypothesis(name):
    """With a beam as wide as every prefix, beam search is exhaustive: it returns the hypothesis with the best
    log-probability / length among every sequence of the tokens it may generate (not PAD or BOS), up to the limit."""
    m = model(name)
    src = torch.tensor([[5, 6, 3]])
    tokens = [1, 4, 5, 6]  # UNK and the words
    candidates = [list(c) for n in range(3) for c in itertools.product(tokens, repeat=n)]  # + EOS: at most 3
    best = max(candidates, key=lambda c: sequence_logprob(m, src, c) / (len(c) + 1))
    assert beam_search(m, src, beam=64, len_penalty=1.0, max_len_a=0.0, max_len_b=3)[0] == best


def test_beam_one_is_greedy_and_beams_score_at_least_as_well():
    m = model()
    src = torch.tensor([[4, 5, 6, 3], [6, 5, 3, 0], [4, 3, 0, 0]])
    assert beam_search(m, src, beam=1) == greedy(m, src)
    for row, g, b in zip(src, greedy(m, src), beam_search(m, src, beam=4, len_penalty=1.0)):
        norm = lambda ids: sequence_logprob(m, row[None], ids) / (len(ids) + 1)  # noqa: E731
        assert norm(b) >= norm(g) - 1e-4


def test_a_sentence_is_decoded_alone_as_in_a_batch():
    m = model("transformer_mt_small")
    src = torch.tensor([[4, 5, 6, 3], [6, 3, 0, 0]])
    together = beam_search(m, src, beam=3)
    assert together[1] == beam_search(m, src[1:, :2], beam=3)[0]
    assert together[0] == beam_search(m, src[:1], beam=3)[0]


def test_hypotheses_stop_at_the_length_limit():
    m = model()
    src = torch.tensor([[4, 3]])
    limit = int(length_limits(src, m.max_len)[0])
    assert limit <= m.max_len - 1
    for out in (greedy(m, src)[0], beam_search(m, src, beam=3)[0]):
        assert len(out) < limit


def test_the_special_ids_agree_across_tokenizer_model_and_search():
    from resmlp.data import text
    from resmlp.models import decoding, sequence

    assert (text.PAD_ID, text.BOS_ID, text.EOS_ID) == (sequence.PAD_ID, decoding.BOS_ID, decoding.EOS_ID)
    assert decoding.PAD_ID == text.PAD_ID
