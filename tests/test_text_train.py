"""Text runs through the real CLI on a corpus the test writes: `resmlp train --recipe multi30k_en_de`, exact
resume, `resmlp translate`, `resmlp eval --src --ref`, a language model, and the errors a user meets."""

import json
import random

import pytest
import torch

from resmlp.cli import main
from resmlp.config import ConfigError, load_config
from resmlp.deploy.translate import load_text_model, score
from resmlp.rundir import RunDir

WORDS = {"a": "ein", "dog": "hund", "cat": "katze", "runs": "rennt", "sleeps": "schläft", "red": "rot", "big": "groß"}
TINY = [
    "model.embed_dim=32",
    "model.depth=1",
    "model.num_heads=2",
    "model.max_len=24",
    "text.vocab_size=60",
    "text.max_tokens=256",
    "budget.time_limit_min=null",
    "budget.fit_to_time_limit=false",
    "run.precision=fp32",
    "run.progress=false",
]


def corpus(root, n=240, *, val=True, seed=0):
    """Toy English -> 'German' pairs: word-by-word from WORDS, in order (learnable by a tiny model)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)

    def write(split, count):
        en = [" ".join(rng.choice(list(WORDS)) for _ in range(rng.randint(2, 6))) for _ in range(count)]
        (root / f"{split}.en").write_text("\n".join(en) + "\n", encoding="utf-8")
        (root / f"{split}.de").write_text(
            "\n".join(" ".join(WORDS[w] for w in s.split()) for s in en) + "\n", encoding="utf-8"
        )

    write("train", n)
    if val:
        write("val", 30)
    return root


def train(tmp_path, out, *extra, data=None, tiny=TINY):
    data = data or corpus(tmp_path / "m30")
    argv = ["train", "--recipe", "multi30k_en_de", "--data", str(data), "--out", str(out), "--set", *tiny, *extra]
    return main(argv)


def test_a_translation_run_writes_its_directory_and_learns(tmp_path, capsys):
    assert train(tmp_path, tmp_path / "run", "optim.epochs=3") == 0
    run = RunDir(tmp_path / "run")
    for path in (run.config, run.metrics, run.summary, run.best, run.last, run.root / "tokenizer.model"):
        assert path.is_file(), path
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert {"val_bleu", "val_chrf", "val_ppl", "tokens_per_s"} <= set(rows[-1])
    summary = json.loads(run.summary.read_text())
    assert summary["task"] == "translation" and summary["epochs"] == 3
    assert "best_val_bleu" in capsys.readouterr().out


def test_resume_after_an_interruption_gives_the_same_model(tmp_path):
    data = corpus(tmp_path / "m30")
    assert train(tmp_path, tmp_path / "whole", "optim.epochs=2", data=data) == 0
    # the first session stops at its time limit after one epoch, the second continues to the plan's end
    assert train(tmp_path, tmp_path / "split", "optim.epochs=2", "budget.time_limit_min=0.0001", data=data) == 0
    assert len(RunDir(tmp_path / "split").read_metrics()) == 1
    assert main(["train", "--resume", str(tmp_path / "split"), "--set", "budget.time_limit_min=null"]) == 0
    whole = torch.load(RunDir(tmp_path / "whole").last, weights_only=False)["model"]
    split = torch.load(RunDir(tmp_path / "split").last, weights_only=False)["model"]
    for key in whole:
        torch.testing.assert_close(split[key], whole[key], msg=key)


def test_translate_and_eval_commands(tmp_path, capsys, monkeypatch):
    data = corpus(tmp_path / "m30")
    assert train(tmp_path, tmp_path / "run", "optim.epochs=2", data=data) == 0
    capsys.readouterr()
    src = tmp_path / "src.en"
    src.write_text("a dog runs\nbig red cat sleeps\n", encoding="utf-8")
    assert main(["translate", str(tmp_path / "run"), str(src), "--beam", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2

    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("a dog runs\nbig red cat sleeps\n"))
    assert main(["translate", str(tmp_path / "run"), "--beam", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == lines  # stdin gives what the file gave

    ref = tmp_path / "ref.de"
    ref.write_text("ein hund rennt\ngroß rot katze schläft\n", encoding="utf-8")
    out = tmp_path / "eval"
    assert (
        main(["eval", "--checkpoint", str(tmp_path / "run"), "--src", str(src), "--ref", str(ref), "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "BLEU" in printed and "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp" in printed
    result = json.loads((out / "translate_eval.json").read_text())
    expected = score((out / "src.en.beam4.hyp").read_text().splitlines(), ref.read_text().splitlines())
    assert result["bleu"] == pytest.approx(expected["bleu"])
    assert result["sentences"] == 2


def test_a_language_model_run(tmp_path):
    extra = ["text.task=language_model", "model.name=resmlp_lm_small", "optim.epochs=2"]
    no_attention = [o for o in TINY if not o.startswith("model.num_heads")]  # the ResMLP LM has no attention
    assert train(tmp_path, tmp_path / "lm", *extra, tiny=no_attention) == 0
    rows = RunDir(tmp_path / "lm").read_metrics()
    assert "val_ppl" in rows[-1] and "val_bleu" not in rows[-1]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    tm = load_text_model(tmp_path / "lm")
    assert tm.model.spec.name == "resmlp_lm_small"


def test_val_is_carved_from_train_when_the_folder_has_none(tmp_path, capsys):
    data = corpus(tmp_path / "m30", val=False)
    assert train(tmp_path, tmp_path / "run", "optim.epochs=1", data=data) == 0
    assert "carved from train" in capsys.readouterr().out


def test_user_mistakes_are_one_error_line(tmp_path, capsys):
    data = corpus(tmp_path / "m30")
    (data / "train.de").unlink()
    assert train(tmp_path, tmp_path / "run", data=data) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train.de" in err and "Traceback" not in err

    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--src", "x.en"]) == 2
    assert "--ref" in capsys.readouterr().err

    assert main(["translate", str(tmp_path / "nothing")]) == 2
    assert "error: " in capsys.readouterr().err


def test_a_translation_between_one_language_is_refused():
    with pytest.raises(ConfigError, match="text.src_lang and text.tgt_lang"):
        load_config("multi30k_en_de", [("text.tgt_lang", "en")])


def test_a_translator_exports_to_onnx_that_matches_eager(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert train(tmp_path, tmp_path / "run", "optim.epochs=1") == 0
    out = tmp_path / "onnx"
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"encoder.onnx", "decoder.onnx", "tokenizer.model", "config.json"}
    assert json.loads((out / "config.json").read_text())["tgt_lang"] == "de"
    assert "max |onnx - eager|" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "run"), "--format", "torchscript", "--out", str(tmp_path / "x.pt")]) == 2


def _ddp_text_worker(rank, world, port, data, out):
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
    )
    from resmlp.train import distributed as dist
    from resmlp.train.run import train as train_run

    cfg = load_config("multi30k_en_de", [("data.path", str(data)), *TINY, "optim.epochs=2", "run.threads=1"])
    train_run(cfg, out=out)
    dist.shutdown()


@pytest.mark.slow
def test_two_processes_train_a_translator(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = corpus(tmp_path / "m30")
    mp.spawn(_ddp_text_worker, args=(2, port, data, tmp_path / "two"), nprocs=2, join=True)
    rows = RunDir(tmp_path / "two").read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["val_loss"] < rows[0]["val_loss"]
    assert load_text_model(tmp_path / "two").model.spec.name == "resmlp_mt_small"
