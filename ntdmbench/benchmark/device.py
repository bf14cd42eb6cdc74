"""``--device``: refused up front when this machine does not have it, instead of every sample failing."""

from __future__ import annotations

from ntdmbench.errors import InputError


def check_device(device: str) -> str:
    """``device`` unchanged if it names a device this machine has; else one line saying what it has."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {device!r}: not a device (cpu, cuda, cuda:N or mps)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise InputError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}, "
                             f"{build}); use --device cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise InputError(f"--device {device}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif parsed.type != "cpu":
        raise InputError(f"--device {device}: not supported (cpu, cuda, cuda:N or mps)")
    return device
