"""Published weights by name: `create_model(name, pretrained=True | TAG)`.

Weights resolve through the Hugging Face Hub (`huggingface_hub`, optional extra `hub`): repo
`timm/<timm name>.<tag>`, file `model.safetensors` in timm's key layout, plus its `config.json`
(preprocessing, class count). That brings the Hub cache, `HF_HOME`, `HF_HUB_CACHE` and `HF_HUB_OFFLINE`
for free. When the Hub copy cannot be had (no huggingface_hub, no such repo, no network) the original file
(deit repo / timm release) is downloaded once into the torch hub cache instead; offline, only a copy
already in one of the two caches is used.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from torch import nn

from ..models import FeatureMaps, ModelSpec, PretrainedWeights, as_backbone, from_timm_config, get_variant, model_args
from ..models import create_model as build_model
from ..models.backbone import Indices
from ..weights import WeightsError, convert_state_dict, download_path, download_weights, load_weights, read_state_dict
from .packaged import CONFIG_NAME, WEIGHTS_NAME

# The deit repo's names for its files, accepted for the timm tags they became.
LEGACY_TAGS = {"no_dist": "fb_in1k", "dist": "fb_distilled_in1k", "in22k": "fb_in22k_ft_in1k"}


def pretrained_tags(name: str) -> list[str]:
    """timm's tags of the published weights for variant `name` (the first is the default); [] if none."""
    return list(get_variant(name).weights)


def resolve_tag(name: str, pretrained: Union[bool, str]) -> str:
    """The tag `pretrained` asks for: True = the variant's default, a string = that tag (or a deit alias)."""
    tags = pretrained_tags(name)
    tag = tags[0] if pretrained is True and tags else LEGACY_TAGS.get(str(pretrained), str(pretrained))
    if tag not in tags:
        asked = "pretrained weights" if pretrained is True else f"pretrained weights tagged {pretrained!r}"
        raise WeightsError(f"no {asked} for {name}; available: {', '.join(tags) or 'none'}")
    return tag


def hub_repo_id(name: str, tag: str) -> str:
    """The Hub repository timm publishes variant `name`'s `tag` weights under."""
    return f"timm/{get_variant(name).timm_name}.{tag}"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (it reads the variable once, at import)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.HF_HUB_OFFLINE)


def huggingface_hub_module():
    """huggingface_hub, or an error line saying how to install it."""
    try:
        import huggingface_hub
    except ImportError:
        raise WeightsError("the Hugging Face Hub needs huggingface_hub: pip install 'resmlp[hub]'") from None
    return huggingface_hub


class _HubUnavailable(Exception):
    """The Hub copy cannot be had (no huggingface_hub, offline and not cached, no such repo, network)."""


def _from_hub(repo_id: str, cache_dir: Optional[str | os.PathLike]) -> tuple[Path, Optional[dict[str, Any]]]:
    """(weights file, parsed config.json or None) of `repo_id` through the Hub cache."""
    try:
        hf = huggingface_hub_module()
    except WeightsError as e:
        raise _HubUnavailable(str(e)) from None
    from huggingface_hub.errors import EntryNotFoundError  # a lazy submodule: import it by name

    # Offline-and-not-cached, HTTP (incl. no such repo) and network errors are OSErrors; a missing file is not.
    unavailable = (OSError, EntryNotFoundError)
    try:
        weights = Path(hf.hf_hub_download(repo_id, WEIGHTS_NAME, cache_dir=cache_dir))
    except unavailable as e:
        raise _HubUnavailable(f"{repo_id} not reachable and not in the HF cache ({type(e).__name__})") from None
    try:
        config = json.loads(Path(hf.hf_hub_download(repo_id, CONFIG_NAME, cache_dir=cache_dir)).read_text())
    except (*unavailable, ValueError):  # the weights alone still say enough (the registry has the rest)
        config = None
    return weights, config


