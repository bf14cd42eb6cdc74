"""The predictor contract every model implements, and a base class with checkpoint hashing.

Models never compute metrics: they return ``Prediction`` records and the scorer does the rest.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Sequence, runtime_checkable

from ntdmbench.datasets.base import Dataset
from ntdmbench.datasets.records import Prediction, Sample

if TYPE_CHECKING:  # torch stays off the import path of listing models
    from ntdmbench.models.training import Resume


class Capability(str, enum.Enum):
    POSE = "pose"
    CLASS = "class"
    AMODAL = "amodal"


@dataclass(frozen=True)
class InputSpec:
    """What the model expects of its input (timm's PretrainedCfg idea): size, normalisation, hints."""

    image_size: tuple[int, int] | None = None  # (H, W); None: any size
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    needs_category: bool = False  # e.g. NeMo scored with the GT category's mesh
    needs_box: bool = False


def coerce_numbers(settings) -> None:
    """Make a dataclass's ``int`` and ``float`` fields (optional ones too) numbers: ``--model-args`` and
    suite YAML read ``1e-3`` as text."""
    for f in fields(settings):
        kind = f.type.removesuffix(" | None") if isinstance(f.type, str) else None
        value = getattr(settings, f.name)
        if kind in ("int", "float") and value is not None and not isinstance(value, bool):
            try:
                setattr(settings, f.name, int(value) if kind == "int" else float(value))
            except (TypeError, ValueError):
                raise ValueError(f"{f.name}={value!r}: expected {'an integer' if kind == 'int' else 'a number'}"
                                 ) from None


@runtime_checkable
class Predictor(Protocol):
    name: str
    capabilities: frozenset[Capability]
    input_spec: InputSpec

    def fit(self, dataset: Dataset, *, categories: Sequence[str], resume: Resume | None = None,
            device: str = "cpu", seed: int = 0, progress: bool = True) -> None:
        """Train on the samples of ``categories``; keep a resumable state in ``resume``
        (``models/training.py``). Models with nothing to train raise ``NotImplementedError``."""
        ...

    def predict(self, batch: Sequence[Sample]) -> list[Prediction]: ...

    def save(self, path: str | Path) -> str: ...

    def load(self, path: str | Path) -> None: ...

    def describe(self) -> dict[str, Any]: ...


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class BasePredictor:
    """Shared plumbing: a config dataclass, the checkpoint hash and ``describe()``.

    Subclasses set ``name``, ``capabilities``, ``paper`` and implement ``predict``; trainable models
    override ``fit``, ``state_dict`` and ``load_state_dict``.
    """

    name: ClassVar[str] = "base"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    input_spec: ClassVar[InputSpec] = InputSpec()
    paper: ClassVar[str] = ""
    checkpoint_sha256: str | None = field(default=None, init=False, repr=False)

    def fit(self, dataset: Dataset, *, categories: Sequence[str], resume: Resume | None = None,
            device: str = "cpu", seed: int = 0, progress: bool = True) -> None:
        raise NotImplementedError(f"model {self.name!r} has nothing to train")

    def predict(self, batch: Sequence[Sample]) -> list[Prediction]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "checkpoint_sha256"}

    def save(self, path: str | Path) -> str:
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"model": self.name, "config": self.config(), "state": self.state_dict()}, tmp)
        tmp.replace(path)  # never leave a half-written checkpoint under the real name
        self.checkpoint_sha256 = sha256_file(path)
        return self.checkpoint_sha256

    def load(self, path: str | Path) -> None:
        import torch

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint not found")
        payload = torch.load(path, map_location="cpu", weights_only=False)
        self.load_state_dict(payload["state"] if isinstance(payload, dict) and "state" in payload else payload)
        self.checkpoint_sha256 = sha256_file(path)

    def num_parameters(self) -> int:
        return 0

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "capabilities": sorted(c.value for c in self.capabilities),
            "input_spec": asdict(self.input_spec),
            "config": self.config(),
            "checkpoint_sha256": self.checkpoint_sha256,
            "paper": self.paper,
            "num_parameters": self.num_parameters(),
        }
