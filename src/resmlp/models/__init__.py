"""Model families: ResMLP (the paper) and MLP-Mixer (the baseline), and their registry."""
from .backbone import PatchClassifier
from .flops import count_macs, count_params
from .layers import Affine, DropPath, Mlp, PatchStem
from .mixer import MixerBlock, MlpMixer
from .registry import VARIANTS, Preprocess, Variant, create_model, get_variant, list_models, model_args
from .resmlp import ResMLP, ResMLPBlock

__all__ = [
    "Affine", "DropPath", "Mlp", "PatchStem", "PatchClassifier", "ResMLP", "ResMLPBlock", "MixerBlock",
    "MlpMixer", "VARIANTS", "Preprocess", "Variant", "create_model", "get_variant", "list_models",
    "model_args", "count_macs", "count_params",
]
