"""A small typed registry: decorator registration, lazy ``"module:attr"`` entries and entry points.

Lazy entries keep heavy imports (PyTorch3D, torchvision detection) off the start-up path: the
module is imported only when the name is first looked up. Entry points let an outside package add
entries after ``pip install`` without the harness importing it first; built-in names win a clash.
"""

from __future__ import annotations

import difflib
import importlib
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

from ntdmbench.errors import NtdmbenchError

T = TypeVar("T")


class UnknownNameError(NtdmbenchError, KeyError):
    """A name that no registry entry answers to; the message lists the close matches."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain sentence
        return str(self.args[0])


class LoadError(NtdmbenchError, ImportError):
    """A registered entry (an entry point, a suite's ``register``) whose module fails to import."""


def _load_lazy(target: str):
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"lazy registry entry {target!r} must look like 'package.module:attribute'")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Maps names to objects, to lazy ``"module:attr"`` strings, or to entry points."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T | str] = {}
        self._entry_points_loaded = entry_point_group is None
        self._from_entry_points: set[str] = set()

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | T | str:
        """``@registry.register("name")`` as a decorator, or ``registry.register("name", obj)``.

        ``obj`` may be a ``"module:attr"`` string, imported on first ``get``.
        """
        if obj is not None:
            self._add(name, obj)
            return obj

        def decorator(target: T) -> T:
            self._add(name, target)
            return target

        return decorator

    def _add(self, name: str, obj: T | str) -> None:
        existing = self._entries.get(name)
        if existing is not None and existing is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj

    def _discover_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:  # built-ins win a name clash
                self._entries[ep.name] = ep.value
                self._from_entry_points.add(ep.name)

    def get(self, name: str) -> T:
        self._discover_entry_points()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._entries)) or 'none'})"
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            try:
                entry = _load_lazy(entry)
            except Exception as exc:  # noqa: BLE001 - whatever a plugin's import raises, name the plugin
                if entry.startswith("ntdmbench.") and not isinstance(exc, (ImportError, AttributeError)):
                    raise  # a bug in the project's own code keeps its traceback
                where = "entry point" if name in self._from_entry_points else "entry"
                raise LoadError(f"{self.kind} {name!r} could not be loaded from {where} {entry!r}: "
                                f"{type(exc).__name__}: {exc}") from exc
            self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        self._discover_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._discover_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
