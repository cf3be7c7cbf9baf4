"""Model families: ResMLP (the paper) and MLP-Mixer (the baseline), and their registry."""

from .backbone import FeatureMaps, PatchClassifier, take_indices
from .decoding import beam_search, greedy
from .flops import count_macs, count_params
from .init import TOKEN_MIXING_INITS, grid_shape, init_token_mixing, local_kernel, local_token_matrix
from .layers import ACTIVATIONS, NORMS, Affine, DropPath, Mlp, PatchStem, TokenBatchNorm, make_norm
from .mixer import MixerBlock, MlpMixer
from .registry import (
    VARIANTS,
    ModelSpec,
    Preprocess,
    PretrainedWeights,
    Variant,
    as_backbone,
    create_model,
    get_variant,
    list_models,
    model_args,
)
from .resample import METHODS as RESAMPLE_METHODS
from .resample import resample_optimizer_state, resample_state_dict, resample_token_mixing
from .resmlp import POOLINGS, TOKEN_MIXINGS, ClassMlpBlock, ResMLP, ResMLPBlock, TokenConv
from .sequence import (
    SEQ_VARIANTS,
    ResMLPLanguageModel,
    ResMLPTranslator,
    SeqSpec,
    SequenceLengthError,
    TransformerLanguageModel,
    TransformerTranslator,
    create_seq_model,
    list_seq_models,
)
from .timm_config import from_timm_config, timm_architecture, to_timm_config
from .tta import TestTimeAugment, shift_image, tta_view_count, tta_views, with_tta
from .whiten import WHITENINGS, freeze_stem, patch_vectors, whiten_patch_embedding, whitening_matrix

__all__ = [
    "SEQ_VARIANTS",
    "ResMLPLanguageModel",
    "ResMLPTranslator",
    "SequenceLengthError",
    "SeqSpec",
    "TransformerLanguageModel",
    "TransformerTranslator",
    "beam_search",
    "create_seq_model",
    "greedy",
    "list_seq_models",
    "Affine",
    "DropPath",
    "Mlp",
    "PatchStem",
    "PatchClassifier",
    "FeatureMaps",
    "take_indices",
    "PretrainedWeights",
    "as_backbone",
    "from_timm_config",
    "timm_architecture",
    "to_timm_config",
    "ResMLP",
    "ResMLPBlock",
    "MixerBlock",
    "MlpMixer",
    "VARIANTS",
    "ModelSpec",
    "Preprocess",
    "Variant",
    "create_model",
    "get_variant",
    "list_models",
    "model_args",
    "count_macs",
    "count_params",
    "TOKEN_MIXING_INITS",
    "grid_shape",
    "init_token_mixing",
    "local_kernel",
    "local_token_matrix",
    "TestTimeAugment",
    "shift_image",
    "tta_view_count",
    "tta_views",
    "with_tta",
    "WHITENINGS",
    "freeze_stem",
    "patch_vectors",
    "whiten_patch_embedding",
    "whitening_matrix",
    "ACTIVATIONS",
    "NORMS",
    "POOLINGS",
    "TOKEN_MIXINGS",
    "ClassMlpBlock",
    "TokenBatchNorm",
    "TokenConv",
    "make_norm",
    "RESAMPLE_METHODS",
    "resample_optimizer_state",
    "resample_state_dict",
    "resample_token_mixing",
]
