"""Type coercion: a mapping of YAML values checked against a schema dataclass's annotations and turned
into that dataclass, every error naming the key (`optim.epochs: expected an integer, got 1.5`)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

from .schema import ConfigError


def short_repr(value: Any, limit: int = 60) -> str:
    """repr(value) cut to one readable length (a fuzzed or pasted value can be megabytes long)."""
    if isinstance(value, int) and abs(value) >= 10**30:  # repr of a huge int can itself fail (> 4300 digits)
        return f"an integer of about {max(1, int(value.bit_length() * 0.30103))} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


_PLAIN = {bool: "true/false", str: "a string"}  # types taken as they are -> what an error says was expected


def coerce_value(value: Any, tp: Any, key: str) -> Any:
    """Check/convert `value` to annotation `tp`, naming `key` in the error."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce_value(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        # The most specific complaint wins: "data.mean[1]: expected a number" over "data.mean: expected one of".
        raise ConfigError(max(errors, key=lambda e: len(e.split(":")[0])) if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, str) and value in choices:
            return value
        raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {short_repr(value)}")
    if tp in _PLAIN:  # bool, str: taken as they are
        if isinstance(value, tp):
            return value
        raise ConfigError(f"{key}: expected {_PLAIN[tp]}, got {short_repr(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= 2**63:
                raise ConfigError(f"{key}: {short_repr(value)} is too large (expected an integer below 2**63)")
            return value
        raise ConfigError(f"{key}: expected an integer, got {short_repr(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{key}: expected a finite number, got {short_repr(value)}")
            return number
        raise ConfigError(f"{key}: expected a number, got {short_repr(value)}")
    if tp is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {short_repr(value)}")
        item = typing.get_args(tp)
        return [coerce_value(v, item[0], f"{key}[{i}]") for i, v in enumerate(value)] if item else list(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def build_dataclass(cls: type, values: dict, prefix: str) -> Any:
    """`cls` from `values`: unknown keys are errors, nested sections recurse, `prefix` (`optim.`) names the key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names, key=str)  # YAML keys may be numbers, null, ...
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}; valid keys in {prefix.rstrip('.') or 'the config'}: "
            f"{', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}")
            kwargs[name] = build_dataclass(tp, value, key + ".")
        else:
            kwargs[name] = coerce_value(value, tp, key)
    return cls(**kwargs)
