"""Checkpoint interop: load official deit-repo, timm and our own weights; convert between layouts.

Layouts of the same ResMLP weights:
  deit (facebookresearch/deit resmlp_models.py): patch_embed.proj, blocks.i.attn (the N x N matrix A),
      blocks.i.mlp.fc1/fc2, blocks.i.gamma_1/gamma_2, Aff alpha/beta of shape [D].
  timm (= ours): stem.proj, blocks.i.linear_tokens, blocks.i.mlp_channels.fc1/fc2, blocks.i.ls1/ls2,
      Aff alpha/beta of shape [1, 1, D].
Loading never unpickles code: `torch.load(weights_only=True)` or safetensors.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Mapping, Union

import torch
from torch import nn

from .models.init import grid_shape
from .models.layers import to_pair
from .models.resample import DEFAULT_METHOD, grid_of, resample_state_dict, token_axis_kind

StateDict = dict[str, torch.Tensor]
Source = Union[str, os.PathLike, Mapping[str, object]]

# Keys under which training scripts commonly nest the weights (ours use "model"; "model_ema" is
# consulted only when asked for).
_WRAPPER_KEYS = ("model", "state_dict", "model_state", "module")
_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel and torch.compile wrappers


class WeightsError(ValueError):
    """A weights file or state dict that does not fit the model; the message says what and where."""


class NonFiniteWeightsWarning(UserWarning):
    """Loaded weights hold NaN/inf values."""


def read_state_dict(source: Source, *, key: str | None = None) -> StateDict:
    """Read a `.pth`/`.pt`/`.safetensors` file (or take a mapping) and return the bare tensor dict.

    Wrapped checkpoints ({"model": {...}, "optimizer": ...}) are unwrapped; `key` picks a specific entry
    (e.g. "model_ema"). `module.` / `_orig_mod.` prefixes are stripped.
    """
    name = "state dict"
    if isinstance(source, Mapping):
        obj: object = source
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise WeightsError(f"{path}: no such weights file")
        obj = read_safetensors(path) if path.suffix == ".safetensors" else torch_load_safely(path)
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            raise WeightsError(f"{name}: has no entry {key!r}")
        obj = obj[key]
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise WeightsError(
                f"{name}: no state dict found (top-level keys: {', '.join(map(str, list(obj)[:8]))}); "
                f"expected tensors or one of {', '.join(_WRAPPER_KEYS)}"
            )
        obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{name}: expected a dict of tensors, got {type(obj).__name__}")
    return {_strip_prefixes(k): v for k, v in obj.items()}


def torch_load_safely(path: str | os.PathLike) -> object:
    """`torch.load(weights_only=True)` on CPU: tensors and plain containers only, never pickled code. Any
    failure is a WeightsError that says what the file is not (and never suggests unsafe loading)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": noise for a user
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a user-facing file problem
        raise WeightsError(f"{path}: {_load_failure(path, e)}") from None


def _load_failure(path: Path, error: Exception) -> str:
    """Why torch.load(weights_only=True) refused `path`, in our words (torch's own message ends with advice
    to retry with weights_only=False, which is exactly what must not be done with a stranger's file)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    text = str(error)
    if size == 0:
        return "empty file (0 bytes); not a weights file"
    blocked = re.search(r"GLOBAL ([\w.]+)", text)
    if blocked:
        return (
            f"refused: the pickle references {blocked.group(1)}, which a weights file never needs "
            "(loading it could run code); only tensors and plain containers are read"
        )
    if magic.startswith(b"PK"):
        return f"truncated or corrupt PyTorch zip archive ({size} bytes); the file is damaged or incomplete"
    if isinstance(error, PermissionError):
        return f"cannot read ({error.strerror})"
    if isinstance(error, pickle.UnpicklingError) or "Unsupported operand" in text:
        return (
            "not a PyTorch weights file: its pickle holds something other than tensors and plain "
            "containers (or is not a pickle at all)"
        )
    return (
        f"not a PyTorch weights file (neither a readable zip archive nor a pickle of tensors; {type(error).__name__})"
    )


def read_safetensors(path: str | os.PathLike) -> StateDict:
    """A .safetensors file's tensors; a malformed file (bad header, sizes that do not add up) is a WeightsError."""
    from safetensors.torch import load_file  # noqa: PLC0415

    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: a user-facing file problem
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: not a valid safetensors file ({first})") from None


