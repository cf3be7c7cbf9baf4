"""The one loader (resmlp.loading): every kind of source, one class-matching rule."""

import pytest
import torch
from PIL import Image

import resmlp
from resmlp.checkpoint import atomic_save, model_record
from resmlp.loading import folder_dataset, load_model
from resmlp.weights import WeightsError, convert_state_dict


def test_bare_state_dict_in_deit_layout_gets_its_architecture_from_the_shapes(tmp_path):
    torch.manual_seed(0)
    src = resmlp.create_model("resmlp_micro16", num_classes=3).eval()
    torch.save({"model": convert_state_dict(src.state_dict(), to="deit")}, tmp_path / "w.pth")
    loaded = load_model(tmp_path / "w.pth")
    model, spec = loaded.model, loaded.spec
    assert spec.name == "resmlp_micro16" and spec.classes is None
    assert spec.class_names() == ["class_0", "class_1", "class_2"] and loaded.checkpoint is None
    assert spec.preprocess == resmlp.models.get_variant("resmlp_micro16").preprocess
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=0, atol=0)


def test_bare_state_dict_with_explicit_model_name(tmp_path):
    src = resmlp.create_model("resmlp_micro8", img_size=12, num_classes=2)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    spec = load_model(tmp_path / "w.pth", model_name="resmlp_micro8").spec
    assert spec.args["img_size"] == 12 and spec.preprocess.img_size == 12
    with pytest.raises(WeightsError, match="does not fit resmlp_micro16"):
        load_model(tmp_path / "w.pth", model_name="resmlp_micro16")


def _checkpoint(tmp_path, classes=("cat", "dog", "eel")):
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8", num_classes=len(classes))
    ema = resmlp.create_model("resmlp_micro8", num_classes=len(classes))
    path = tmp_path / "run" / "checkpoints" / "best.pt"
    atomic_save({**model_record(model, classes=list(classes)), "ema": ema.state_dict(), "best_val_top1": 50.0}, path)
    return model, ema, path


def test_checkpoint_run_dir_and_ema_weights(tmp_path):
    model, ema, path = _checkpoint(tmp_path)
    x = torch.randn(2, 3, 8, 8)
    for source in (path, tmp_path / "run"):
        loaded = load_model(source)
        assert loaded.path == path and loaded.run_dir == tmp_path / "run" and loaded.checkpoint["best_val_top1"] == 50.0
        assert loaded.spec.classes == ("cat", "dog", "eel") and not loaded.model.training
        torch.testing.assert_close(loaded.model(x), model.eval()(x), rtol=0, atol=0)
    torch.testing.assert_close(load_model(path, weights="ema").model(x), ema.eval()(x), rtol=0, atol=0)
    with pytest.raises(WeightsError, match="holds resmlp_micro8, not resmlp_micro16"):
        load_model(path, model_name="resmlp_micro16")


def test_missing_source_is_one_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="no such file or directory"):
        load_model(tmp_path / "nope.pt")


def _folder(root, names):
    for n in names:
        (root / n).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(root / n / "a.png")
    return root


def test_folder_classes_match_by_name_and_may_be_a_subset(tmp_path):
    spec = resmlp.create_model("resmlp_micro8", num_classes=3).spec.replace(classes=["cat", "dog", "eel"])
    ds = folder_dataset(_folder(tmp_path / "val", ["eel", "cat"]), spec)
    assert sorted(label for _, label in ds.samples) == [0, 2]  # cat -> 0, eel -> 2: the model's ids, not the folder's
    assert ds[0][0].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="class folders fox are not among the model's classes"):
        folder_dataset(_folder(tmp_path / "other", ["cat", "fox"]), spec)


def test_folder_for_a_model_without_class_names(tmp_path):
    spec = resmlp.create_model("resmlp_micro8", num_classes=2).spec
    ds = folder_dataset(_folder(tmp_path / "a", ["x", "y"]), spec)
    assert ds.classes == ["x", "y"] and sorted(label for _, label in ds.samples) == [0, 1]
    with pytest.raises(ValueError, match="3 class folders but the model has 2 outputs"):
        folder_dataset(_folder(tmp_path / "b", ["x", "y", "z"]), spec)
