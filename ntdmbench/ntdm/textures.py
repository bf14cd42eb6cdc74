"""NTDM's neural textures (paper §3.1-3.2, eq. 5): b view-specific q x q maps of d-dim features in the
template's polar UV, the viewing coefficients alpha_b, rendering them on a deformed mesh, and the
momentum (M-step) update from image features.

- UV: ``u = atan2(y, x) / 2pi`` (periodic: bilinear sampling wraps across the seam), ``v = 1 - acos(z)
  / pi`` (1 at the north pole) of the unit template vertex. Per-face-corner UVs unwrap faces
  that straddle the seam (u past 1), and a pole corner takes the mean u of its face's other corners.
- Viewing bins: the identity and rotations by ``angle`` (60 degrees) about the +-x, +-y, +-z axes of the
  object frame: 7 bins, 60 degrees apart. ``alpha_b = softmax_b(T * d . R_b(n))`` with ``n`` the surface
  normal and ``d`` the unit direction from the surface point *to* the camera (the paper's d points from
  the camera; its sign is folded into T so that T > 0 favours the bin whose normal faces the camera).
  One bin (Table 3's "single alpha_b") is the identity: a single map per mesh.
- A rendered feature is ``normalize(sum_b alpha_b theta_b(u, v))``, zero off the object.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ntdmbench.models import fused_score, meshes
from ntdmbench.models.camera import Camera, camera_position
from ntdmbench.models.render import interpolate, rasterize


def polar_uv(template: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-face-corner polar UVs of a unit sphere: ``face_uvs (F, 3)`` indexing ``uvs (3F, 2)``."""
    p = F.normalize(template.double(), dim=-1)
    u = torch.remainder(torch.atan2(p[:, 1], p[:, 0]) / (2 * math.pi), 1.0)
    v = 1 - torch.acos(p[:, 2].clamp(-1, 1)) / math.pi
    cu, cv = u[faces], v[faces]  # (F, 3)
    pole = (p[faces][..., :2].norm(dim=-1) < 1e-9)
    cu = torch.where(pole, torch.nan, cu)
    wrap = (cu.nan_to_num(0.5).amax(1, keepdim=True) - cu.nan_to_num(0.5).amin(1, keepdim=True)) > 0.5
    cu = torch.where(wrap & (cu < 0.5), cu + 1, cu)
    cu = torch.where(pole, cu.nansum(1, keepdim=True) / (~pole).sum(1, keepdim=True), cu)
    uvs = torch.stack([cu, cv], -1).reshape(-1, 2).to(template.dtype)
    return torch.arange(3 * len(faces), device=faces.device).reshape(-1, 3), uvs


def sphere_uv(points: torch.Tensor) -> torch.Tensor:
    """``(N, 2)`` polar UV of points on (or projected onto) the unit template sphere."""
    p = F.normalize(points, dim=-1)
    return torch.stack([torch.remainder(torch.atan2(p[:, 1], p[:, 0]) / (2 * math.pi), 1.0),
                        1 - torch.acos(p[:, 2].clamp(-1, 1)) / math.pi], -1)


