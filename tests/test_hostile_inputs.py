"""Hostile and broken inputs end in one clear `error:` line (exit code 2, no traceback, nothing executed),
and the known defects of issue 15 stay fixed: typed CLI values, the export check's scale, safe checkpoint
errors, loader workers capped at the cores. The rows of docs/reliability.md point here."""

import os
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from resmlp.checkpoint import atomic_save, model_record
from resmlp.cli import main
from resmlp.cli.train import data_overrides
from resmlp.config import ConfigError, DataConfig, load_config
from resmlp.data.datasets import ImageDataset, scan_image_folder
from resmlp.data.images import MAX_IMAGE_PIXELS, BadImageError, load_rgb
from resmlp.deploy import ExportError
from resmlp.deploy.trace import check_export
from resmlp.models import create_model
from resmlp.train import distributed as dist
from resmlp.train.wiring import loader_workers
from resmlp.weights import NonFiniteWeightsWarning, load_weights

TINY = [
    "model.embed_dim=16",
    "model.depth=1",
    "data.workers=0",
    "optim.warmup_epochs=0.5",
    "run.progress=false",
    "run.tensorboard=false",
    "data.batch_size=8",
    "model.img_size=8",
    "data.auto_augment=null",
    "data.repeated_aug=false",
    "data.val_split=0.25",
]

AWKWARD_NAMES = ["/my data #1/x", "2024", "a: b", 'it\'s "quoted"', "données ü/λ", "1e3", "null", "[1, 2]", "~"]


@pytest.mark.parametrize("path", AWKWARD_NAMES)
def test_cli_data_paths_reach_the_config_as_typed(path):
    cfg = load_config("digits", data_overrides(path, path, 0.3))
    assert (cfg.data.path, cfg.data.val_path, cfg.data.source, cfg.data.val_split) == (path, path, "folder", 0.3)


