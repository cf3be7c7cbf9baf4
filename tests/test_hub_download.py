"""Published weights by name (resmlp.hub.download): the Hub cache first, the original file as fallback; no network."""

import json
import sys

import pytest
import torch
from conftest import hub_cache, run_offline, timm_s12_config

import resmlp
from resmlp.hub.download import LEGACY_TAGS, hub_repo_id, pretrained_tags, resolve_tag
from resmlp.models import get_variant, list_models
from resmlp.weights import WeightsError, convert_state_dict


def test_tags_follow_timm():
    assert pretrained_tags("resmlp_s12") == ["fb_in1k", "fb_distilled_in1k", "fb_dino"]
    assert pretrained_tags("resmlp_s36") == ["fb_in1k", "fb_distilled_in1k"]
    assert pretrained_tags("resmlp_b24_p8") == ["fb_in1k", "fb_distilled_in1k", "fb_in22k_ft_in1k"]
    assert pretrained_tags("mixer_b16")[0] == "goog_in21k_ft_in1k" and pretrained_tags("resmlp_b24") == []
    assert hub_repo_id("resmlp_b24_p8", "fb_in22k_ft_in1k") == "timm/resmlp_big_24_224.fb_in22k_ft_in1k"
    assert resolve_tag("resmlp_s24", True) == "fb_in1k" and resolve_tag("resmlp_s24", "dist") == "fb_distilled_in1k"
    assert set(LEGACY_TAGS.values()) <= set(pretrained_tags("resmlp_b24_p8"))
    with pytest.raises(
        WeightsError,
        match="no pretrained weights tagged 'fb_dino' for resmlp_s36; available: fb_in1k, fb_distilled_in1k",
    ):
        resolve_tag("resmlp_s36", "fb_dino")
    with pytest.raises(WeightsError, match="no pretrained weights for resmlp_tiny32; available: none"):
        resmlp.create_model("resmlp_tiny32", pretrained=True)
    for name in list_models():  # every published tag has a fallback file
        assert all(w.url.startswith("https://") for w in get_variant(name).weights.values())


@pytest.fixture(scope="module")
def s12_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_s12")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def test_pretrained_by_name_from_the_hub_cache_offline(tmp_path, s12_weights):
    from safetensors.torch import save_file

    config = timm_s12_config("fb_distilled_in1k")
    hub_cache(
        tmp_path / "hf" / "hub",
        "timm/resmlp_12_224.fb_distilled_in1k",
        {
            "model.safetensors": lambda p: save_file(s12_weights, str(p)),
            "config.json": lambda p: p.write_text(json.dumps(config)),
        },
    )
    trunk = {k: v for k, v in s12_weights.items() if not k.startswith("head.")}
    hub_cache(
        tmp_path / "hf" / "hub",
        "timm/resmlp_12_224.fb_dino",
        {  # weights only, no config.json
            "model.safetensors": lambda p: save_file(trunk, str(p))
        },
    )
    out = tmp_path / "loaded.pt"
    result = run_offline(
        tmp_path,
        f"""
import torch, resmlp
m = resmlp.create_model("resmlp_s12", pretrained="fb_distilled_in1k")
dino = resmlp.create_model("resmlp_s12", pretrained="fb_dino")
torch.save({{"sd": m.state_dict(), "crop_pct": m.spec.preprocess.crop_pct, "classes": m.spec.num_classes,
            "dino_sd": dino.state_dict(), "dino_classes": dino.num_classes,
            "dino_pre": dino.spec.preprocess.crop_pct}}, {str(out)!r})
try:
    resmlp.create_model("resmlp_s12", pretrained="fb_in1k")
except resmlp.WeightsError as e:
    print("error:", e)
""",
    )
    assert result.returncode == 0, result.stderr
    loaded = torch.load(out, weights_only=True)
    assert loaded["crop_pct"] == 0.875 and loaded["classes"] == 1000
    assert loaded["sd"].keys() == s12_weights.keys()
    for k, v in s12_weights.items():
        torch.testing.assert_close(loaded["sd"][k], v, rtol=0, atol=0)
    assert loaded["dino_classes"] == 0 and loaded["dino_sd"].keys() == trunk.keys()
    assert loaded["dino_pre"] == 0.875  # no config.json in the cache: the registry's record of timm's config
    torch.testing.assert_close(loaded["dino_sd"]["blocks.3.ls2"], trunk["blocks.3.ls2"], rtol=0, atol=0)
    # The tag that is not cached: one error line naming the repo and both caches, and no network attempt.
    assert (
        "error: resmlp_s12 fb_in1k: offline (HF_HUB_OFFLINE is set) and not cached: "
        "timm/resmlp_12_224.fb_in1k not reachable" in result.stdout
    )
    assert "resmlp_12_no_dist.pth" in result.stdout


