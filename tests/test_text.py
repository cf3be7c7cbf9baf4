"""Tests for resmlp.data.text: parallel corpora, the joint subword tokenizer, token batching, collation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resmlp.data.text import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    ParallelCorpus,
    SubwordTokenizer,
    TextDataError,
    TokenBatches,
    collate_lm,
    collate_pairs,
    collate_sources,
    eval_batches,
    filter_long,
    pair_length,
    read_lines,
    read_parallel,
    train_tokenizer,
)

# A small Multi30k-like corpus: varied words, both languages, so a joint vocabulary of ~80 pieces forms.
EN = [
    "A man in an orange hat starring at something.",
    "A Boston terrier is running on lush green grass in front of a white fence.",
    "A girl in karate uniform breaking a stick with a front kick.",
    "Five people wearing winter jackets and helmets stand in the snow.",
    "People are fixing the roof of a house.",
    "A man in light colored clothing photographs a group of men.",
    "A group of people standing in front of an igloo.",
    "A boy in a red uniform is attempting to avoid getting out at home plate.",
    "A guy works on a building.",
    "A man in a vest is sitting in a chair and holding magazines.",
    "A mother and her young song enjoying a beautiful day outside.",
    "Men playing volleyball, with one player missing the ball but hands still in the air.",
    "A woman holding a bowl of food in a kitchen.",
    "A man sits on a bench, reading a newspaper while a dog sleeps nearby.",
    "Two children swim quickly across the blue pool.",
    "An elderly couple walks their bicycle up a steep hill.",
    "Three jazz musicians perform under yellow lights at night.",
    "A quiet fox jumps over the lazy brown dog.",
    "Workers unload heavy boxes from a truck at 7 o'clock.",
    "The zebra and giraffe drink water at the lake.",
    "Dozens of excited fans wave flags during the match.",
    "She quickly exchanged views about the puzzle with her friend.",
    "A child holds an umbrella in the pouring rain!",
    "Is the waiter bringing two cups of hot coffee?",
    "The dancer jumps very high during the evening show.",
]
DE = [
    "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
    "Ein Boston Terrier läuft über saftig-grünes Gras vor einem weißen Zaun.",
    "Ein Mädchen in einem Karateanzug bricht einen Stock mit einem Tritt.",
    "Fünf Leute in Winterjacken und mit Helmen stehen im Schnee.",
    "Leute Reparieren das Dach eines Hauses.",
    "Ein hell gekleideter Mann fotografiert eine Gruppe von Männern.",
    "Eine Gruppe von Menschen steht vor einem Iglu.",
    "Ein Junge in einem roten Trikot versucht, die Home Base zu erreichen.",
    "Ein Typ arbeitet an einem Gebäude.",
    "Ein Mann in einer Weste sitzt auf einem Stuhl und hält Magazine.",
    "Eine Mutter und ihr kleiner Sohn genießen einen schönen Tag im Freien.",
    "Männer spielen Volleyball, wobei ein Spieler den Ball verpasst.",
    "Eine Frau hält eine Schüssel mit Essen in einer Küche.",
    "Ein Mann sitzt auf einer Bank und liest Zeitung, während ein Hund schläft.",
    "Zwei Kinder schwimmen schnell durch das blaue Becken.",
    "Ein älteres Paar schiebt sein Fahrrad einen steilen Hügel hinauf.",
    "Drei Jazzmusiker spielen nachts unter gelben Lichtern.",
    "Ein stiller Fuchs springt über den faulen braunen Hund.",
    "Arbeiter laden um 7 Uhr schwere Kisten von einem Lastwagen.",
    "Das Zebra und die Giraffe trinken Wasser am See.",
    "Dutzende begeisterte Fans schwenken während des Spiels Fahnen.",
    "Sie tauschte sich mit ihrer Freundin schnell über das Rätsel aus.",
    "Ein Kind hält einen Regenschirm im strömenden Regen!",
    "Bringt der Kellner zwei Tassen heißen Kaffee?",
    "Die Tänzerin springt während der Abendshow sehr hoch.",
]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _corpus(root: Path, n: int = 20, *, val: int = 0) -> Path:
    """`n` aligned train pairs (and `val` validation pairs) named so each pair can be recognised."""
    root.mkdir(parents=True, exist_ok=True)
    _write(root / "train.en", [f"en {i}" for i in range(n)])
    _write(root / "train.de", [f"de {i}" for i in range(n)])
    if val:
        _write(root / "val.en", [f"val en {i}" for i in range(val)])
        _write(root / "val.de", [f"val de {i}" for i in range(val)])
    return root


@pytest.fixture(scope="module")
def tokenizer() -> SubwordTokenizer:
    return train_tokenizer(EN + DE, 80)


# --------------------------------------------------------------------------- read_lines


def test_read_lines_strips_and_splits_on_newline_only(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbf  first line \r\nline\xe2\x80\xa8with a separator\n\n\tlast\t")
    assert read_lines(path) == ["first line", "line\u2028with a separator", "", "last"]
    assert read_lines(_write(tmp_path / "b.txt", [])) == []


def test_read_lines_errors_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(TextDataError, match="missing.txt: file not found"):
        read_lines(tmp_path / "missing.txt")
    bad = tmp_path / "bad.en"
    bad.write_bytes(b"fine\nalso fine\nbroken \xff byte\n")
    with pytest.raises(TextDataError, match=r"bad\.en: line 3 is not valid UTF-8"):
        read_lines(bad)


# --------------------------------------------------------------------------- read_parallel


def test_read_parallel_uses_val_files_and_drops_empty_pairs(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    _write(root / "train.en", ["one", "", "three", "four"])
    _write(root / "train.de", ["eins", "zwei", "drei", " "])
    _write(root / "val.en", ["five", "six"])
    _write(root / "val.de", ["fünf", ""])
    corpus = read_parallel(root, "en", "de")
    assert corpus == ParallelCorpus(
        "en", "de", [("one", "eins"), ("three", "drei")], [("five", "fünf")], val_carved=False, dropped_empty=3
    )
    reverse = read_parallel(root, "de", "en")
    assert reverse.train == [("eins", "one"), ("drei", "three")]


def test_read_parallel_carves_a_seeded_disjoint_val_split(tmp_path: Path) -> None:
    root = _corpus(tmp_path / "corpus", n=40)
    everything = [(f"en {i}", f"de {i}") for i in range(40)]
    corpus = read_parallel(root, "en", "de", val_split=0.25, seed=3)
    assert corpus.val_carved and corpus.dropped_empty == 0
    assert len(corpus.val) == 10 and len(corpus.train) == 30
    assert set(corpus.train).isdisjoint(corpus.val)
    assert sorted(corpus.train + corpus.val) == sorted(everything)
    assert corpus.train == [p for p in everything if p in corpus.train]  # file order kept
    assert corpus.val == [p for p in everything if p in corpus.val]
    assert read_parallel(root, "en", "de", val_split=0.25, seed=3) == corpus
    assert read_parallel(root, "en", "de", val_split=0.25, seed=4).val != corpus.val
    assert corpus.val != everything[-10:] and corpus.val != everything[:10]  # random, not a slice
    assert len(read_parallel(root, "en", "de", val_split=0.001).val) == 1  # at least one pair


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (lambda root: None, ("en", "de"), "nowhere: not a directory"),
        (
            lambda root: (root / "train.en").unlink(),
            ("en", "de"),
            r"train\.en: file not found \(train files in .*: train\.de\)",
        ),
        (lambda root: None, ("en", "fr"), r"train\.fr: file not found \(train files in .*: train\.de, train\.en\)"),
        (
            lambda root: _write(root / "train.de", ["x"] * 19),
            ("en", "de"),
            "train.en has 20 lines, train.de has 19: the two files must be aligned line by line",
        ),
        (lambda root: _write(root / "val.en", ["x"]), ("en", "de"), "has val.en but no val.de"),
        (lambda root: _write(root / "val.de", ["x"]), ("en", "de"), "has val.de but no val.en"),
        (lambda root: None, ("en", "en"), "need two different language codes"),
    ],
)
def test_read_parallel_errors_name_the_problem(tmp_path: Path, setup, args, message) -> None:
    root = _corpus(tmp_path / "corpus")
    setup(root)
    target = tmp_path / "nowhere" if message.startswith("nowhere") else root
    with pytest.raises(TextDataError, match=message):
        read_parallel(target, *args)


def test_read_parallel_val_mismatch_and_bad_split(tmp_path: Path) -> None:
    root = _corpus(tmp_path / "corpus", val=3)
    _write(root / "val.de", ["x", "y"])
    with pytest.raises(TextDataError, match="val.en has 3 lines, val.de has 2"):
        read_parallel(root, "en", "de")
    bare = _corpus(tmp_path / "bare")
    with pytest.raises(TextDataError, match="val_split must be in"):
        read_parallel(bare, "en", "de", val_split=0.0)


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_round_trips_training_sentences(tokenizer: SubwordTokenizer) -> None:
    assert 40 <= tokenizer.vocab_size <= 80
    for sentence in EN + DE:
        ids = tokenizer.encode(sentence)
        assert ids and not {PAD_ID, BOS_ID, EOS_ID, UNK_ID} & set(ids)
        assert tokenizer.decode(ids) == sentence
    assert tokenizer.encode_batch(EN[:3]) == [tokenizer.encode(s) for s in EN[:3]]
    assert tokenizer.encode_batch([]) == []


def test_tokenizer_special_ids_and_decode_stops_at_eos(tokenizer: SubwordTokenizer) -> None:
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    first, second = tokenizer.encode(EN[0]), tokenizer.encode(EN[1])
    output = [BOS_ID] + first + [EOS_ID] + second + [PAD_ID, PAD_ID]
    assert tokenizer.decode(output) == EN[0]
    assert tokenizer.decode(torch.tensor(output)) == EN[0]
    assert tokenizer.decode([]) == ""
    assert UNK_ID in tokenizer.encode("Qqq ☃")  # a character never seen in training
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([tokenizer.vocab_size])


def test_tokenizer_training_is_deterministic_and_save_load_round_trips(
    tokenizer: SubwordTokenizer, tmp_path: Path
) -> None:
    again = train_tokenizer(iter(EN + DE), 80)  # any iterable, read once
    assert again.model_proto == tokenizer.model_proto
    path = tokenizer.save(tmp_path / "sub" / "spm.model")
    assert path.read_bytes() == tokenizer.model_proto
    assert [p.name for p in path.parent.iterdir()] == ["spm.model"]  # no temporary left behind
    loaded = SubwordTokenizer.load(path)
    assert loaded.vocab_size == tokenizer.vocab_size
    assert loaded.encode_batch(EN + DE) == tokenizer.encode_batch(EN + DE)
    bpe = train_tokenizer(EN + DE, 80, model_type="bpe")
    assert bpe.model_proto != tokenizer.model_proto and bpe.decode(bpe.encode(DE[1])) == DE[1]


def test_tokenizer_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(TextDataError, match="nothing.model: tokenizer file not found"):
        SubwordTokenizer.load(tmp_path / "nothing.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"this is not a protobuf")
    with pytest.raises(TextDataError, match="junk.model: not a sentencepiece model"):
        SubwordTokenizer.load(junk)
    empty = tmp_path / "empty.model"
    empty.write_bytes(b"")
    with pytest.raises(TextDataError, match="empty.model: not a sentencepiece model"):
        SubwordTokenizer.load(empty)
    with pytest.raises(TextDataError, match="vocab_size must be >= 8, got 7"):
        train_tokenizer(EN, 7)
    with pytest.raises(TextDataError, match="unknown tokenizer model_type 'bytes'"):
        train_tokenizer(EN, 80, model_type="bytes")
    with pytest.raises(TextDataError, match="vocab_size=20: Vocabulary size is smaller than required_chars"):
        train_tokenizer(EN + DE, 20)  # the corpus has more distinct characters than that
    with pytest.raises(TextDataError, match="no non-empty sentences"):
        train_tokenizer(["", "  "], 80)


# --------------------------------------------------------------------------- batching


LENGTHS = [(i * 37) % 50 + 1 for i in range(500)]  # 1..50, scrambled


def _padded_tokens(batch: list[int], lengths: list[int]) -> int:
    return len(batch) * max(lengths[i] for i in batch)


def test_token_batches_cover_every_index_once_within_the_bound() -> None:
    batches = TokenBatches(LENGTHS, max_tokens=200, seed=1)
    for epoch in range(3):
        order = batches.epoch(epoch)
        assert sorted(i for batch in order for i in batch) == list(range(len(LENGTHS)))
        assert all(_padded_tokens(batch, LENGTHS) <= 200 for batch in order)
        # length sorting keeps padding low: under 10% of the tokens are padding
        padded = sum(_padded_tokens(batch, LENGTHS) for batch in order)
        assert padded < 1.1 * sum(LENGTHS)


def test_token_batches_are_deterministic_and_differ_across_epochs_and_seeds() -> None:
    batches = TokenBatches(LENGTHS, max_tokens=200, seed=1)
    assert batches.epoch(2) == TokenBatches(list(LENGTHS), max_tokens=200, seed=1).epoch(2)
    assert batches.epoch(0) != batches.epoch(1)
    assert batches.epoch(0) != TokenBatches(LENGTHS, max_tokens=200, seed=2).epoch(0)
    first_batches = [tuple(sorted(batch)) for batch in batches.epoch(0)[:5]]
    assert first_batches != [tuple(sorted(batch)) for batch in batches.epoch(1)[:5]]


def test_token_batches_put_an_overlong_example_alone() -> None:
    lengths = [3, 3, 30, 3, 3]
    order = TokenBatches(lengths, max_tokens=10, seed=0).epoch(0)
    assert [2] in order
    assert sorted(i for batch in order for i in batch) == [0, 1, 2, 3, 4]
    assert sorted(len(batch) for batch in order) == [1, 1, 3]  # 3 * 3 <= 10 < 4 * 3
    with pytest.raises(TextDataError, match="max_tokens must be >= 1, got 0"):
        TokenBatches(lengths, max_tokens=0)


def test_eval_batches_longest_first_in_fixed_order() -> None:
    lengths = [2, 5, 1, 5, 3, 4]
    batches = eval_batches(lengths, max_tokens=10)
    assert batches == [[1, 3], [5, 4], [0, 2]]
    assert eval_batches(LENGTHS, 200) == eval_batches(LENGTHS, 200)
    flat = [i for batch in eval_batches(LENGTHS, 200) for i in batch]
    assert sorted(flat) == list(range(len(LENGTHS)))
    assert [LENGTHS[i] for i in flat] == sorted(LENGTHS, reverse=True)


# --------------------------------------------------------------------------- collation


def test_collate_pairs_exact() -> None:
    src, tgt_in, tgt_out = collate_pairs([([10, 11, 12], [20]), ([13], [21, 22, 23, 24])])
    assert src.dtype == tgt_in.dtype == tgt_out.dtype == torch.int64
    torch.testing.assert_close(src, torch.tensor([[10, 11, 12, EOS_ID], [13, EOS_ID, PAD_ID, PAD_ID]]))
    torch.testing.assert_close(tgt_in, torch.tensor([[BOS_ID, 20, PAD_ID, PAD_ID, PAD_ID], [BOS_ID, 21, 22, 23, 24]]))
    torch.testing.assert_close(tgt_out, torch.tensor([[20, EOS_ID, PAD_ID, PAD_ID, PAD_ID], [21, 22, 23, 24, EOS_ID]]))
    # widths are the pair lengths TokenBatches budgets for
    assert src.shape[1] == max(pair_length([10, 11, 12], [20]), 2)
    assert tgt_in.shape[1] == pair_length([13], [21, 22, 23, 24])


def test_collate_pairs_custom_ids_and_empty_sides() -> None:
    src, tgt_in, tgt_out = collate_pairs([([], [5])], pad_id=9, bos_id=7, eos_id=8)
    torch.testing.assert_close(src, torch.tensor([[8]]))
    torch.testing.assert_close(tgt_in, torch.tensor([[7, 5]]))
    torch.testing.assert_close(tgt_out, torch.tensor([[5, 8]]))
    with pytest.raises(ValueError, match="empty batch"):
        collate_pairs([])


def test_collate_sources_and_lm_exact() -> None:
    torch.testing.assert_close(collate_sources([[4, 5], [6]]), torch.tensor([[4, 5, EOS_ID], [6, EOS_ID, PAD_ID]]))
    inputs, targets = collate_lm([[4, 5], [6]])
    torch.testing.assert_close(inputs, torch.tensor([[BOS_ID, 4, 5], [BOS_ID, 6, PAD_ID]]))
    torch.testing.assert_close(targets, torch.tensor([[4, 5, EOS_ID], [6, EOS_ID, PAD_ID]]))


def test_pair_length_and_filter_long() -> None:
    assert pair_length([1, 2, 3], [4]) == 4
    assert pair_length([], [4, 5]) == 3
    pairs = [([1] * 3, [1] * 2), ([1] * 9, [1]), ([1], [1] * 5), ([], [])]
    assert filter_long(pairs, 6) == ([0, 2, 3], 1)
    assert filter_long(pairs, 10) == ([0, 1, 2, 3], 0)
    assert filter_long([], 5) == ([], 0)
    with pytest.raises(TextDataError, match="max_len must be >= 1"):
        filter_long(pairs, 0)
