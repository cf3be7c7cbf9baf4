"""The sequence ResMLP of the paper's section 3.6 and its Transformer baseline: exact parameter counts from the
architecture's arithmetic, causality, padding invariance, incremental decoding equal to the full pass."""

import pytest
import torch

from resmlp.models import count_params
from resmlp.models.sequence import (
    SequenceLengthError,
    create_seq_model,
    list_seq_models,
    seq_model_args,
)

V, L = 50, 24
TINY = dict(vocab_size=V, max_len=L, embed_dim=32, depth=2, dropout=0.0)
TRANSLATORS = [
    ("resmlp_mt_small", {}),
    ("resmlp_mt_small", {"token_mixing": "mlp"}),
    ("resmlp_mt_small", {"cross": "linear"}),
    ("transformer_mt_small", {}),
]
LANGUAGE_MODELS = [("resmlp_lm_small", {}), ("resmlp_lm_small", {"token_mixing": "mlp"}), ("transformer_lm_small", {})]


def tiny(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_seq_model(name, **{**TINY, **kw}).eval()


def sentences(batch: int, length: int, *, seed: int) -> torch.Tensor:
    return torch.randint(4, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def resmlp_params(v: int, n: int, d: int, enc: int, dec: int, hidden: int) -> int:
    """Parameters of a ResMLP translator from the architecture (tied embeddings; A with a bias per row)."""
    embed = v * d + n * d
    mlp = d * hidden + hidden + hidden * d + d
    a = n * n + n
    aff, ls, ln = 2 * d, d, 2 * d
    attention = 4 * d * d + 4 * d
    encoder_block = aff + a + ls + aff + mlp + ls
    decoder_block = encoder_block + ln + attention + ls
    return embed + enc * encoder_block + ln + dec * decoder_block + ln


def transformer_params(v: int, n: int, d: int, enc: int, dec: int, hidden: int) -> int:
    embed = v * d + n * d
    mlp = d * hidden + hidden + hidden * d + d
    ln, attention = 2 * d, 4 * d * d + 4 * d
    encoder_block = ln + attention + ln + mlp
    decoder_block = encoder_block + ln + attention
    return embed + enc * encoder_block + ln + dec * decoder_block + ln


@pytest.mark.parametrize("name", list_seq_models())
def test_every_variant_has_the_parameters_its_architecture_says(name):
    with torch.device("meta"):
        model = create_seq_model(name, vocab_size=8000)
    a = seq_model_args(name, vocab_size=8000)
    d, n, hidden = a["embed_dim"], a["max_len"], int(a["embed_dim"] * a["mlp_ratio"])
    enc, dec = a.get("depth"), a.get("decoder_depth") or a.get("depth")
    if name.startswith("resmlp_mt"):
        expected = resmlp_params(8000, n, d, enc, dec, hidden)
    elif name.startswith("transformer_mt"):
        expected = transformer_params(8000, n, d, enc, dec, hidden)
    elif name.startswith("resmlp_lm"):  # decoder blocks without the encoder-decoder attention, no encoder
        aff, mlp, a_ = 2 * d, d * hidden + hidden + hidden * d + d, n * n + n
        expected = 8000 * d + n * d + enc * (aff + a_ + d + aff + mlp + d) + 2 * d
    else:
        mlp = d * hidden + hidden + hidden * d + d
        expected = 8000 * d + n * d + enc * (2 * d + 4 * d * d + 4 * d + 2 * d + mlp) + 2 * d
    assert count_params(model) == expected


def test_the_paper_sizes_and_the_cpu_pair():
    assert seq_model_args("resmlp_mt6")["embed_dim"] == 512 and seq_model_args("resmlp_mt6")["depth"] == 6
    assert seq_model_args("resmlp_mt12")["depth"] == 12
    assert seq_model_args("resmlp_mt6")["layer_scale_init"] == 0.2  # section 3.6
    with torch.device("meta"):
        r, t = create_seq_model("resmlp_mt_small"), create_seq_model("transformer_mt_small")
    assert abs(count_params(r) / count_params(t) - 1) < 0.05  # compared at equal parameters


@pytest.mark.parametrize("name,kw", TRANSLATORS)
def test_a_later_target_token_never_changes_earlier_logits(name, kw):
    model = tiny(name, **kw)
    src, tgt = sentences(2, 7, seed=1), sentences(2, 9, seed=2)
    changed = tgt.clone()
    changed[:, 5] = (changed[:, 5] + 1 - 4) % (V - 4) + 4
    before, after = model(src, tgt), model(src, changed)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])  # and the later ones do see it


@pytest.mark.parametrize("name,kw", LANGUAGE_MODELS)
def test_language_models_are_causal(name, kw):
    model = tiny(name, **kw)
    ids = sentences(2, 10, seed=3)
    changed = ids.clone()
    changed[:, 6] = 4 if int(ids[0, 6]) != 4 else 5
    torch.testing.assert_close(model(ids)[:, :6], model(changed)[:, :6])


@pytest.mark.parametrize("name,kw", TRANSLATORS)
def test_a_sentence_does_not_depend_on_the_longer_ones_in_its_batch(name, kw):
    model = tiny(name, **kw)
    src, tgt = sentences(3, 11, seed=4), sentences(3, 8, seed=5)
    src[0, 6:] = 0  # sentence 0: 6 source tokens, 5 target tokens, padded to the batch
    tgt[0, 5:] = 0
    batch = model(src, tgt)[0, :5]
    alone = model(src[:1, :6], tgt[:1, :5])[0]
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,kw", TRANSLATORS + LANGUAGE_MODELS)
def test_incremental_decoding_equals_the_full_pass(name, kw):
    model = tiny(name, **kw)
    tgt = sentences(2, 8, seed=6)
    if name.startswith(("resmlp_mt", "transformer_mt")):
        src = sentences(2, 6, seed=7)
        src[1, 4:] = 0
        full, memory = model(src, tgt), model.encode(src)
    else:
        full, memory = model(tgt), None
    state = model.start(memory)
    steps = torch.stack([model.step(tgt[:, t], t, memory, state) for t in range(tgt.shape[1])], 1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,kw", TRANSLATORS)
def test_gradients_reach_every_parameter(name, kw):
    model = tiny(name, **kw).train()
    model(sentences(2, 6, seed=8), sentences(2, 7, seed=9)).logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_a_sentence_longer_than_max_len_is_a_clear_error():
    model = tiny("resmlp_mt_small")
    with pytest.raises(SequenceLengthError, match=r"30 tokens .* max_len=24"):
        model(sentences(1, 30, seed=0), sentences(1, 5, seed=1))


def test_unknown_variant_and_argument_are_named():
    with pytest.raises(ValueError, match="unknown sequence model 'resmlp_mt7'"):
        create_seq_model("resmlp_mt7")
    with pytest.raises(ValueError, match="does not accept patch_size"):
        create_seq_model("transformer_mt_small", patch_size=16)


def test_the_spec_rebuilds_the_model():
    model = tiny("resmlp_mt_small", cross="linear")
    rebuilt = type(model.spec).from_dict(model.spec.to_dict()).build()
    rebuilt.load_state_dict(model.state_dict())
    src, tgt = sentences(1, 5, seed=1), sentences(1, 4, seed=2)
    torch.testing.assert_close(rebuilt.eval()(src, tgt), model(src, tgt))