def _folder(root, per_class=6):
    rng = np.random.default_rng(0)
    for c, name in enumerate(["a", "b"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_cli_trains_on_a_folder_whose_path_holds_hash_colon_quotes_and_digits(tmp_path, monkeypatch):
    data = _folder(tmp_path / 'my data #1: it\'s "ü"' / "2024")
    out = tmp_path / "run"
    assert (
        main(["train", "--data", str(data), "--epochs", "1", "--out", str(out), *sum((["--set", s] for s in TINY), [])])
        == 0
    )
    assert load_config(str(out / "config.yaml")).data.path == str(data)
    monkeypatch.chdir(data.parent)  # a folder named only with digits, relative to here
    cfg = load_config("digits", data_overrides("2024", None, None))
    assert cfg.data.path == "2024" and scan_image_folder(cfg.data.path)[2] == ["a", "b"]


# ----------------------------------------------------------------------------------------- export check


def test_export_check_is_relative_to_the_logit_scale():
    model = create_model("resmlp_micro8", embed_dim=16, depth=1, num_classes=5).eval()
    with torch.no_grad():
        model.head.weight.mul_(2000.0)  # logits of a few hundred
    with torch.no_grad():
        scale = float(model(torch.randn(3, 3, 8, 8)).abs().max())
    assert scale > 50
    off = lambda d: lambda x: model(x) + d  # an exported copy that differs by d everywhere
    assert check_export(model, off(3e-6 * scale), what="test") == pytest.approx(3e-6 * scale, rel=0.05)
    with pytest.raises(ExportError, match=r"differs from eager by .* > 0.0001 x logit scale .*--tolerance"):
        check_export(model, off(3e-4 * scale), what="test")
    check_export(model, off(3e-4 * scale), what="test", atol=1e-3)  # a looser tolerance accepts it
    small = create_model("resmlp_micro8", embed_dim=16, depth=1, num_classes=5).eval()
    with pytest.raises(ExportError):  # logits below 1 are held to the tolerance itself
        check_export(small, lambda x: small(x) + 2e-4, what="test")


# ----------------------------------------------------------------------------------------- weights files


def _checkpoint(tmp_path):
    model = create_model("resmlp_micro8", embed_dim=8, depth=1, num_classes=3)
    return atomic_save(model_record(model), tmp_path / "good.pt"), model


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _hostile_weights(tmp_path):
    good, _ = _checkpoint(tmp_path)
    data = good.read_bytes()
    files = {
        "zero.pt": b"",
        "truncated.pt": data[: len(data) // 2],
        "random.pt": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "pickle_code.pt": pickle.dumps(RunsCode()),
        "text.pt": b"hello, I am not a checkpoint\n",
    }
    buf = tmp_path / "zip_code.pt"
    torch.save({"model": RunsCode()}, buf)  # a real torch zip whose pickle would run code
    files["zip_code.pt"] = buf.read_bytes()
    header = b'{"head.weight": {"dtype": "F32", "shape": [1000000, 1000000], "data_offsets": [0, 16]}}'
    files["lying.safetensors"] = struct.pack("<Q", len(header)) + header + b"\0" * 16
    files["huge_header.safetensors"] = struct.pack("<Q", 2**62) + b"{}"
    return files


EXPECTED = {
    "zero.pt": "empty file (0 bytes)",
    "truncated.pt": "truncated or corrupt PyTorch zip archive",
    "random.pt": "not a PyTorch weights file",
    "pickle_code.pt": "not a PyTorch weights file",
    "text.pt": "not a PyTorch weights file",
    "zip_code.pt": "refused: the pickle references posix.system",
    "lying.safetensors": "not a valid safetensors file",
    "huge_header.safetensors": "not a valid safetensors file",
}


@pytest.mark.parametrize("command", ["predict", "export"])
def test_hostile_weights_files_end_in_one_safe_error_line(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "img.png")
    for name, data in _hostile_weights(tmp_path).items():
        (tmp_path / name).write_bytes(data)
        args = [name, "img.png"] if command == "predict" else [name, "--format", "torchscript", "--out", "x.ts"]
        assert main([command, *args]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {name}: {EXPECTED[name]}"), (name, err)
        assert "weights_only" not in err[0]
    assert not (tmp_path / "PWNED").exists()  # no pickled code ran


def test_nan_weights_load_with_a_warning(tmp_path):
    good, model = _checkpoint(tmp_path)
    sd = model.state_dict()
    sd["head.weight"][0, 0] = float("nan")
    with pytest.warns(NonFiniteWeightsWarning, match=r"1 tensor\(s\) hold NaN or inf values: head.weight"):
        load_weights(create_model("resmlp_micro8", embed_dim=8, depth=1, num_classes=3), sd)


# ----------------------------------------------------------------------------------------- images


def _png_header_only(width, height):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _broken_images(tmp_path):
    buf = tmp_path / "ok.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf)
    jpeg = buf.read_bytes()
    Image.new("RGB", (64, 64)).save(tmp_path / "ok.webp")
    webp = (tmp_path / "ok.webp").read_bytes()
    return {
        "zero.png": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "garbage.png": b"\x89PNG\r\n\x1a\nxxxx",
        "truncated.webp": webp[: len(webp) // 2],
        "bomb.png": _png_header_only(30_000, 30_000),
    }


def test_broken_images_are_bad_image_errors_and_a_bomb_is_refused_before_decoding(tmp_path):
    for name, data in _broken_images(tmp_path).items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadImageError, match=name):
            ImageDataset([(tmp_path / name, 0)], on_bad="fail").load(0)
    with pytest.raises(BadImageError, match=r"900 Mpx is above the limit of 100 Mpx .*max_image_pixels"):
        load_rgb(tmp_path / "bomb.png")
    small = _png_header_only(200, 200)
    (tmp_path / "big.png").write_bytes(small)
    with pytest.raises(BadImageError, match=r"200x200 = 0 Mpx is above the limit of 0.01 Mpx"):
        load_rgb(tmp_path / "big.png", max_pixels=10_000)
    assert DataConfig().max_image_pixels == MAX_IMAGE_PIXELS  # the config's default is the loader's


def test_predict_reports_a_bomb_and_the_flag_lifts_the_limit(tmp_path, capsys):
    model = create_model("resmlp_micro8", embed_dim=8, depth=1, num_classes=3)
    atomic_save(model_record(model), tmp_path / "m.pt")
    (tmp_path / "bomb.png").write_bytes(_png_header_only(12_000, 10_000))  # 120 Mpx, a few bytes
    assert main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "bomb.png")]) == 1
    assert "120 Mpx is above the limit of 100 Mpx" in capsys.readouterr().err


def test_training_folder_with_every_kind_of_bad_file_trains_and_logs_them(tmp_path):
    data = _folder(tmp_path / "data")
    for name, blob in _broken_images(tmp_path).items():
        (data / "a" / name).write_bytes(blob)
    os.symlink("loop.jpg", data / "b" / "loop.jpg")  # a symlink to itself
    os.symlink("..", data / "b" / "up")  # a directory loop: not followed
    (data / "b" / os.fsdecode(b"caf\xe9.png")).write_bytes(b"not an image")  # a Latin-1 (not UTF-8) name
    cfg = load_config(None, TINY + ["data.source=folder", f"data.path={data}", "optim.epochs=1", "data.val_split=0.2"])
    from resmlp.train.run import train

    with pytest.warns(UserWarning):
        summary = train(cfg, out=tmp_path / "run")
    log = (tmp_path / "run" / "bad_files.tsv").read_bytes()
    assert summary["epochs"] == 1 and b"caf\xe9.png" in log and b"loop.jpg" in log


def test_folder_problems_are_one_line(tmp_path, capsys):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert main(["train", "--data", str(tmp_path / "loop"), "--out", str(tmp_path / "r")]) == 2
    assert "is a broken symbolic link or a symbolic-link loop" in capsys.readouterr().err
    bad = tmp_path / "bad"
    (bad / os.fsdecode(b"\xff\xfeclass")).mkdir(parents=True)
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "r2")]) == 2
    assert r"class folder name b'\xff\xfeclass' is not valid UTF-8" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    assert main(["train", "--data", str(empty), "--out", str(tmp_path / "r3")]) == 2
    assert "no images with extensions" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- configs

