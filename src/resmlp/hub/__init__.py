"""Pretrained weights, one home: published weights by name (`download`), the packaged model directory and
the config every export carries (`packaged`), and publishing on the Hugging Face Hub with a model card
(`publish`). It sits beside `resmlp.loading`, which reads names and packaged directories through it;
nothing here imports the loader (publishing takes a model: `resmlp.load_model` makes one from a path).
"""

from .download import (
    LEGACY_TAGS,
    create_model,
    fetch_pretrained,
    hub_offline,
    hub_repo_id,
    huggingface_hub_module,
    pretrained,
    pretrained_tags,
    resolve_tag,
)
from .packaged import (
    CARD_NAME,
    CONFIG_NAME,
    FORMAT_VERSION,
    PRETRAINED_FORMAT,
    TIMM_BIN_NAME,
    WEIGHTS_NAME,
    from_pretrained,
    packaged_config,
    packaged_weights,
    save_pretrained,
)
from .publish import model_card, package_for_hub, push_to_hub

__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "LEGACY_TAGS",
    "PRETRAINED_FORMAT",
    "TIMM_BIN_NAME",
    "WEIGHTS_NAME",
    "create_model",
    "fetch_pretrained",
    "from_pretrained",
    "hub_offline",
    "hub_repo_id",
    "huggingface_hub_module",
    "model_card",
    "package_for_hub",
    "packaged_config",
    "packaged_weights",
    "pretrained",
    "pretrained_tags",
    "push_to_hub",
    "resolve_tag",
    "save_pretrained",
]
