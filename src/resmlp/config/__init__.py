"""Typed run configuration: frozen dataclasses, loaded from YAML recipes with `--set key=value` overrides.

One name per idea: dataclass field = YAML key = CLI override = metric key (`optim.lr`, `data.batch_size`).
Unknown keys, values of the wrong type and choices outside a `Literal` are errors that name the key.
A recipe may start from another (`base: imagenet_s12`) and list only what differs.

`schema` (the sections, their choice lists and checks), `coerce` (YAML values -> typed dataclasses) and
`load` (recipes, `base:`, overrides, older keys, save). This package sits below data/, optim/ and train/:
it imports only the standard library and yaml.
"""

from .load import (
    Override,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
    resolve_recipe,
    save_config,
)
from .schema import (
    TTA,
    Activation,
    BudgetConfig,
    ConfigError,
    DataConfig,
    DistillConfig,
    ModelConfig,
    Norm,
    Normalization,
    OptimConfig,
    OptimizerName,
    Pooling,
    ProgressiveConfig,
    ProgressiveMode,
    RunConfig,
    Source,
    StemInit,
    TextConfig,
    TokenMixing,
    TokenMixingInit,
    TrainConfig,
)

__all__ = [
    "TTA",
    "Activation",
    "BudgetConfig",
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "ModelConfig",
    "Norm",
    "Normalization",
    "OptimConfig",
    "OptimizerName",
    "Override",
    "Pooling",
    "ProgressiveConfig",
    "ProgressiveMode",
    "RunConfig",
    "Source",
    "StemInit",
    "TokenMixing",
    "TokenMixingInit",
    "TextConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "parse_override",
    "resolve_recipe",
    "save_config",
]
