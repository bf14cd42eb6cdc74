"""The rotation convention of PASCAL3D+, NeMo and StarMap, on numpy or torch: the camera builds its
extrinsics from it and the scorer measures errors with it, so both read this one definition.

``R(a, e, theta) = Rz(theta) Rx(-(pi/2 - e)) Rz(-a)``, angles in radians (README, Conventions).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def array_module(x: Any):
    """numpy or torch, whichever the input belongs to."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


def _stack_matrix(xp, rows: list[list[Any]]):
    if xp is np:
        return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)
    return xp.stack([xp.stack(r, dim=-1) for r in rows], dim=-2)


def _rz(xp, phi):
    c, s, zero, one = xp.cos(phi), xp.sin(phi), xp.zeros_like(phi), xp.ones_like(phi)
    return _stack_matrix(xp, [[c, -s, zero], [s, c, zero], [zero, zero, one]])


def _rx(xp, phi):
    c, s, zero, one = xp.cos(phi), xp.sin(phi), xp.zeros_like(phi), xp.ones_like(phi)
    return _stack_matrix(xp, [[one, zero, zero], [zero, c, -s], [zero, s, c]])


def rotation_matrix(azimuth, elevation, theta):
    """``Rz(theta) Rx(-(pi/2 - e)) Rz(-a)`` for angles in radians; any (broadcastable) batch shape.

    numpy in, numpy out (float64); torch in, torch out (differentiable).
    """
    xp = next((array_module(v) for v in (azimuth, elevation, theta) if array_module(v) is not np), np)
    if xp is np:
        a, e, t = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (azimuth, elevation, theta)))
    else:
        a, e, t = xp.broadcast_tensors(*(xp.as_tensor(v) for v in (azimuth, elevation, theta)))
    return _rz(xp, t) @ _rx(xp, -(math.pi / 2 - e)) @ _rz(xp, -a)
