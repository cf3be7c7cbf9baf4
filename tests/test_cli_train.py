"""`resmlp train` on a user's own images (resmlp.cli.train): the recipe chosen by the images when none is named,
a warning when the named recipe shrinks photos to a few pixels, the photo recipes end to end, and fine-tuning
published weights by name through a Hub cache made here (no network)."""

import json

import numpy as np
import pytest
import torch
from conftest import hub_cache, run_offline, timm_s12_config
from PIL import Image

import resmlp
from resmlp.checkpoint import read_checkpoint
from resmlp.cli import main
from resmlp.cli.train import choose_recipe, resolution_warning
from resmlp.config import load_config
from resmlp.models import get_variant

QUIET = ["run.progress=false", "run.tensorboard=false"]


def _photos(root, size, per_class=6, classes=("ants", "bees")):
    """A folder of `per_class` random RGB JPEGs per class, of `size` (w, h) and a little larger."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = size[0] + 7 * (i % 3), size[1] + 5 * (i % 2)
            pixels = rng.integers(0, 120, (h, w, 3), dtype=np.uint8) + np.uint8(120 * c)  # the classes differ
            Image.fromarray(pixels).save(root / name / f"{i}.jpg")
    return root


@pytest.mark.parametrize(
    "size, recipe",
    [((8, 8), "digits"), ((32, 32), "cifar10_cpu"), ((500, 333), "photos_scratch")],
)
def test_without_a_recipe_the_images_choose_it_and_a_line_says_why(tmp_path, size, recipe):
    data = _photos(tmp_path / "photos", size, per_class=2)
    chosen, why = choose_recipe(str(data))
    assert chosen == recipe
    assert why.startswith("note: no --recipe given; ") and f"so recipe {recipe}" in why
    assert f"about {size[0] + 3}x{size[1] + 2} px" in why  # the median of w, w + 7 and h, h + 5
    assert choose_recipe(None) == ("digits", None)  # `resmlp train` alone: the demo
    assert choose_recipe(str(tmp_path / "cifar-10-python.tar.gz"))[0] == "cifar10_cpu"
    assert choose_recipe(str(tmp_path / "missing")) == ("digits", None)  # the loader's own error follows


def test_a_recipe_that_shrinks_photos_to_a_few_pixels_is_named(tmp_path):
    data = str(_photos(tmp_path / "photos", (500, 333), per_class=2))
    line = resolution_warning(load_config("digits", [("data.source", "folder"), ("data.path", data)]), "digits")
    assert line.startswith("warning: recipe digits trains resmlp_micro8 at 8x8 px, 41x below the images in")
    assert "photos_scratch or photos_finetune" in line
    assert resolution_warning(load_config("photos_scratch", [("data.path", data)]), "photos_scratch") is None
    assert resolution_warning(load_config("digits"), "digits") is None  # not a folder


def test_photos_scratch_trains_on_mixed_size_photos_chosen_by_the_cli(tmp_path, capsys):
    data = _photos(tmp_path / "photos", (96, 64))
    (data / "ants" / "anim.gif").write_bytes(_gif())  # a GIF among the JPEGs is read, not skipped
    out = tmp_path / "run"
    tiny = ["model.embed_dim=16", "model.depth=1", "data.batch_size=4", "optim.epochs=1", "budget.time_limit_min=null"]
    teacher = (
        'distill.teacher_set=["model.width=1", "data.batch_size=4", "optim.epochs=1", "budget.time_limit_min=null"]'
    )
    argv = ["train", "--data", str(data), "--val-split", "0.25", "--out", str(out), "--set", *tiny, teacher, *QUIET]
    assert main(argv) == 0
    printed = capsys.readouterr()
    err = printed.err
    assert "note: no --recipe given; the images in" in err and "so recipe photos_scratch" in err
    cfg = load_config(str(out / "config.yaml"))
    assert (cfg.model.img_size, cfg.model.patch_size, cfg.data.cache_size) == (64, 8, 72)
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
    ckpt = read_checkpoint(out)
    assert ckpt["model_args"]["img_size"] == 64 and ckpt["classes"] == ["ants", "bees"]
    assert "9 train / 4 val images" in printed.out  # 12 JPEGs + the GIF, 2 of each class held out
    # The conv-net teacher trained first, on the same split at the same size, and the ResMLP learned from it
    t_cfg = load_config(str(out / "teacher" / "config.yaml"))
    assert (t_cfg.model.name, t_cfg.model.img_size, t_cfg.data.cache_size) == ("convnet_cifar", 64, 72)
    assert json.loads((out / "teacher" / "summary.json").read_text())["epochs"] == 1
    assert (cfg.distill.kind, cfg.distill.teacher_tta) == ("hard", "flip")
    assert ckpt["teacher"]["model"] == "convnet_cifar"


def _gif() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (80, 70), (30, 60, 90)).save(buffer, format="GIF")
    return buffer.getvalue()


def test_photos_finetune_preprocesses_as_the_published_weights_do():
    cfg = load_config("photos_finetune")
    name, tag = cfg.model.finetune.split(".")
    published = get_variant(name).weights[tag].preprocess
    assert name == cfg.model.name and cfg.model.img_size == published.img_size == 224
    assert (cfg.data.crop_pct, cfg.data.interpolation) == (published.crop_pct, published.interpolation)
    assert cfg.data.mean == cfg.data.std == "imagenet" and published.mean == (0.485, 0.456, 0.406)
    assert cfg.data.cache_size == round(published.img_size / published.crop_pct)


def test_photos_finetune_starts_from_published_weights_in_the_hub_cache(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = {k: v.contiguous() for k, v in resmlp.create_model("resmlp_s12").state_dict().items()}
    hub_cache(
        tmp_path / "hf" / "hub",
        "timm/resmlp_12_224.fb_distilled_in1k",
        {
            "model.safetensors": lambda p: save_file(weights, str(p)),
            "config.json": lambda p: p.write_text(json.dumps(timm_s12_config("fb_distilled_in1k"))),
        },
    )
    torch.save(weights, tmp_path / "published.pt")
    data = _photos(tmp_path / "photos", (300, 200), per_class=3)
    out = tmp_path / "run"
    # lr 0: the trained body must equal the published weights; the 2-class head is new
    frozen = ["optim.lr=0", "optim.warmup_lr=0", "optim.min_lr=0", "optim.epochs=1", "data.batch_size=2"]
    settings = [*frozen, "budget.time_limit_min=null", "run.final_tta=none", "run.precision=fp32", *QUIET]
    argv = ["train", "--recipe", "photos_finetune", "--data", str(data), "--val-split", "0.34", "--out", str(out)]
    result = run_offline(
        tmp_path, f"import sys\nfrom resmlp.cli import main\nsys.exit(main({[*argv, '--set', *settings]!r}))"
    )
    assert result.returncode == 0, result.stderr
    assert load_config(str(out / "config.yaml")).model.finetune == "resmlp_s12.fb_distilled_in1k"
    ckpt = read_checkpoint(out)
    trained = ckpt["model"]
    published = torch.load(tmp_path / "published.pt", weights_only=True)
    assert trained["head.weight"].shape == (2, 384)
    body = [k for k in published if not k.startswith("head.")]
    assert body and all(torch.equal(trained[k], published[k]) for k in body)
    assert ckpt["preprocess"]["crop_pct"] == 0.875 and ckpt["classes"] == ["ants", "bees"]


def test_finetune_names_what_it_cannot_find(tmp_path, capsys):
    data = _photos(tmp_path / "photos", (40, 40), per_class=2)
    argv = ["train", "--recipe", "digits", "--data", str(data), "--finetune", str(tmp_path / "nothing.pt")]
    assert main([*argv, "--out", str(tmp_path / "r"), "--set", *QUIET]) == 2
    assert "nothing.pt: no such file or directory (nor a published model such as resmlp_s12.fb_in1k)" in (
        capsys.readouterr().err
    )