def warn_if_nonfinite(sd: Mapping[str, torch.Tensor], where: str) -> None:
    """Warn (NonFiniteWeightsWarning) when floating-point tensors hold NaN or inf: such a model outputs NaN."""
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        warnings.warn(
            f"{where}: {len(bad)} tensor(s) hold NaN or inf values: {', '.join(bad[:3])}{more}; "
            "the model's outputs will not be finite",
            NonFiniteWeightsWarning,
            stacklevel=3,
        )


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def detect_layout(sd: Mapping[str, torch.Tensor]) -> str:
    """'deit' or 'timm' (ours). Raises WeightsError for something that is neither."""
    keys = list(sd)
    if any(k.startswith("patch_embed.") for k in keys) or any(".gamma_1" in k or ".attn." in k for k in keys):
        return "deit"
    if any(k.startswith("stem.") for k in keys) or any(".linear_tokens." in k or ".mlp_tokens." in k for k in keys):
        return "timm"
    raise WeightsError(
        "cannot tell the checkpoint layout: expected deit keys (patch_embed.proj.*, blocks.i.attn.*) "
        f"or timm keys (stem.proj.*, blocks.i.linear_tokens.*); first keys: {', '.join(keys[:5])}"
    )


# (deit name, timm name): the stem is a key prefix, the rest are fragments inside block keys.
_STEM = ("patch_embed.", "stem.")
_BLOCK_PARTS = ((".attn.", ".linear_tokens."), (".mlp.", ".mlp_channels."), (".gamma_1", ".ls1"), (".gamma_2", ".ls2"))


def _rename(key: str, to: str) -> str:
    i, j = (0, 1) if to == "timm" else (1, 0)
    if key.startswith(_STEM[i]):
        key = _STEM[j] + key[len(_STEM[i]) :]
    for pair in _BLOCK_PARTS:
        key = key.replace(pair[i], pair[j])
    return key


def convert_state_dict(sd: Mapping[str, torch.Tensor], to: str) -> StateDict:
    """Convert a ResMLP state dict (either layout) to `to` = "deit" or "timm". Tensors are not copied."""
    if to not in ("deit", "timm"):
        raise WeightsError(f"unknown target layout {to!r}; expected 'deit' or 'timm'")
    src = detect_layout(sd)
    if src == to:
        return dict(sd)
    if to == "deit" and any(".mlp_tokens." in k for k in sd) and not any(k.endswith(".ls1") for k in sd):
        raise WeightsError("MLP-Mixer weights have no deit layout (the deit repo has no Mixer); use --to timm")
    out: StateDict = {}
    for k, v in sd.items():
        k = _rename(k, to)
        if k.endswith(".alpha") or k.endswith(".beta"):  # Aff: deit stores [D], timm [1, 1, D]
            v = v.reshape(1, 1, -1) if to == "timm" else v.reshape(-1)
        out[k] = v
    return out


