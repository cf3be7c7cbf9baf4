"""Loading: YAML recipes (bundled by name or a file path, `base:` chains), `--set key=value` overrides,
the renames of older run directories (`_migrate`), and writing a resolved config back as YAML."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence, Union

import yaml

from .coerce import build_dataclass, short_repr
from .schema import ConfigError, TrainConfig

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def config_from_dict(values: dict) -> TrainConfig:
    """Build and check a config from nested mappings (a recipe, a run's config.yaml or checkpoint)."""
    return build_dataclass(TrainConfig, _migrate(values or {}), "")


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


# Keys that moved out of `run` into their own sections: old recipes, run directories and overrides still load.
MOVED_RUN_KEYS = {
    "time_limit_min": ("budget", "time_limit_min"),
    "fit_to_time_limit": ("budget", "fit_to_time_limit"),
    "progressive_sizes": ("progressive", "sizes"),
    "progressive_mode": ("progressive", "mode"),
}


def _migrate(values: dict) -> dict:
    """Rename the keys of older run directories and recipes: `data.img_size` -> `model.img_size`,
    `model.overrides: {...}` -> the model fields (whose names are then checked like any other key), and the
    budget and progressive keys of `run` -> their sections (`run.time_limit_min` -> `budget.time_limit_min`,
    `run.progressive_sizes` -> `progressive.sizes`, ...)."""
    values = _migrate_run(values)
    values = _migrate_teacher_bf16(values)
    model, data = values.get("model"), values.get("data")
    if model is not None and not isinstance(model, dict):
        return values  # build_dataclass names the problem
    legacy_model = isinstance(model, dict) and "overrides" in model
    legacy_data = isinstance(data, dict) and "img_size" in data
    if not (legacy_model or legacy_data):
        return values
    model = dict(model) if isinstance(model, dict) else {}
    moved = model.pop("overrides", None) or {}
    if not isinstance(moved, dict):
        raise ConfigError(f"model.overrides: expected a mapping of model fields, got {moved!r}")
    model.update(moved)
    if legacy_data:
        data = dict(data)
        img_size = data.pop("img_size")
        if img_size is not None:  # it took precedence over the model's img_size before the move
            model["img_size"] = img_size
    return {**values, "model": model, **({"data": data} if legacy_data else {})}


def _migrate_teacher_bf16(values: dict) -> dict:
    """`distill.teacher_bf16: true/false` (older run directories) -> `distill.teacher_precision: bf16/fp32`."""
    distill = values.get("distill")
    if not isinstance(distill, dict) or "teacher_bf16" not in distill:
        return values
    distill = dict(distill)
    old = distill.pop("teacher_bf16")
    if "teacher_precision" in distill:
        raise ConfigError(
            "distill.teacher_bf16 and distill.teacher_precision are the same setting; give only "
            "distill.teacher_precision"
        )
    distill["teacher_precision"] = "bf16" if old is True or str(old).lower() == "true" else "fp32"
    return {**values, "distill": distill}


def _migrate_run(values: dict) -> dict:
    run = values.get("run")
    if not isinstance(run, dict) or not any(key in run for key in MOVED_RUN_KEYS):
        return values
    out = {**values, "run": {k: v for k, v in run.items() if k not in MOVED_RUN_KEYS}}
    for old, (section, key) in MOVED_RUN_KEYS.items():
        if old not in run:
            continue
        target = out.get(section)
        if target is not None and not isinstance(target, dict):
            return values  # build_dataclass names the problem
        if isinstance(target, dict) and key in target:
            raise ConfigError(f"run.{old} and {section}.{key} are the same setting; give only {section}.{key}")
        out[section] = {**(target or {}), key: run[old]}
    return out


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# An override is a `--set` string ("optim.lr=1e-3", its value parsed as YAML) or a typed (key, value) pair
# (what dedicated CLI flags such as --data give: the value reaches the config as it is, never re-parsed).
Override = Union[str, tuple[str, Any]]


def override_dict(key: str, value: Any) -> dict:
    """('data.path', '/my data #1') -> {'data': {'path': '/my data #1'}}: the value is taken as given."""
    out: Any = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def parse_override(item: Override) -> dict:
    """'optim.lr=1e-3' -> {'optim': {'lr': 0.001}} (the value is parsed as YAML: numbers, lists, null);
    a (key, value) pair is taken as typed."""
    if isinstance(item, tuple):
        return override_dict(*item)
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-3)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.load(raw, Loader=_NoAliasLoader) if raw.strip() else None
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise ConfigError(
            f"override {short_repr(item)}: the value is not valid YAML ({_first_line(e)[:120]}); "
            "quote strings that hold ': ' or start with special characters"
        ) from None
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
    return override_dict(key, value)


