"""Publish a model on the Hugging Face Hub: the packaged directory (timm's config.json schema +
model.safetensors, see `packaged.save_pretrained`) plus a model card README.md written from the run's
config.yaml, summary.json and eval.json. `push_to_hub` is the only function here that uses the network.

Both take a model, or the path of one of our run directories, checkpoints or packaged directories (read
here through `checkpoint` and `packaged`: `loading`, which downloads published weights by name through this
package, sits beside it); a run directory is the run the card describes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import yaml
from torch import nn

from ..checkpoint import model_from_checkpoint, read_checkpoint
from ..files import write_text_atomic
from ..models import ModelSpec, count_params, timm_architecture
from ..rundir import RunDir, run_of_checkpoint
from .download import huggingface_hub_module
from .packaged import CARD_NAME, CONFIG_NAME, from_pretrained, save_pretrained


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None


def _run_records(run_dir: Optional[Path]) -> tuple[dict, dict, dict]:
    """(config.yaml, summary.json, eval.json) of a run directory; empty dicts for what is missing."""
    if run_dir is None:
        return {}, {}, {}
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run directory")
    run = RunDir(run_dir)
    config = yaml.safe_load(run.config.read_text()) if run.config.is_file() else {}
    return config or {}, _read_json(run.summary) or {}, _read_json(run.eval) or {}


def _pct(value: Any) -> str:
    return f"{value:.2f}%" if isinstance(value, (int, float)) else "not recorded"


def _what(spec: ModelSpec) -> str:
    a = spec.args
    if spec.arch == "resnet":
        return f"A CIFAR ResNet-{6 * a['blocks_per_stage'] + 2} (He et al. 2016) image classifier"
    family = "ResMLP (Touvron et al. 2021)" if spec.arch == "resmlp" else "MLP-Mixer (Tolstikhin et al. 2021)"
    return (
        f"A {family} image classifier, {a['depth']} blocks of width {a['embed_dim']} over "
        f"{a['patch_size']}x{a['patch_size']} patches,"
    )


def model_card(spec: ModelSpec, *, params: int, run_dir: Optional[Path] = None, repo_id: Optional[str] = None) -> str:
    """The README.md of a Hub repository holding a model of `spec`: front matter (tags, license, metrics),
    then what it is, how to load it, its data, recipe and metrics (from `run_dir`), and its intended use."""
    config, summary, evaluation = _run_records(run_dir)
    timm_name = timm_architecture(spec)
    data, optim, distill = config.get("data", {}), config.get("optim", {}), config.get("distill", {})
    pre = spec.preprocess
    classes = spec.class_names()
    repo = repo_id or "<user>/<repo>"
    front = [
        "---",
        "license: apache-2.0",
        f"library_name: {'timm' if timm_name else 'resmlp'}",
        "pipeline_tag: image-classification",
        "tags:",
        "- image-classification",
        "- resmlp",
        *(["- timm"] if timm_name else []),
        "---",
        "",
    ]
    lines = [
        f"# {spec.name}" + (f" (timm `{timm_name}`)" if timm_name else ""),
        "",
        f"{_what(spec)} for {pre.img_size}x{pre.img_size} images, {spec.num_classes} classes, {params:,} "
        "parameters, packaged by the resmlp package (a PyTorch reference implementation of ResMLP and MLP-Mixer).",
        "",
        "## How to use",
        "",
        "```python",
        "import resmlp",
        "import huggingface_hub",
        f'model = resmlp.from_pretrained(huggingface_hub.snapshot_download("{repo}"))',
        "```",
    ]
    if timm_name:
        lines += [
            "",
            "timm opens the same directory (`config.json` in timm's schema, weights in timm's key layout):",
            "",
            "```python",
            "import timm",
            f'model = timm.create_model("hf-hub:{repo}", pretrained=True)',
            "```",
        ]
    lines += [
        "",
        f"Preprocessing: resize to {pre.img_size / pre.crop_pct:.0f} px ({pre.interpolation}), center crop "
        f"{pre.img_size} px (crop_pct {pre.crop_pct}), normalise with mean {list(pre.mean)} and std "
        f"{list(pre.std)}.",
        "",
        "## Data",
        "",
    ]
    if data:
        where = data.get("path") or "bundled with scikit-learn" if data.get("source") == "digits" else data.get("path")
        val = data.get("val_path") or (
            f"{data.get('val_split', 0):.0%} of the training images held out (seed {data.get('split_seed', 0)})"
        )
        lines += [f"- training data: `{data.get('source')}` ({where})", f"- validation: {val}"]
    else:
        lines += ["- not recorded (the model was not packaged from a resmlp run directory)"]
    lines += [
        f"- classes ({len(classes)}): {', '.join(classes[:20])}{' ...' if len(classes) > 20 else ''}",
        "",
        "## Training recipe",
        "",
    ]
    if optim:
        lines += [
            f"- optimizer {optim.get('name')}, lr {optim.get('lr')} per {optim.get('lr_batch')} images, "
            f"weight decay {optim.get('weight_decay')}, {optim.get('epochs')} epochs "
            f"({optim.get('warmup_epochs')} warm-up), batch {data.get('batch_size')} per process",
            f"- augmentation: crop {data.get('crop')}, RandAugment {data.get('auto_augment')}, mixup "
            f"{data.get('mixup_alpha')}, cutmix {data.get('cutmix_alpha')}, random erasing {data.get('re_prob')}, "
            f"label smoothing {data.get('label_smoothing')}",
            f"- stochastic depth {spec.args.get('drop_path_rate', 0.0)}"
            + (f"; distilled from {distill.get('teacher')}" if distill.get("teacher") else ""),
        ]
    else:
        lines += ["- not recorded"]
    lines += ["", "## Metrics", ""]
    if summary:
        lines += [
            f"- validation top-1: best {_pct(summary.get('best_val_top1'))}, final "
            f"{_pct(summary.get('final_val_top1'))} (top-5 {_pct(summary.get('final_val_top5'))}) after "
            f"{summary.get('epochs')} epochs, {summary.get('wall_time_s', 0) / 60:.1f} min on "
            f"{summary.get('processes', 1)} x {summary.get('device')}"
        ]
    if evaluation:
        lines += [
            f"- evaluation on `{evaluation.get('data')}` ({evaluation.get('count')} images, TTA "
            f"{evaluation.get('tta', 'none')}): top-1 {_pct(evaluation.get('top1'))}, "
            f"top-5 {_pct(evaluation.get('top5'))}"
        ]
    if not summary and not evaluation:
        lines += ["- not recorded"]
    lines += [
        "",
        "## Intended use and limitations",
        "",
        f"Classifying images of the {len(classes)} classes above, prepared as described, or as a starting "
        "point for fine-tuning (`resmlp train --finetune`) and as a backbone "
        "(`resmlp.create_model(..., features_only=True)`). The accuracy holds for images like the "
        "training data only; it is no measure of fitness for any decision about people.",
        "",
    ]
    return "\n".join(front + lines)


def model_to_publish(source: nn.Module | str | os.PathLike) -> tuple[nn.Module, Optional[Path]]:
    """`source` as a model, and the run directory it was trained in (None when it is not one of ours): a
    model, a packaged directory, a run directory or one of its checkpoints (best.pt before last.pt)."""
    if isinstance(source, nn.Module):
        return source, None
    path = Path(source)
    if (path / CONFIG_NAME).is_file() or path.name == CONFIG_NAME:
        return from_pretrained(path), None
    model = model_from_checkpoint(read_checkpoint(path))
    if RunDir(path).is_run():
        return model, path
    return model, run_of_checkpoint(path)


def package_for_hub(
    source: nn.Module | str | os.PathLike,
    directory: str | os.PathLike,
    *,
    run_dir: Optional[str | os.PathLike] = None,
    repo_id: Optional[str] = None,
) -> Path:
    """Write what `push_to_hub` uploads into `directory`: config.json, model.safetensors and the model
    card README.md. `source`: a model, or a path `model_to_publish` reads; the card's data, recipe and
    metrics come from `run_dir` (default: the run directory `source` lives in, if any)."""
    model, found_run = model_to_publish(source)
    out = save_pretrained(model, directory)
    run = Path(run_dir) if run_dir is not None else found_run
    card = model_card(model.spec, params=count_params(model), run_dir=run, repo_id=repo_id)
    write_text_atomic(out / CARD_NAME, card)
    return out


def push_to_hub(
    source: nn.Module | str | os.PathLike,
    repo_id: str,
    *,
    run_dir: Optional[str | os.PathLike] = None,
    private: bool = False,
    token: Optional[str] = None,
    commit_message: str = "Upload resmlp model",
) -> str:
    """Package `source` (see `package_for_hub`) and upload it to the Hub repository `repo_id` (created if
    missing). Online only; needs huggingface_hub and a token (`huggingface-cli login` or `token=`).
    Returns the URL of the commit."""
    hf = huggingface_hub_module()
    with tempfile.TemporaryDirectory() as tmp:
        folder = package_for_hub(source, Path(tmp) / "model", run_dir=run_dir, repo_id=repo_id)
        api = hf.HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
