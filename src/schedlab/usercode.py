"""User code named as ``module:attribute`` (schedules, datasets, models): found and hashed.

A module is looked up in the installed packages first, then in the folders of the study files
read so far (``add_study_dir``: a study's own modules sit beside it, whatever the current
directory), then in the current directory (a script's habit). Its source is hashed into the
ids of the runs that use it, so editing it makes new runs. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")

# Folders searched after the installed packages, in the order they were added.
_STUDY_DIRS: list[str] = []


def add_study_dir(folder: str | os.PathLike[str]) -> None:
    """Search ``folder`` (a study file's own) for user modules, after the installed packages."""
    path = os.path.abspath(folder)
    if path not in _STUDY_DIRS:
        _STUDY_DIRS.append(path)


def search_dirs() -> list[str]:
    """The folders searched after the installed packages: the study files' folders, then the
    current directory (a Ray worker is handed this process's list)."""
    return [*_STUDY_DIRS, os.getcwd()]


def _search_path() -> None:
    for path in search_dirs():
        if path not in sys.path:
            sys.path.append(path)


def lookup(
    name: str,
    entries: Mapping[str, T],
    kind: str,
    user_defined: Callable[[str], T],
    form: str = "module:function",
) -> T:
    """A registry's entry ``name``, or the user's ``module:attribute`` through
    ``user_defined``; an unknown name is a one-line ValueError listing the valid ones."""
    if is_reference(name):
        return user_defined(name)
    if name not in entries:
        valid = ", ".join(sorted(entries))
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {valid}, or {form}")
    return entries[name]


def is_reference(name: str) -> bool:
    """Whether ``name`` names user code (``module:attribute``) rather than a registry entry."""
    return ":" in name


def load(reference: str, kind: str) -> tuple[Any, ModuleType]:
    """(the attribute, its module) for ``module:attribute``; a one-line ValueError naming the
    ``kind`` (dataset, model, schedule) when it cannot be imported or is not callable."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{kind} {reference!r} must be written module:function")
    _search_path()
    try:
        module = importlib.import_module(module_name)
        value = getattr(module, attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot import {kind} {reference!r}: {err}") from err
    except Exception as err:  # the module itself raised while being imported
        raise ValueError(
            f"cannot import {kind} {reference!r}: {type(err).__name__}: {err}"
        ) from err
    if not callable(value):
        raise ValueError(f"{kind} {reference!r} is not callable")
    return value, module


def source_hash(module: ModuleType) -> str:
    """A hash of the module's source: editing a user module's file makes its runs new ones."""
    try:
        text = inspect.getsource(module)
    except (OSError, TypeError):  # no source file (built in, or made at run time)
        text = repr(sorted(vars(module)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def first_line(value: Any, fallback: str) -> str:
    return ((value.__doc__ or fallback).strip().splitlines() or [fallback])[0]


def reference_of(value: Any, kind: str) -> str:
    """``module:function`` for a Python function (or class) given in place of a name: what run
    ids hash and what a Ray worker imports. It must be importable by that name."""
    module, name = getattr(value, "__module__", None), getattr(value, "__qualname__", "")
    if not module or not name or "<" in name:
        raise ValueError(
            f"a {kind} given as a Python object must be a function defined at the top level "
            f"of a module, got {value!r}"
        )
    return f"{module}:{name}"