def _looks_like_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def resolve_recipe(recipe: str, relative_to: Path | None = None) -> Path:
    """A recipe name (`digits`, `cifar10_cpu`, ...) from the bundled recipes, or a YAML file path
    (relative to `relative_to` when given: the folder of the recipe that names it as its `base`)."""
    path = Path(recipe)
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        return path
    bundled = RECIPES_DIR / f"{recipe}.yaml"
    if not bundled.is_file():
        names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown recipe {recipe!r}; bundled recipes: {', '.join(names)} (or give a YAML file)")
    return bundled


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load without anchors/aliases: a recipe has no use for them, and nested aliases expand to
    exponentially many values ("billion laughs") once the config is walked."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a config", event.start_mark
            )
        return super().compose_node(parent, index)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        values = yaml.load(text, Loader=_NoAliasLoader)
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{path}: not valid YAML ({_first_line(e)})") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{path}: holds a value that cannot be read ({_first_line(e)[:120]})") from None
    if values is None:
        raise ConfigError(
            f"{path}: the file is empty; a recipe is a mapping of sections (model, data, optim, distill, run)"
        )
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, optim, distill, run)")
    try:
        return _fix_floats(values)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None


def _fix_floats(values: Any) -> Any:
    if isinstance(values, dict):
        return {k: _fix_floats(v) for k, v in values.items()}
    if isinstance(values, list):
        return [_fix_floats(v) for v in values]
    if isinstance(values, str) and _looks_like_float(values) and any(c in values for c in "eE"):
        return float(values)
    return values


def load_recipe(recipe: str) -> dict:
    """The values of a recipe merged over those of its `base:` recipe (and its base's, ...). Each file is
    checked on its own, so an error names the file that holds the bad key."""
    return _load_recipe(resolve_recipe(recipe), ())


def _load_recipe(path: Path, chain: tuple[Path, ...]) -> dict:
    chain = (*chain, path.resolve())
    if chain[-1] in chain[:-1]:
        raise ConfigError(f"recipe base cycle: {' -> '.join(map(str, chain))}")
    values = load_yaml(path)
    base = values.pop("base", None)
    try:
        values = _migrate(values)
        config_from_dict(values)
        if base is not None and not isinstance(base, str):
            raise ConfigError(f"base: expected a recipe name or a YAML path, got {base!r}")
        base_path = resolve_recipe(base, relative_to=path.parent) if base is not None else None
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return values if base_path is None else _deep_merge(_load_recipe(base_path, chain), values)


def load_config(recipe: str | None = None, overrides: Sequence[Override] = (), base: dict | None = None) -> TrainConfig:
    """Defaults <- `base` (e.g. a resumed run's config) <- recipe YAML <- overrides (`--set` strings or
    typed (key, value) pairs, see `parse_override`)."""
    values = _migrate(dict(base or {}))
    if recipe:
        values = _deep_merge(values, load_recipe(recipe))
    for item in overrides:
        values = _deep_merge(values, _migrate(parse_override(item)))
    return config_from_dict(values)


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
