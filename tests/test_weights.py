"""Checkpoint interop: deit / timm / ours layouts, files, and readable mismatch errors."""

import pickle

import pytest
import torch

import resmlp
from resmlp.cli import main
from resmlp.weights import WeightsError, convert_state_dict, detect_layout, read_state_dict


def tiny(name="resmlp_micro8", seed=0, **kw):
    torch.manual_seed(seed)
    model = resmlp.create_model(name, **kw).eval()
    with torch.no_grad():  # make every tensor distinctive so a mix-up in conversion shows in the logits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def logits(model, seed=1):
    torch.manual_seed(seed)
    size = model.spec.args["img_size"]
    return model(torch.randn(3, 3, size, size))


def test_our_keys_use_timm_layout():
    keys = set(tiny().state_dict())
    for k in [
        "stem.proj.weight",
        "blocks.0.norm1.alpha",
        "blocks.0.linear_tokens.weight",
        "blocks.0.ls1",
        "blocks.0.norm2.beta",
        "blocks.0.mlp_channels.fc1.weight",
        "blocks.0.mlp_channels.fc2.bias",
        "blocks.0.ls2",
        "norm.alpha",
        "head.weight",
    ]:
        assert k in keys
    mixer = set(resmlp.create_model("mixer_tiny32", depth=1).state_dict())
    assert {
        "blocks.0.norm1.weight",
        "blocks.0.mlp_tokens.fc1.weight",
        "blocks.0.mlp_tokens.fc2.weight",
        "blocks.0.norm2.bias",
        "blocks.0.mlp_channels.fc1.weight",
        "blocks.0.mlp_channels.fc2.weight",
    } <= mixer


@pytest.mark.parametrize("layout", ["deit", "timm"])
def test_round_trip_through_each_layout_gives_identical_logits(layout):
    src = tiny()
    converted = convert_state_dict(src.state_dict(), to=layout)
    assert detect_layout(converted) == layout
    dst = resmlp.load_weights(tiny(seed=5), converted)
    torch.testing.assert_close(logits(dst), logits(src), rtol=0, atol=0)


def test_deit_layout_names_and_shapes():
    sd = convert_state_dict(tiny().state_dict(), to="deit")
    assert sd["patch_embed.proj.weight"].shape == (128, 3, 2, 2)
    assert sd["blocks.0.attn.weight"].shape == (16, 16)
    assert sd["blocks.0.gamma_1"].shape == (128,) and sd["blocks.1.mlp.fc2.bias"].shape == (128,)
    assert sd["blocks.0.norm1.alpha"].shape == (128,) and sd["norm.beta"].shape == (128,)
    assert not any(k.startswith("stem.") or "linear_tokens" in k or ".ls1" in k for k in sd)


