"""Unlearning methods, one small module each, registered by name.

``METHODS`` maps a name to its :class:`MethodInfo` (origin, one-line summary, recipe dataclass,
function). Add a method by writing ``unlearnx/methods/<name>.py`` that calls :func:`register`; every
module in this package is imported here, so nothing else needs editing.
"""
import importlib
import pkgutil

from .base import (METHODS, PRESETS, MethodInfo, Recipe, UnlearnContext, describe, get_method, make_recipe,
                   parse_overrides, preset_changes, preset_for, register, run_method)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base" and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["METHODS", "PRESETS", "MethodInfo", "Recipe", "UnlearnContext", "describe", "get_method", "make_recipe",
           "parse_overrides", "preset_changes", "preset_for", "register", "run_method"]
