"""The model registry. Built-in models are lazy ``"module:attr"`` entries, so listing models imports
no model code; outside packages add theirs through the ``ntdmbench.models`` entry-point group, or
in-process with ``@MODELS.register("name")``.

An entry is a class (or factory) called with keyword arguments (``--model-args``) that returns a
``Predictor``.
"""

from __future__ import annotations

from typing import Any, Callable

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


def build_model(name: str, **kwargs: Any) -> Predictor:
    return MODELS.get(name)(**kwargs)
