"""Settings dataclasses filled from a predictor's flat ``--model-args`` fields of the same names.

A model's inference or training settings are a dataclass that holds their defaults; the predictor
declares the same names as its fields (with those defaults) so they stay flat command-line arguments
and part of ``describe()["config"]``. ``settings_from`` copies them across by name, so a setting and its
default are written once.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

S = TypeVar("S")


def settings_from(cls: type[S], predictor: Any) -> S:
    """``cls`` with every field the ``predictor`` dataclass also has taken from it; the fields it lacks
    (internal knobs) keep ``cls``'s defaults."""
    names = {f.name for f in fields(predictor)}
    return cls(**{f.name: getattr(predictor, f.name) for f in fields(cls) if f.name in names})