def load_weights(
    model: nn.Module,
    source: Source,
    *,
    key: str | None = None,
    allow_head_mismatch: bool = False,
    resample: Union[bool, str] = False,
    source_grid: Union[int, tuple[int, int], None] = None,
) -> nn.Module:
    """Load `source` (path to .pth/.pt/.safetensors, or a state dict) into `model`, in place.

    The layout (official deit, timm, ours) is detected automatically. Any mismatch raises a
    WeightsError listing missing keys, unexpected keys and shape conflicts. With
    `allow_head_mismatch=True` a head of a different class count is skipped and re-initialised
    (fine-tuning to a new label set).

    Weights made for another patch grid (another input size) fail with an error naming both grids, unless
    `resample` is True (the default method, "interp") or a method name ("interp", "offset", "kernel"): then the token
    mixing is carried to the model's grid (`resmlp.resample_token_mixing`). `source_grid` gives the
    checkpoint's (h, w) grid when it is not square.
    """
    sd = convert_state_dict(read_state_dict(source, key=key), to="timm")
    own = model.state_dict()
    sd = _fit_grid(model, own, sd, source, resample, source_grid)
    if allow_head_mismatch:
        head_differs = any(k.startswith("head.") and k in own and own[k].shape != v.shape for k, v in sd.items())
        if head_differs:  # keep the model's own head, freshly initialised
            if hasattr(model, "reset_classifier"):
                model.reset_classifier(model.num_classes)
            own = model.state_dict()
            sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
            sd.update({k: v for k, v in own.items() if k.startswith("head.")})
    problems = _mismatches(own, sd)
    if problems:
        where = source if not isinstance(source, Mapping) else "state dict"
        raise WeightsError(f"{where} does not fit {_model_name(model)}: " + "; ".join(problems))
    warn_if_nonfinite(sd, str(source) if not isinstance(source, Mapping) else "state dict")
    model.load_state_dict(sd, strict=True)
    return model


def _fit_grid(
    model: nn.Module,
    own: Mapping[str, torch.Tensor],
    sd: StateDict,
    source: Source,
    resample: Union[bool, str],
    source_grid: Union[int, tuple[int, int], None],
) -> StateDict:
    """`sd` with its token mixing resampled to the model's patch grid when asked; a WeightsError naming both
    grids when they differ and it was not asked."""
    key = next((k for k in sd if token_axis_kind(k) in ("matrix", "in") and k in own), None)
    if key is None or sd[key].shape[-1] == own[key].shape[-1]:
        return sd
    model_grid = grid_shape(model)
    try:
        ck_grid = to_pair(source_grid) if source_grid is not None else grid_of(sd[key].shape[-1])
    except ValueError:
        ck_grid = None
    patch = model.stem.patch_size
    where = source if not isinstance(source, Mapping) else "state dict"

    def describe(grid: tuple[int, int] | None, n: int) -> str:
        if grid is None:
            return f"{n} tokens (not a square grid)"
        return f"a {grid[0]}x{grid[1]} patch grid ({n} tokens, {grid[0] * patch}x{grid[1] * patch} px at patch {patch})"

    if not resample or ck_grid is None:
        how = (
            (
                "load_weights(..., resample=True) (CLI: --resample), or resmlp.resample_token_mixing(state_dict, "
                f"grid={model_grid}) first; or build the model at the checkpoint's size"
            )
            if ck_grid is not None
            else "pass source_grid=(h, w) with resample=True"
        )
        raise WeightsError(
            f"{where} was made for {describe(ck_grid, sd[key].shape[-1])}, the model "
            f"{_model_name(model)} has {describe(model_grid, own[key].shape[-1])}; to resample the "
            f"token mixing to the model's grid use {how}"
        )
    method = resample if isinstance(resample, str) else DEFAULT_METHOD
    try:
        return resample_state_dict(sd, model_grid, old_grid=ck_grid, method=method)
    except ValueError as e:
        raise WeightsError(f"{where}: {e}") from None


def _model_name(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)  # built by create_model; a hand-built model has none
    return spec.name if spec is not None else type(model).__name__


def _mismatches(own: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], limit: int = 10) -> list[str]:
    def fmt(keys: list[str]) -> str:
        more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more

    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    out = []
    if missing:
        out.append(f"missing keys: {fmt(missing)}")
    if unexpected:
        out.append(f"unexpected keys: {fmt(unexpected)}")
    if shapes:
        out.append(f"shape conflicts: {fmt(shapes)}")
    return out


def download_path(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where `download_weights` keeps the file of `url` (the torch hub cache unless `cache_dir`)."""
    cache = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    return cache / url.rsplit("/", 1)[-1]


def download_weights(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Download an official checkpoint (online users only) into the torch hub cache; returns its path."""
    dst = download_path(url, cache_dir)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        try:
            torch.hub.download_url_to_file(url, str(dst), progress=True)  # writes a temp file, then renames
        except OSError as e:
            raise WeightsError(f"could not download {url}: {e}") from None
    return dst