def fetch_pretrained(
    name: str, tag: str, *, cache_dir: Optional[str | os.PathLike] = None
) -> tuple[Path, Optional[dict[str, Any]]]:
    """The local weights file of `name`'s `tag` weights and the Hub config.json that came with it (None
    for the fallback file). `cache_dir` replaces the HF cache (and the torch hub cache for the fallback)."""
    published: PretrainedWeights = get_variant(name).weights[tag]
    try:
        return _from_hub(hub_repo_id(name, tag), cache_dir)
    except _HubUnavailable as e:
        hub_problem = str(e)
    fallback = download_path(published.url, cache_dir)
    if hub_offline() and not fallback.is_file():
        raise WeightsError(
            f"{name} {tag}: offline (HF_HUB_OFFLINE is set) and not cached: {hub_problem}; "
            f"nor is the original file at {fallback}"
        )
    try:
        return download_weights(published.url, cache_dir), None
    except WeightsError as e:
        raise WeightsError(f"{name} {tag}: {hub_problem}; the original file failed too: {e}") from None


def create_model(
    name: str,
    pretrained: Union[bool, str] = False,
    *,
    features_only: bool = False,
    out_indices: Indices = None,
    cache_dir: Optional[str | os.PathLike] = None,
    **overrides: Any,
) -> Union[nn.Module, FeatureMaps]:
    """Build registered variant `name` (see `resmlp.models.create_model` for `overrides`, `features_only`
    and `out_indices`). `pretrained=True` loads its default published weights, `pretrained="TAG"` those
    of timm's tag TAG (`pretrained_tags(name)` lists them): class count and preprocessing (`model.spec`)
    follow the weights; `num_classes=K` gives a fresh K-class head on the pretrained body (fine-tuning)."""
    if not pretrained:
        return build_model(name, features_only=features_only, out_indices=out_indices, **overrides)
    tag = resolve_tag(name, pretrained)
    path, hub_config = fetch_pretrained(name, tag, cache_dir=cache_dir)
    sd = convert_state_dict(read_state_dict(path), to="timm")
    spec = _published_spec(name, tag, hub_config, head=sd["head.weight"].shape[0] if "head.weight" in sd else 0)
    new_head = overrides.pop("num_classes", spec.num_classes)
    if set(overrides) - {"drop_path_rate"}:
        raise WeightsError(
            f"pretrained weights fix the architecture of {name}; of the overrides "
            f"{', '.join(sorted(overrides))} only num_classes and drop_path_rate are allowed"
        )
    model = spec.replace(args={**spec.args, **overrides}).build()
    try:
        load_weights(model, sd)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    if new_head != spec.num_classes:
        model.reset_classifier(new_head)
        model.spec = model.spec.replace(args={**model.spec.args, "num_classes": new_head}, classes=None)
    return as_backbone(model, out_indices) if features_only else model


def _published_spec(name: str, tag: str, hub_config: Optional[dict[str, Any]], *, head: int) -> ModelSpec:
    """What the published weights are (`head`: the classes their head has, 0 for a bare trunk such as
    DINO's): from the Hub's config.json when it came, else the registry's record of timm's config."""
    if hub_config is not None:
        try:
            spec = from_timm_config(hub_config)
        except ValueError as e:
            raise WeightsError(f"{hub_repo_id(name, tag)}/config.json: {e}") from None
        spec = dataclasses.replace(spec, name=name)
    else:
        published = get_variant(name).weights[tag]
        _, args = model_args(name, num_classes=published.num_classes)
        spec = ModelSpec(name, args, dataclasses.replace(published.preprocess, img_size=args["img_size"]))
    if spec.num_classes != head:
        spec = spec.replace(args={**spec.args, "num_classes": head}, classes=None)
    return spec


def pretrained(name: str, tag: Union[bool, str] = True, *, cache_dir: Optional[str | os.PathLike] = None) -> nn.Module:
    """`create_model(name, pretrained=tag)`: a registered variant with its published weights."""
    return create_model(name, pretrained=tag, cache_dir=cache_dir)