def test_pretrained_falls_back_to_the_original_file_once(tmp_path, monkeypatch, s12_weights):
    """Hub unreachable (online, no such cached repo): the deit file, downloaded once, in deit layout."""
    hf = pytest.importorskip("huggingface_hub")
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def no_hub(repo_id, filename, **kw):
        raise LocalEntryNotFoundError(f"cannot reach the Hub for {repo_id}/{filename}")

    def fake_download(url, dst, progress=True):
        calls.append(url)
        torch.save({"model": convert_state_dict(s12_weights, to="deit")}, dst)

    monkeypatch.setattr(hf, "hf_hub_download", no_hub)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = resmlp.pretrained("resmlp_s12", "no_dist", cache_dir=tmp_path)  # the deit name of fb_in1k
    assert calls == ["https://dl.fbaipublicfiles.com/deit/resmlp_12_no_dist.pth"]
    assert (tmp_path / "resmlp_12_no_dist.pth").is_file()
    torch.testing.assert_close(model.blocks[11].ls1, s12_weights["blocks.11.ls1"], rtol=0, atol=0)
    assert model.spec.preprocess.crop_pct == 0.875  # timm's pretrained_cfg for the tag, not the registry default
    tuned = resmlp.create_model("resmlp_s12", pretrained=True, cache_dir=tmp_path, num_classes=10)
    assert len(calls) == 1  # cached
    assert tuned.head.weight.shape == (10, 384) and tuned.spec.num_classes == 10
    torch.testing.assert_close(tuned.stem.proj.weight, s12_weights["stem.proj.weight"], rtol=0, atol=0)
    backbone = resmlp.create_model(
        "resmlp_s12", pretrained=True, cache_dir=tmp_path, features_only=True, out_indices=[5]
    )
    assert backbone.feature_info[0]["module"] == "blocks.5" and len(backbone.model.blocks) == 6
    with pytest.raises(
        WeightsError,
        match="pretrained weights fix the architecture of resmlp_s12; of the "
        "overrides img_size only num_classes and drop_path_rate",
    ):
        resmlp.create_model("resmlp_s12", pretrained=True, cache_dir=tmp_path, img_size=64)


def test_trunk_only_weights_get_no_head(tmp_path, monkeypatch, s12_weights):
    """DINO's files hold the trunk alone: the model is built without a head (num_classes=0)."""
    hf = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hf, "hf_hub_download", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    monkeypatch.setattr(
        torch.hub,
        "download_url_to_file",
        lambda url, dst, progress=True: torch.save(
            {k: v for k, v in s12_weights.items() if not k.startswith("head.")}, dst
        ),
    )
    model = resmlp.create_model("resmlp_s12", pretrained="fb_dino", cache_dir=tmp_path)
    assert model.num_classes == 0 and model(torch.zeros(1, 3, 224, 224)).shape == (1, 384)


def test_missing_huggingface_hub_falls_back_and_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    monkeypatch.setattr(
        torch.hub,
        "download_url_to_file",
        lambda url, dst, progress=True: (_ for _ in ()).throw(OSError("network unreachable")),
    )
    with pytest.raises(
        WeightsError,
        match=r"resmlp_s12 fb_in1k: the Hugging Face Hub needs huggingface_hub: "
        r"pip install 'resmlp\[hub\]'; the original file failed too: could not "
        r"download https://dl.fbaipublicfiles.com/deit/resmlp_12_no_dist.pth",
    ):
        resmlp.create_model("resmlp_s12", pretrained=True, cache_dir=tmp_path)


def test_commands_take_published_names_as_weights(tmp_path, monkeypatch, s12_weights, capsys):
    """`resmlp export resmlp_s12.fb_in1k ...`: VARIANT.TAG works wherever WEIGHTS does (via load_model)."""
    hf = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hf, "hf_hub_download", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, progress=True: torch.save(s12_weights, dst))
    from resmlp.cli import main

    assert main(["export", "resmlp_s12.fb_in1k", "--format", "safetensors", "--out", str(tmp_path / "pkg")]) == 0
    config = json.loads((tmp_path / "pkg" / "config.json").read_text())
    assert config["architecture"] == "resmlp_12_224" and "model_args" not in config
    assert config["pretrained_cfg"]["crop_pct"] == 0.875
    assert (tmp_path / "torch" / "hub" / "checkpoints" / "resmlp_12_no_dist.pth").is_file()
    assert main(["export", "resmlp_s12.fb_nope", "--format", "safetensors", "--out", str(tmp_path / "x")]) == 2
    assert (
        "resmlp_s12.fb_nope: no such file or directory (nor a published model such as resmlp_s12.fb_in1k)"
        in capsys.readouterr().err
    )
