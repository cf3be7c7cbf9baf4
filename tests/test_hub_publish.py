"""Publishing on the Hub (resmlp.hub.publish): the uploaded directory and its model card, offline
(the upload API is replaced by a recorder; nothing touches the network)."""

import json

import pytest
import torch
import yaml

import resmlp
from resmlp.checkpoint import atomic_save, model_record
from resmlp.cli import main
from resmlp.config import TrainConfig, config_to_dict
from resmlp.hub.publish import model_card, package_for_hub, push_to_hub
from resmlp.models import Preprocess
from resmlp.weights import WeightsError

CLASSES = ["airplane", "bird", "cat"]
PRE = Preprocess(img_size=8, crop_pct=1.0, interpolation="bicubic", mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.2))


def fake_run(tmp_path):
    """A run directory as `resmlp train` + `resmlp eval` leave it (checkpoint, config, summary, eval)."""
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8", num_classes=3).eval()
    run = tmp_path / "run"
    atomic_save(model_record(model, classes=CLASSES, preprocess=PRE), run / "checkpoints" / "best.pt")
    config = config_to_dict(TrainConfig())
    config["model"]["name"] = "resmlp_micro8"
    config["data"].update(source="folder", path="/data/cifar3/train", val_split=0.1, batch_size=64)
    config["optim"].update(name="lamb", lr=0.005, epochs=40, warmup_epochs=3, weight_decay=0.05)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "summary.json").write_text(
        json.dumps(
            {
                "best_val_top1": 81.25,
                "final_val_top1": 80.5,
                "final_val_top5": 99.0,
                "epochs": 40,
                "wall_time_s": 600.0,
                "processes": 1,
                "device": "cpu",
            }
        )
    )
    (run / "eval.json").write_text(
        json.dumps({"data": "/data/cifar3/test", "count": 3000, "top1": 79.75, "top5": 98.5, "tta": "flip"})
    )
    return run, model


def test_model_card_carries_data_recipe_metrics_and_intended_use(tmp_path):
    run, model = fake_run(tmp_path)
    card = model_card(resmlp.load_model(run).spec, params=123_456, run_dir=run, repo_id="me/micro")
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert yaml.safe_load(front) == {
        "license": "apache-2.0",
        "library_name": "resmlp",
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "resmlp"],
    }
    for expected in (
        "# resmlp_micro8",
        "4 blocks of width 128 over 2x2 patches, for 8x8 images, 3 classes, 123,456 parameters",
        "training data: `folder` (/data/cifar3/train)",
        "10% of the training images held out (seed 0)",
        "classes (3): airplane, bird, cat",
        "optimizer lamb, lr 0.005 per 512 images, weight decay 0.05, 40 epochs (3 warm-up), batch 64",
        "validation top-1: best 81.25%, final 80.50% (top-5 99.00%) after 40 epochs, 10.0 min on 1 x cpu",
        "evaluation on `/data/cifar3/test` (3000 images, TTA flip): top-1 79.75%, top-5 98.50%",
        "## Intended use and limitations",
        'snapshot_download("me/micro")',
        "center crop 8 px (crop_pct 1.0), normalise with mean [0.4, 0.5, 0.6]",
    ):
        assert expected in body, expected
    assert "timm.create_model" not in body  # timm has no architecture for this body


def test_model_card_of_a_timm_architecture_without_a_run():
    spec = resmlp.models.create_model("resmlp_s12", img_size=32).spec
    card = model_card(spec, params=1, repo_id="me/s12")
    assert "library_name: timm" in card and "- timm" in card and "(timm `resmlp_12_224`)" in card
    assert 'timm.create_model("hf-hub:me/s12", pretrained=True)' in card
    assert card.count("- not recorded") == 3  # data, recipe, metrics
    assert (
        "A ResMLP (Touvron et al. 2021) image classifier, 12 blocks of width 384 over 16x16 patches, for 32x32 "
        "images, 1000 classes" in card
    )
    teacher = resmlp.models.create_model("resnet20_cifar").spec
    assert "A CIFAR ResNet-20 (He et al. 2016) image classifier for 32x32 images, 10 classes" in model_card(
        teacher, params=1
    )


def test_push_to_hub_uploads_the_packaged_directory_with_its_card(tmp_path, monkeypatch):
    hf = pytest.importorskip("huggingface_hub")
    run, model = fake_run(tmp_path)
    calls = []

    class RecordingApi:  # the two HfApi calls push_to_hub makes, recorded instead of sent
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            from pathlib import Path

            folder = Path(folder_path)
            calls.append(
                (
                    "upload_folder",
                    repo_id,
                    sorted(p.name for p in folder.iterdir()),
                    json.loads((folder / "config.json").read_text()),
                    (folder / "README.md").read_text(),
                )
            )
            return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    monkeypatch.setattr(hf, "HfApi", RecordingApi)
    url = push_to_hub(run, "me/micro", private=True, token="tok")  # a run directory: its best checkpoint
    assert url == "https://huggingface.co/me/micro/commit/abc"
    assert calls[0] == ("init", "tok") and calls[1] == ("create_repo", "me/micro", True, True)
    _, repo, files, config, card = calls[2]
    assert repo == "me/micro" and files == ["README.md", "config.json", "model.safetensors"]
    assert config["label_names"] == CLASSES and config["resmlp"]["model_name"] == "resmlp_micro8"
    assert "best 81.25%" in card  # the run the checkpoint lives in filled the card


def test_cli_push_out_writes_the_directory_without_uploading(tmp_path, capsys):
    run, model = fake_run(tmp_path)
    assert main(["push", str(run), "me/micro", "--out", str(tmp_path / "pkg")]) == 0
    assert "README.md, config.json, model.safetensors); not uploaded" in capsys.readouterr().out
    loaded = resmlp.from_pretrained(tmp_path / "pkg")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert (
        main(["push", str(run), "me/micro", "--out", str(tmp_path / "pkg2"), "--run-dir", str(tmp_path / "nope")]) == 2
    )
    assert f"error: {tmp_path / 'nope'}: no such run directory" in capsys.readouterr().err
    out = package_for_hub(model, tmp_path / "bare")  # a model without a run: card says what is not recorded
    assert "- not recorded" in (out / "README.md").read_text()
    for source in (run, run / "checkpoints" / "best.pt"):  # a path: the card describes the run it lives in
        card = (package_for_hub(source, tmp_path / source.name) / "README.md").read_text()
        assert "best 81.25%" in card
    from_package = package_for_hub(tmp_path / "pkg", tmp_path / "again")  # a packaged directory
    assert (from_package / "model.safetensors").read_bytes() == (tmp_path / "pkg" / "model.safetensors").read_bytes()
    with pytest.raises(WeightsError, match="no such checkpoint file"):
        package_for_hub(tmp_path / "nothing.pt", tmp_path / "path")


def test_the_public_names_still_import_from_resmlp_and_resmlp_deploy():
    assert resmlp.push_to_hub is push_to_hub and resmlp.deploy.package_for_hub is package_for_hub
    assert resmlp.deploy.model_card is model_card and resmlp.deploy.push_to_hub is push_to_hub
