"""resmlp: ResMLP (Touvron et al. 2021) and MLP-Mixer, exact architectures, checkpoint interop,
data-efficient training, paper analyses and deployment."""

from .deploy import fuse, optimize
from .hub import create_model, from_pretrained, pretrained, pretrained_tags, push_to_hub, save_pretrained
from .loading import Loaded, load_model
from .models import (
    Affine,
    MlpMixer,
    ModelSpec,
    Preprocess,
    ResMLP,
    ResMLPBlock,
    count_macs,
    count_params,
    list_models,
    resample_token_mixing,
)
from .weights import WeightsError, convert_state_dict, load_weights, read_state_dict

__version__ = "0.1.0"
__all__ = [
    "Affine",
    "MlpMixer",
    "Preprocess",
    "ResMLP",
    "ResMLPBlock",
    "WeightsError",
    "count_macs",
    "count_params",
    "convert_state_dict",
    "create_model",
    "pretrained",
    "list_models",
    "load_weights",
    "read_state_dict",
    "from_pretrained",
    "fuse",
    "optimize",
    "Loaded",
    "load_model",
    "ModelSpec",
    "pretrained_tags",
    "push_to_hub",
    "save_pretrained",
    "resample_token_mixing",
]
