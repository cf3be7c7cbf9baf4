"""`resmlp predict`: inputs expanded, batched, the checkpoint's preprocessing and class names used,
a corrupt file reported by path without stopping the batch."""

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import resmlp
from resmlp.checkpoint import atomic_save, model_record
from resmlp.cli import main
from resmlp.data.transforms import build_eval_transform
from resmlp.deploy.predict import expand_inputs, predict_files
from resmlp.models import Preprocess

CLASSES = [f"digit{i}" for i in range(10)]
PRE = Preprocess(img_size=8, crop_pct=0.8, interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    for i in range(5):
        arr = (rng.random((10 + i, 12, 3)) * 255).astype("uint8")
        Image.fromarray(arr).save(root / ("sub" if i % 2 else ".") / f"img{i}.{'png' if i < 3 else 'jpg'}")
    Image.fromarray((rng.random((9, 9)) * 255).astype("uint8"), mode="L").save(root / "gray.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (root / "notes.txt").write_text("not an image, and not an image extension")
    return root


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8").eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 1)
    path = tmp_path / "ck.pt"
    atomic_save(model_record(model, classes=CLASSES, preprocess=PRE), path)
    return path, model


def test_expand_inputs_folders_globs_files_and_problems(folder):
    paths, problems = expand_inputs(
        [str(folder), str(folder / "*.png"), str(folder / "notes.txt"), str(folder / "nope.png"), str(folder / "*.gif")]
    )
    names = [p.rsplit("/", 1)[-1] for p in paths]
    assert names == [
        "broken.jpg",
        "gray.png",
        "img0.png",
        "img2.png",
        "img4.jpg",
        "img1.png",
        "img3.jpg",
        "notes.txt",
    ]  # sorted, recursed, no repeats; a named file is kept whatever it is
    assert problems == [
        f"{folder / 'nope.png'}: no such file or folder",
        f"{folder / '*.gif'}: pattern matches no files",
    ]
    recursive, _ = expand_inputs([str(folder / "**" / "*.jpg")])
    assert sorted(p.rsplit("/", 1)[-1] for p in recursive) == ["broken.jpg", "img3.jpg", "img4.jpg"]


def test_predict_folder_with_a_corrupt_file(folder, checkpoint, capsys):
    ck, model = checkpoint
    rc = main(
        ["predict", str(ck), str(folder), "--format", "json", "--topk", "3", "--batch-size", "2", "--precision", "fp32"]
    )
    out, err = capsys.readouterr()
    assert rc == 1  # some files failed
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in json.loads(out)}
    assert len(rows) == 7
    assert rows["broken.jpg"]["error"] and rows["broken.jpg"]["predictions"] == []
    assert f"error: {folder / 'broken.jpg'}:" in err and "1 of 7 files could not be read" in err
    good = [r for name, r in rows.items() if name != "broken.jpg"]
    assert all(r["error"] is None and len(r["predictions"]) == 3 for r in good)
    assert all(p["class"] == CLASSES[p["index"]] for r in good for p in r["predictions"])

    # the same numbers as the model on the checkpoint's own preprocessing
    transform = build_eval_transform(8, mean=PRE.mean, std=PRE.std, crop_pct=PRE.crop_pct, interpolation="bilinear")
    x = transform(Image.open(folder / "sub" / "img1.png").convert("RGB"))[None]
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    top = rows["img1.png"]["predictions"][0]
    assert top["index"] == int(probs.argmax()) and top["probability"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_csv_and_table_formats(folder, checkpoint, capsys):
    ck, _ = checkpoint
    assert main(["predict", str(ck), str(folder / "*.png"), "--format", "csv", "--topk", "2"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3 * 2 and [r["rank"] for r in rows[:2]] == ["1", "2"]
    assert all(r["class"] in CLASSES and r["error"] == "" for r in rows)
    assert main(["predict", str(ck), str(folder / "img0.png"), str(folder / "broken.jpg")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["path", "top-1", "prob", "others"]
    assert out[1].split()[1] in CLASSES and "ERROR" in out[2] and "broken.jpg" in out[2]  # input order


def test_batching_and_padding_do_not_change_results(folder, checkpoint):
    ck, model = checkpoint
    paths, _ = expand_inputs([str(folder)])
    runs = [
        list(
            predict_files(
                resmlp.optimize(model, "fp32"),
                paths,
                preprocess=PRE,
                classes=CLASSES,
                topk=2,
                batch_size=b,
                pad_batches=pad,
            )
        )
        for b, pad in ((1, False), (3, True), (32, False))
    ]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert a.path == b.path and a.error == b.error and [t[1] for t in a.topk] == [t[1] for t in b.topk]
            assert np.allclose([t[2] for t in a.topk], [t[2] for t in b.topk], atol=1e-5)


def test_nothing_to_classify_is_a_one_line_error(tmp_path, checkpoint, capsys):
    ck, _ = checkpoint
    assert main(["predict", str(ck), str(tmp_path / "nothing*.png")]) == 2
    err = capsys.readouterr().err
    assert "pattern matches no files" in err and "error: no image files to classify" in err


@pytest.mark.slow
@pytest.mark.openvino
def test_int8_predict_calibrates_on_the_inputs_or_a_given_folder(folder, checkpoint, capsys, tmp_path):
    ck, model = checkpoint
    args = ["predict", str(ck), str(folder / "*.png"), "--format", "json", "--topk", "1", "--precision", "int8"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 and all(r["error"] is None and r["predictions"][0]["class"] in CLASSES for r in rows)
    assert main(args + ["--calibration", str(folder)]) == 0  # the corrupt file in there is skipped
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(args + ["--calibration", str(tmp_path / "none*.png")]) == 2
    err = capsys.readouterr().err
    assert "error: --calibration" in err and "pattern matches no files" in err


def test_calibration_images_skip_unreadable_files(folder):
    from resmlp.deploy.predict import calibration_images

    paths, _ = expand_inputs([str(folder)])
    batch = calibration_images(paths, PRE, limit=100)
    assert batch.shape == (6, 3, 8, 8)  # 8 files: broken.jpg and notes.txt are skipped
    assert calibration_images(paths, PRE, limit=3).shape[0] <= 3
    with pytest.raises(ValueError, match="none of the 1 calibration files could be read"):
        calibration_images([str(folder / "broken.jpg")], PRE)
