"""Strategies, discovered from the modules of this package.

Each module that defines ``STRATEGY_CLASS`` (see :mod:`quantorch.strategies.base`) is one
strategy, registered under its ``name``. Adding a strategy is adding one module.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from quantorch.strategies.base import Strategy, StrategyClass, StrategyParams

from quantorch.errors import PluginError, UserInputError, did_you_mean

__all__ = [
    "Strategy",
    "StrategyClass",
    "StrategyParams",
    "available_strategies",
    "get_strategy",
    "strategy_class",
]

_NOT_STRATEGIES = frozenset({"base"})


@functools.cache
def _registry() -> dict[str, StrategyClass]:
    found: dict[str, StrategyClass] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_") or module_info.name in _NOT_STRATEGIES:
            continue
        qualified = f"{__name__}.{module_info.name}"
        try:
            module = importlib.import_module(qualified)
        except Exception as exc:
            raise PluginError(
                f"strategy module '{qualified}' failed to import: {exc!r} (fix or remove it)"
            ) from exc
        cls = getattr(module, "STRATEGY_CLASS", None)
        if cls is None:
            continue  # a helper module
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not isinstance(getattr(cls, "Params", None), type):
            raise PluginError(
                f"strategy module '{qualified}': STRATEGY_CLASS needs a string 'name' and a "
                "'Params' model class (see quantorch/strategies/base.py)"
            )
        if name in found:
            raise PluginError(f"strategy name '{name}' is defined twice (in '{qualified}' too)")
        found[name] = cls
    return found


def available_strategies() -> list[str]:
    """Names of all registered strategies, sorted."""
    return sorted(_registry())


def strategy_class(name: str) -> StrategyClass:
    """The class registered as ``name`` (case and ``_``/``-`` insensitive)."""
    registry = _registry()
    key = name.strip().lower().replace("_", "-")
    if key in registry:
        return registry[key]
    names = sorted(registry)
    hint = did_you_mean(key, names)
    raise UserInputError(f"unknown strategy '{name}'{hint}; available: {', '.join(names)}")


def get_strategy(name: str, params: Mapping[str, Any] | None = None) -> Strategy:
    """A configured strategy.

    Raises
    ------
    UserInputError
        The name is unknown (the message suggests the closest one and lists all), or a
        parameter is unknown or invalid (the message names it and lists the valid ones).
    """
    cls = strategy_class(name)
    try:
        validated = cls.Params.model_validate(dict(params or {}))
    except ValidationError as exc:
        raise UserInputError(_describe(cls, exc)) from exc
    return cls(validated)


def _describe(cls: StrategyClass, exc: ValidationError) -> str:
    fields = cls.Params.model_fields
    valid = ", ".join(f"{k} (default {f.default!r})" for k, f in fields.items()) or "none"
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        hint = did_you_mean(field, list(fields))
        return (
            f"strategy '{cls.name}': unknown parameter '{field}'{hint}; valid parameters: {valid}"
        )
    message = first["msg"].removeprefix("Value error, ")
    where = f"parameter '{field}'" if field else "parameters"
    got = first.get("input")
    got_text = f", got {got!r}" if field and not isinstance(got, dict | list) else ""
    return f"strategy '{cls.name}': {where}: {message}{got_text}; valid parameters: {valid}"