def hand_made_deit_checkpoint(dim=8, depth=2, n=4, classes=3):
    """What deit's resmlp_models.py saves ({'model': state_dict}), written out key by key."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    sd = {"patch_embed.proj.weight": r(dim, 3, 4, 4), "patch_embed.proj.bias": r(dim)}
    for i in range(depth):
        sd.update(
            {
                f"blocks.{i}.norm1.alpha": 1 + r(dim),
                f"blocks.{i}.norm1.beta": r(dim),
                f"blocks.{i}.attn.weight": r(n, n),
                f"blocks.{i}.attn.bias": r(n),
                f"blocks.{i}.norm2.alpha": 1 + r(dim),
                f"blocks.{i}.norm2.beta": r(dim),
                f"blocks.{i}.mlp.fc1.weight": r(4 * dim, dim),
                f"blocks.{i}.mlp.fc1.bias": r(4 * dim),
                f"blocks.{i}.mlp.fc2.weight": r(dim, 4 * dim),
                f"blocks.{i}.mlp.fc2.bias": r(dim),
                f"blocks.{i}.gamma_1": r(dim),
                f"blocks.{i}.gamma_2": r(dim),
            }
        )
    sd.update({"norm.alpha": 1 + r(dim), "norm.beta": r(dim), "head.weight": r(classes, dim), "head.bias": r(classes)})
    return {"model": sd, "optimizer": {}, "epoch": 399}


def test_hand_made_deit_checkpoint_file_loads(tmp_path):
    ckpt = hand_made_deit_checkpoint()
    torch.save(ckpt, tmp_path / "resmlp_deit.pth")
    model = resmlp.create_model("resmlp_s12", img_size=8, patch_size=4, embed_dim=8, depth=2, num_classes=3)
    resmlp.load_weights(model, tmp_path / "resmlp_deit.pth")
    sd = ckpt["model"]
    torch.testing.assert_close(model.blocks[1].linear_tokens.weight, sd["blocks.1.attn.weight"])
    torch.testing.assert_close(model.blocks[0].ls2, sd["blocks.0.gamma_2"])
    torch.testing.assert_close(model.norm.alpha.view(-1), sd["norm.alpha"])
    # The cross-patch sublayer computed by hand from the deit tensors matches the loaded block.
    x = torch.randn(2, 4, 8)
    blk = model.blocks[0]
    a = sd["blocks.0.norm1.alpha"] * x + sd["blocks.0.norm1.beta"]
    mixed = torch.einsum("mn,bnd->bmd", sd["blocks.0.attn.weight"], a) + sd["blocks.0.attn.bias"][:, None]
    expected = x + sd["blocks.0.gamma_1"] * mixed
    got = x + blk.ls1 * blk.linear_tokens(blk.norm1(x).transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(got, expected)


def test_safetensors_and_wrapped_checkpoints(tmp_path):
    from safetensors.torch import save_file

    src = tiny()
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"model": {"module." + k: v for k, v in src.state_dict().items()}, "epoch": 3}, tmp_path / "w.pt")
    for f in ["w.safetensors", "w.pt"]:
        dst = resmlp.load_weights(tiny(seed=9), tmp_path / f)
        torch.testing.assert_close(logits(dst), logits(src))


def test_wrong_shape_checkpoint_fails_with_a_readable_message():
    sd = tiny(embed_dim=64).state_dict()
    with pytest.raises(
        WeightsError, match=r"shape conflicts: stem.proj.weight: checkpoint \(64, 3, 2, 2\) vs model \(128, 3, 2, 2\)"
    ):
        resmlp.load_weights(tiny(), sd)
    sd = tiny().state_dict()
    del sd["blocks.1.ls2"]
    sd["blocks.9.extra"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"missing keys: blocks.1.ls2; unexpected keys: blocks.9.extra"):
        resmlp.load_weights(tiny(), sd)


def test_head_mismatch_allowed_for_finetuning():
    src = tiny()
    dst = tiny(num_classes=3)
    resmlp.load_weights(dst, src.state_dict(), allow_head_mismatch=True)
    torch.testing.assert_close(dst.blocks[0].linear_tokens.weight, src.blocks[0].linear_tokens.weight)
    assert dst.head.weight.shape == (3, 128)
    with pytest.raises(WeightsError, match="head.weight"):
        resmlp.load_weights(tiny(num_classes=3), src.state_dict())


class Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_loading_never_executes_pickled_code(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(WeightsError, match="evil.pth: not a PyTorch weights file"):
        read_state_dict(path)
    assert "pickled code ran" not in capsys.readouterr().out


def test_missing_file_and_unknown_layout():
    with pytest.raises(WeightsError, match="nope.pth: no such weights file"):
        read_state_dict("nope.pth")
    with pytest.raises(WeightsError, match="cannot tell the checkpoint layout"):
        convert_state_dict({"foo.weight": torch.zeros(1)}, to="deit")


def test_convert_cli_round_trip(tmp_path, capsys):
    src = tiny()
    torch.save({"model": src.state_dict()}, tmp_path / "ours.pt")
    assert main(["convert", str(tmp_path / "ours.pt"), str(tmp_path / "deit.pth"), "--to", "deit"]) == 0
    assert "deit layout" in capsys.readouterr().out
    sd = torch.load(tmp_path / "deit.pth", weights_only=True)
    assert "blocks.0.attn.weight" in sd
    assert main(["convert", str(tmp_path / "deit.pth"), str(tmp_path / "back.safetensors"), "--to", "timm"]) == 0
    dst = resmlp.load_weights(tiny(seed=3), tmp_path / "back.safetensors")
    torch.testing.assert_close(logits(dst), logits(src), rtol=0, atol=0)
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "x.pth"), "--to", "timm"]) == 2
    assert "missing.pth: no such weights file" in capsys.readouterr().err


def test_models_and_summary_cli(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "resmlp_s12" in out and "15,350,872" in out and "3.01" in out
    assert main(["summary", "resmlp_s24"]) == 0
    out = capsys.readouterr().out
    assert "total params 30,020,680" in out and "5.96 GFLOPs" in out
