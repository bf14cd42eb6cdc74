"""The model registry. Built-in models are lazy ``"module:attr"`` entries, so listing models imports
no model code; outside packages add theirs through the ``ntdmbench.models`` entry-point group, or
in-process with ``@MODELS.register("name")``.

An entry is a class (or factory) called with keyword arguments (``--model-args``) that returns a
``Predictor``; ``build_model`` is the one place that calls it.
"""

from __future__ import annotations

import inspect
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

from ntdmbench.errors import InputError, MissingFileError
from ntdmbench.models.predictor import Predictor
from ntdmbench.registry import Registry

MODELS: Registry[Callable[..., Predictor]] = Registry("model", entry_point_group="ntdmbench.models")

for _name, _target in {
    "oracle": "ntdmbench.models.reference:OraclePredictor",
    "random": "ntdmbench.models.reference:RandomPredictor",
    "nemo": "ntdmbench.baselines.nemo.model:NeMoPredictor",
    "ntdm": "ntdmbench.ntdm.model:NTDMPredictor",
    "resnet50-pose": "ntdmbench.baselines.resnet:ResNetPosePredictor",
    "resnet50-class": "ntdmbench.baselines.resnet:ResNetClassPredictor",
    "starmap": "ntdmbench.baselines.starmap:StarMapPredictor",
    "mt-maskrcnn": "ntdmbench.baselines.mt_maskrcnn:MultiTaskMaskRCNNPredictor",
    "bayesian-amodal": "ntdmbench.baselines.bayesian_amodal:BayesianAmodalPredictor",
}.items():
    MODELS.register(_name, _target)


def build_model(name: str, args: Mapping[str, Any] | None = None, *, device: str | None = None,
                checkpoint: str | Path | None = None) -> Predictor:
    """The registered model ``name`` built with ``args`` (``--model-args``), then loaded from ``checkpoint``.

    ``device`` reaches the constructor when it takes one and ``args`` does not name it already.
    """
    factory = MODELS.get(name)
    kwargs = dict(args or {})
    if device is not None and "device" not in kwargs and "device" in inspect.signature(factory).parameters:
        kwargs["device"] = device
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise InputError(f"model {name!r}: bad --model-args {kwargs}: {exc}") from None
    except ValueError as exc:  # the model refusing a value of its arguments
        if isinstance(exc, InputError):
            raise
        raise InputError(f"model {name!r}: {exc}") from exc
    if checkpoint:
        if not Path(checkpoint).exists():
            raise MissingFileError(f"{checkpoint}: checkpoint not found")
        try:
            model.load(checkpoint)
        except (RuntimeError, EOFError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            # a model with its own ``load`` (NeMo's official checkpoints) meeting a truncated or foreign file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"{checkpoint}: cannot be loaded into model {name!r} ({type(exc).__name__}: {first})"
                             ) from exc
    return model
