"""Shared test settings: one intra-op thread, so small forward passes are not slowed by thread
oversubscription on a loaded 2-core CI host (runs that need more set run.threads themselves); and test data
more than one test module writes."""

import os
import subprocess
import sys
from pathlib import Path

import torch

import resmlp

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked `openvino` run last: once OpenVINO's runtime is loaded in this process, a later test that
    starts a subprocess (test_device's fresh interpreters) crashed the whole run with SIGSEGV on the 2-core host."""
    items.sort(key=lambda item: item.get_closest_marker("openvino") is not None)  # stable: order kept otherwise


# The evaluation settings of timm's ImageNet-1k ResMLP weights, as their config.json's pretrained_cfg holds them.
TIMM_IN1K_EVAL = {
    "fixed_input_size": True,
    "interpolation": "bicubic",
    "crop_pct": 0.875,
    "crop_mode": "center",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


# A Hugging Face Hub cache made by a test (published weights offline): the layout huggingface_hub keeps.
SRC = Path(resmlp.__file__).resolve().parents[1]
REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, repo_id: str, files: dict) -> Path:
    """The layout huggingface_hub keeps: models--<org>--<name>/{refs/main, snapshots/<rev>/<files>}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    for name, write in files.items():
        write(snapshot / name)
    return repo


def run_offline(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter with HF_HUB_OFFLINE=1 and the HF cache under tmp_path (the variable
    is read when huggingface_hub is imported, so this cannot be done in-process)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
        "TORCH_HOME": str(tmp_path / "torch"),
        "PYTHONPATH": str(SRC),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def timm_s12_config(tag: str) -> dict:
    """The config.json timm publishes beside ResMLP-S12's ImageNet weights tagged `tag`."""
    return {
        "architecture": "resmlp_12_224",
        "num_classes": 1000,
        "num_features": 384,
        "global_pool": "avg",
        "pretrained_cfg": {
            "tag": tag,
            "input_size": [3, 224, 224],
            **TIMM_IN1K_EVAL,
            "num_classes": 1000,
            "first_conv": "stem.proj",
            "classifier": "head",
        },
    }
