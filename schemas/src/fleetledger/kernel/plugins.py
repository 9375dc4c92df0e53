"""Callables named by settings and flags as ``package.module:attribute``."""

from __future__ import annotations

import importlib
from typing import Any

from fleetledger.kernel.errors import ConfigError, one_line

__all__ = ["load_callable"]


def load_callable(spec: str, *, where: str, expected: str) -> Any:
    """The callable ``spec`` (``package.module:attribute``, dots allowed after the colon)
    names; a :class:`ConfigError` starting with ``where`` (the setting or flag) otherwise.
    ``expected`` says what it should be (``function``, ``factory``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{where}: found {spec!r}, expected package.module:{expected}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {module_name!r} ({one_line(exc)})") from None
    found: Any = module
    for part in attr.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise ConfigError(f"{where}: module {module_name!r} has no {attr!r}")
    if not callable(found):
        raise ConfigError(
            f"{where}: {spec} is a {type(found).__name__}, expected a callable {expected}"
        )
    return found
