"""Where a result came from: code version, environment, device and seeds (lm-eval / detectron2 style)."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ntdmbench

PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pandas", "easypytorch3d")


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the checkout the package runs from (None outside a git checkout)."""
    cwd = path or Path(ntdmbench.__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty) if commit else None}


@functools.lru_cache(maxsize=None)
def _commit() -> str | None:
    return git_state()["commit"]


def code_identity(model: object) -> dict[str, Any]:
    """The code behind a result, for the run key: ntdmbench's version and git commit (None outside a git
    checkout) and, for a model defined outside the package (a plugin), the SHA-256 of its module's source.

    The dirty flag is left out: it says that something changed, not what, so it would neither separate two
    different edits nor keep one; uncommitted edits to the package need ``--fresh`` (provenance records them).
    """
    out: dict[str, Any] = {"ntdmbench": ntdmbench.__version__, "commit": _commit()}
    source = getattr(sys.modules.get(type(model).__module__), "__file__", None)
    package = Path(ntdmbench.__file__).resolve().parent
    if source and not Path(source).resolve().is_relative_to(package):
        out["model_source_sha256"] = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    return out


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "ntdmbench": ntdmbench.__version__}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": device, "cpu": platform.processor() or platform.machine(),
                            "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        info.update(gpu=torch.cuda.get_device_name(idx), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), gpu_count=torch.cuda.device_count())
    return info


def collect(device: str, seed: int) -> dict[str, Any]:
    return {
        "git": git_state(),
        "versions": package_versions(),
        "device": device_info(device),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "argv": sys.argv,
        "seed": seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