def _axis_rotation(axis: int, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    R = torch.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def bin_rotations(n_bins: int = 7, angle_deg: float = 60.0) -> torch.Tensor:
    """``(n_bins, 3, 3)``: the identity, then rotations by +-angle about x, y, z (at most 7 bins)."""
    if not 1 <= n_bins <= 7:
        raise ValueError(f"n_bins must be between 1 and 7, got {n_bins}")
    angle = math.radians(angle_deg)
    rotations = [torch.eye(3)] + [_axis_rotation(a, s * angle) for a in range(3) for s in (1, -1)]
    return torch.stack(rotations[:n_bins])


def view_coefficients(normals: torch.Tensor, to_camera: torch.Tensor, rotations: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Eq. 5: ``(..., b)`` softmax over bins of ``T * d . R_b(n)`` for unit normals and view directions ``(..., 3)``."""
    rotated = torch.einsum("bij,...j->...bi", rotations.to(normals), normals)
    return torch.softmax(temperature * (rotated * to_camera.unsqueeze(-2)).sum(-1), -1)


def blend(values: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``normalize(sum_b alpha_b theta_b)``: ``values (..., b, d)``, ``alpha (..., b)`` -> ``(..., d)``."""
    return F.normalize((values * alpha.unsqueeze(-1)).sum(-2), dim=-1)


def _corners(uv: torch.Tensor, q: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The 4 bilinear texels (flat index, weight) of UV points ``(N, 2)`` in a q x q map: texel (r, c)
    is centred at ``u = (c + 0.5) / q``, ``v = 1 - (r + 0.5) / q``; periodic in u, clamped in v."""
    x = torch.remainder(uv[:, 0], 1.0) * q - 0.5
    y = ((1 - uv[:, 1]) * q - 0.5).clamp(0, q - 1)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    out = []
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        cols = (x0.long() + dx) % q
        rows = (y0.long() + dy).clamp(0, q - 1)
        out.append((rows * q + cols, w))
    return out


class NeuralTexture(nn.Module):
    """``maps (b, d, q, q)``: one category's unit-norm neural texture (a buffer: updated by momentum,
    not SGD). Sampling is bilinear (``grid_sample``) and periodic in u: a copy with one wrapped texel
    column on each side is kept until the maps change."""

    def __init__(self, n_bins: int = 7, feature_dim: int = 128, size: int = 256,
                 generator: torch.Generator | None = None):
        super().__init__()
        if size < 2:
            raise ValueError(f"texture size q must be >= 2, got {size}")
        maps = torch.randn(n_bins, feature_dim, size, size, generator=generator)
        self.register_buffer("maps", F.normalize(maps, dim=1))
        self._layouts: dict[str, tuple[tuple, torch.Tensor]] = {}

    @property
    def n_bins(self) -> int:
        return self.maps.shape[0]

    def state(self) -> tuple:
        """A key that changes when the maps do (momentum updates, loading, moving), for caches of their values."""
        return self.maps.data_ptr(), self.maps._version, self.maps.device, self.maps.dtype

    def _layout(self, name: str, make) -> torch.Tensor:
        """``make(maps)``, kept until the maps change."""
        key = self.state()
        if name not in self._layouts or self._layouts[name][0] != key:
            self._layouts[name] = (key, make(self.maps))
        return self._layouts[name][1]

    def _wrapped(self) -> torch.Tensor:
        return self._layout("wrapped", lambda m: torch.cat([m[..., -1:], m, m[..., :1]], -1).flatten(0, 1)[None]
                            .contiguous())

    def texels(self) -> torch.Tensor:
        """``(q, q, b, d)``: the maps texel-major, the layout of ``fused_score.texture_score``."""
        return self._layout("texels", lambda m: m.permute(2, 3, 0, 1).contiguous())

    def gram_cache(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gram matrices of each bilinear cell's texels, computed by ``fused_score.surface_loss`` as cells
        are first used (``fused_score.gram_cache``) and kept until the maps change."""
        return self._layout("gram", lambda m: fused_score.gram_cache(m.shape[-1], m.shape[0]))

    def lookup(self, uv: torch.Tensor, bins: int | None = None) -> torch.Tensor:
        """``(N, b, d)``: bilinear texture values at UV points ``(N, 2)``, periodic in u; differentiable in
        ``uv``. ``bins`` keeps only the first few bins."""
        b, d, q, _ = self.maps.shape
        bins = b if bins is None else bins
        u = (torch.remainder(uv[:, 0], 1.0) * q + 1) / (q + 2)  # into the wrapped copy's width
        grid = torch.stack([u * 2 - 1, 1 - uv[:, 1] * 2], -1).view(1, 1, -1, 2).to(self.maps.dtype)
        out = F.grid_sample(self._wrapped()[:, :bins * d], grid, align_corners=False, padding_mode="border")
        return out.view(bins, d, -1).permute(2, 0, 1)

    @torch.no_grad()
    def momentum_update(self, uv: torch.Tensor, alpha: torch.Tensor, features: torch.Tensor,
                        momentum: float = 0.9) -> int:
        """M-step: splat features ``(N, d)`` at UV points ``(N, 2)`` into their 4 nearest texels of each bin
        (bilinear weights times ``alpha (N, b)``); each touched texel becomes ``normalize(m * theta + (1 -
        m) * weighted mean)``. Returns the number of (bin, texel) features updated."""
        b, d, q, _ = self.maps.shape
        rows, cols, vals = [], [], []
        for index, w in _corners(uv, q):
            rows.append((torch.arange(b, device=uv.device)[None] * q * q + index[:, None]).reshape(-1))
            cols.append(torch.arange(len(uv), device=uv.device).repeat_interleave(b))
            vals.append((w[:, None] * alpha).reshape(-1))
        rows, cols, vals = torch.cat(rows), torch.cat(cols), torch.cat(vals).to(features.dtype)
        with torch.sparse.check_sparse_tensor_invariants(enable=False):  # built valid: skip the check
            splat = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (b * q * q, len(uv)))
            sums = torch.sparse.mm(splat, features)  # (b * q * q, d)
        weights = torch.zeros(b * q * q, dtype=features.dtype, device=features.device).index_add_(0, rows, vals)
        touched = weights > 1e-6
        flat = self.maps.permute(0, 2, 3, 1).reshape(b * q * q, d).clone()
        mean = sums[touched] / weights[touched, None]
        flat[touched] = F.normalize(momentum * flat[touched] + (1 - momentum) * mean, dim=-1)
        self.maps.copy_(flat.view(b, q, q, d).permute(0, 3, 1, 2))
        return int(touched.sum())


class SurfaceFragments:
    """Per-pixel surface attributes of rasterised deformed template meshes, all ``(B, h, w, ...)``-shaped:
    coverage, polar UV, unit normal, direction to the camera and the point on the unit template."""

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, face_uvs: torch.Tensor, uvs: torch.Tensor,
                 template: torch.Tensor, camera: Camera, size: tuple[int, int]):
        frags = rasterize(vertices, faces, camera, size)
        self.fragments = frags
        self.mask = frags.silhouette
        batch = vertices.shape[0] if vertices.ndim == 3 else len(camera)
        normals = meshes.vertex_normals(vertices, faces)
        if normals.ndim == 2:
            normals = normals.expand(batch, -1, -1)
        attrs = torch.cat([normals, vertices.expand(batch, -1, -1)], -1)
        per_pixel = interpolate(frags, faces, attrs).permute(0, 2, 3, 1)
        self.uv = interpolate(frags, face_uvs, uvs).permute(0, 2, 3, 1)  # (B, h, w, 2)
        self.normals = F.normalize(per_pixel[..., :3], dim=-1)
        centre = camera_position(camera.azimuth, camera.elevation, camera.distance).to(vertices.dtype)
        self.to_camera = F.normalize(centre[:, None, None, :] - per_pixel[..., 3:], dim=-1)
        self.template_point = interpolate(frags, faces, template).permute(0, 2, 3, 1)