BAD_CONFIGS = {
    "empty.yaml": ("", "the file is empty"),
    "wrong_type.yaml": ("optim:\n  lr: fast\n", "optim.lr: expected a number, got 'fast'"),
    "unknown.yaml": ("optim:\n  lrr: 0.1\n", "unknown key optim.lrr"),
    "huge_int.yaml": ("optim:\n  epochs: " + "9" * 40 + "\n", "optim.epochs: an integer of about 40 digits is too"),
    "long_int.yaml": ("optim:\n  epochs: " + "9" * 5000 + "\n", "holds a value that cannot be read"),
    "huge_float.yaml": ("optim:\n  lr: 1e400\n", "optim.lr: expected a finite number, got inf"),
    "alias.yaml": ("a: &x [1]\nb: *x\n", "aliases (*name) are not allowed"),
    "deep.yaml": ("[" * 5000 + "]" * 5000, "not valid YAML"),
    "not_utf8.yaml": (b"optim:\n  lr: \xff\n", "not a UTF-8 text file"),
    "list.yaml": ("- 1\n- 2\n", "expected a mapping of sections"),
    "number_keys.yaml": ("1: 2\nnull: 3\n", "unknown key"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_configs_are_one_error_line(tmp_path, capsys, name):
    text, expected = BAD_CONFIGS[name]
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert main(["train", "--recipe", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert len(err[0]) < 600


def test_set_values_that_are_not_yaml_are_one_error_line(capsys):
    with pytest.raises(ConfigError, match=r"override 'data.path=\[1': the value is not valid YAML"):
        load_config(None, ["data.path=[1"])
    assert main(["train", "--set", "optim.lr=1e999"]) == 2
    assert "optim.lr: expected a finite number" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- loader workers


def test_loader_workers_are_capped_at_the_cores_of_this_process(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert (loader_workers(8), loader_workers(1), loader_workers(0)) == (2, 1, 0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes share the two cores
    assert loader_workers(8) == dist.default_threads() == 1
