"""The predictor contract every model implements, and a base class with checkpoint hashing.

Models never compute metrics: they return ``Prediction`` records and the scorer does the rest.
"""

from __future__ import annotations

import enum
import hashlib
import pickle
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Sequence, runtime_checkable

from ntdmbench.datasets.base import Dataset
from ntdmbench.datasets.records import Prediction, Sample
from ntdmbench.errors import InputError, MissingFileError

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
                raise InputError(f"{f.name}={value!r}: expected {'an integer' if kind == 'int' else 'a number'}"
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


def read_checkpoint(path: str | Path) -> Any:
    """What a checkpoint file holds; a missing, truncated or non-torch file is one line naming it."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""  # torch adds advice
        raise InputError(f"{path}: not a readable checkpoint, truncated or not written by torch.save "
                         f"({type(exc).__name__}: {first})") from None


def state_sha256(payload: Any) -> str:
    """SHA-256 of a checkpoint's content (every tensor's dtype, shape and bytes; every other value's repr;
    mappings in key order). The file's own hash is not used: ``torch.save`` embeds the file name, so the
    same weights saved under two names would hash differently."""
    digest = hashlib.sha256()
    _feed(digest, payload)
    return digest.hexdigest()


def _feed(digest: "hashlib._Hash", value: Any) -> None:
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"tensor:{t.dtype}:{tuple(t.shape)}:".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        digest.update(f"array:{value.dtype.str}:{value.shape}:".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        digest.update(f"dict:{len(value)}:".encode())
        for key in sorted(value, key=repr):
            digest.update(f"{key!r}=".encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}:{len(value)}:".encode())
        for item in value:
            _feed(digest, item)
    elif hasattr(value, "__dict__") and not isinstance(value, type):  # e.g. an argparse.Namespace: its
        digest.update(f"object:{type(value).__qualname__}:".encode())  # fields, not a repr with an address
        _feed(digest, vars(value))
    else:
        digest.update(f"{value!r};".encode())


def sha256_file(path: str | Path) -> str:
    """A checkpoint file's identity: the hash of what it holds (``state_sha256``), not of its bytes, so the
    same weights under another file name (which ``torch.save`` embeds) hash the same. Every model uses it,
    official checkpoints included, so a run key never depends on where a checkpoint was saved."""
    return state_sha256(read_checkpoint(path))


def _holds(payload: Any) -> str:
    """What a foreign checkpoint holds, in a few words."""
    if isinstance(payload, dict):
        keys = ", ".join(map(str, list(payload)[:5])) + (", ..." if len(payload) > 5 else "")
        return f"a dict with keys {keys}" if payload else "an empty dict"
    return f"a {type(payload).__name__}"


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
        payload = {"model": self.name, "config": self.config(), "state": self.state_dict()}
        torch.save(payload, tmp)
        tmp.replace(path)  # never leave a half-written checkpoint under the real name
        self.checkpoint_sha256 = state_sha256(payload)
        return self.checkpoint_sha256

    def load(self, path: str | Path) -> None:
        """Load this project's checkpoint of this model; anything else is refused with one line."""
        payload = read_checkpoint(path)
        if not (isinstance(payload, dict) and {"model", "state"} <= set(payload)):
            raise InputError(f"{path}: holds {_holds(payload)}, not an ntdmbench checkpoint (model, config, state)")
        if payload["model"] != self.name:
            raise InputError(f"{path}: a checkpoint of model {payload['model']!r}, not of {self.name!r}")
        self.load_state_dict(payload["state"])
        self.checkpoint_sha256 = state_sha256(payload)

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