def feature_table(features: torch.Tensor) -> torch.Tensor:
    """``(B * h * w, d)``: feature maps ``(B, d, h, w)`` as rows, pixel ``(b, r, c)`` at row ``(b * h + r) * w + c``.

    Contiguous: from a backbone's ``(B, d, h, w)`` output the permuted view has strided rows, which every kernel
    call would copy again (1 ms per call at a 256 x 672 crop)."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).contiguous()


def texture_scores(texture: NeuralTexture, uv: torch.Tensor, alpha: torch.Tensor, table: torch.Tensor,
                   rows: torch.Tensor) -> torch.Tensor:
    """``(M,)`` object scores of M surface points: ``<blend(theta(uv), alpha), f>`` with ``f = table[rows]``
    (``feature_table``), ``alpha (M, nb)`` over the first nb bins; differentiable in ``uv`` and ``alpha``.

    The same number as rendering the features (``render_features``) and dotting them with the image's,
    without the ``(M, b, d)`` intermediate: on CPU one fused kernel (``fused_score.texture_score``).
    """
    if fused_score.available(uv.device):
        return fused_score.texture_score(texture.texels(), uv, alpha, table, rows)
    return (blend(texture.lookup(uv, alpha.shape[-1]), alpha) * table[rows]).sum(-1)


def surface_scores(texture: NeuralTexture, surface: SurfaceFragments, rotations: torch.Tensor, temperature: float,
                   table: torch.Tensor, bins: int | None = None) -> torch.Tensor:
    """``(B, h, w)`` object scores of the rendered features against the image features ``table``
    (``feature_table`` of ``(B, d, h, w)`` maps): ``object_score(render_features(...), features)``, zero off the mesh."""
    covered, uv, alpha = covered_points(surface, rotations[:texture.n_bins if bins is None else bins], temperature)
    _, h, w = surface.mask.shape
    score = texture_scores(texture, uv, alpha, table, (covered[0] * h + covered[1]) * w + covered[2])
    return score.new_zeros(surface.mask.shape).index_put(covered, score)


def covered_points(surface: SurfaceFragments, rotations: torch.Tensor, temperature: float
                   ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
    """A surface's covered pixels ``(b, r, c)``, with their polar UV ``(M, 2)`` and view coefficients
    ``(M, len(rotations))``: all that its rendered features depend on besides the texture."""
    covered = surface.mask.nonzero(as_tuple=True)
    alpha = view_coefficients(surface.normals[covered], surface.to_camera[covered], rotations, temperature)
    return covered, surface.uv[covered], alpha


def render_features(texture: NeuralTexture, surface: SurfaceFragments, rotations: torch.Tensor,
                    temperature: float, bins: int | None = None) -> torch.Tensor:
    """``(B, d, h, w)`` rendered neural features: alpha-blended view-specific texture values (the first
    ``bins`` bins, with their rotations) on the covered pixels, zero off the mesh."""
    covered, uv, alpha = covered_points(surface, rotations[:texture.n_bins if bins is None else bins], temperature)
    values = texture.lookup(uv, bins)  # (M, b, d)
    out = surface.uv.new_zeros(*surface.mask.shape, values.shape[-1]).index_put(covered, blend(values, alpha))
    return out.permute(0, 3, 1, 2)
