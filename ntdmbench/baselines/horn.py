"""Horn's closed-form absolute orientation (Horn 1987, J. Opt. Soc. Am. A 4(4)), weighted and batched.

StarMap recovers the viewpoint by aligning the canonical 3D coordinates its network predicts at the
heatmap peaks to the peaks lifted with their predicted depth: a similarity transform
``target ~ s R source + t`` whose rotation is the camera rotation. Horn's unit-quaternion solution
gives the optimal proper rotation (never a reflection) from the top eigenvector of a symmetric 4x4
matrix; the optimal scale and translation follow in closed form.
"""

from __future__ import annotations

import torch


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` of unit quaternions ``(..., 4)`` in (w, x, y, z) order."""
    w, x, y, z = q.unbind(-1)
    rows = [
        w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (y * x + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x),
        2 * (z * x - w * y), 2 * (z * y + w * x), w * w - x * x - y * y + z * z,
    ]
    return torch.stack(rows, -1).unflatten(-1, (3, 3))


def horn_similarity(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The similarity ``(R, t, s)`` minimising ``sum_i w_i |target_i - (s R source_i + t)|^2``.

    ``source`` and ``target`` are ``(..., N, 3)``, ``weights`` ``(..., N)`` (non-negative; default all
    ones; a zero weight drops a point, so ragged sets are padded with zeros). Returns ``R (..., 3, 3)``,
    ``t (..., 3)`` and ``s (...)``. Sets whose weights sum to zero come out NaN; fewer than three
    non-collinear points leave the rotation undetermined (any optimum is returned).
    """
    if source.shape != target.shape or source.ndim < 2 or source.shape[-1] != 3:
        raise ValueError(f"source and target must both be (..., N, 3); got {tuple(source.shape)} and {tuple(target.shape)}")
    dtype = torch.promote_types(source.dtype, torch.float64)
    src, tgt = source.to(dtype), target.to(dtype)
    if weights is None:
        weights = torch.ones(src.shape[:-1], dtype=dtype, device=src.device)
    if weights.shape != src.shape[:-1]:
        raise ValueError(f"weights must be {tuple(src.shape[:-1])} (one per point); got {tuple(weights.shape)}")
    w = weights.to(dtype).clamp(min=0).unsqueeze(-1)
    total = w.sum(-2, keepdim=True)
    total = torch.where(total > 0, total, torch.nan)
    src_mean, tgt_mean = (w * src).sum(-2, keepdim=True) / total, (w * tgt).sum(-2, keepdim=True) / total
    a, b = src - src_mean, tgt - tgt_mean
    M = (w * a).transpose(-1, -2) @ b  # M[i, j] = sum w a_i b_j
    (sxx, sxy, sxz), (syx, syy, syz), (szx, szy, szz) = (M[..., i, :].unbind(-1) for i in range(3))
    N = torch.stack([
        sxx + syy + szz, syz - szy, szx - sxz, sxy - syx,
        syz - szy, sxx - syy - szz, sxy + syx, szx + sxz,
        szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy,
        sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz,
    ], -1).unflatten(-1, (4, 4))
    finite = torch.isfinite(N).all(-1).all(-1)
    _, vectors = torch.linalg.eigh(torch.where(finite[..., None, None], N, 0))
    R = quaternion_to_matrix(vectors[..., -1])  # eigenvector of the largest eigenvalue
    R = torch.where(finite[..., None, None], R, torch.nan)
    rotated = a @ R.transpose(-1, -2)
    s = (w * b * rotated).sum((-1, -2)) / (w * a * a).sum((-1, -2))
    t = tgt_mean.squeeze(-2) - s.unsqueeze(-1) * (src_mean @ R.transpose(-1, -2)).squeeze(-2)
    return R, t, s
