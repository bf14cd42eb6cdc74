"""The PASCAL3D+ camera, in torch so poses can be optimised through it.

Conventions (``docs/reference.md`` §Camera and rotation):

- World frame: CAD coordinates, z up. Angles in radians.
- Camera centre ``C = d (cos e sin a, -cos e cos a, sin e)``; rotation
  ``R(a, e, theta) = Rz(theta) Rx(-(pi/2 - e)) Rz(-a)``; extrinsics ``X_cam = R X + t`` with
  ``t = -R C = (0, 0, -d)``. The camera looks down its -z axis with y up, so the depth of a point is
  ``-z_cam``.
- Pixels: ``x = px + F x_cam / depth``, ``y = py - F y_cam / depth`` with ``F = focal * viewport``
  (x right, y down, as the annotations' ``principal`` and boxes). Pixel ``(row r, col c)`` covers
  ``[c, c+1) x [r, r+1)`` and its centre is ``(c + 0.5, r + 0.5)``, so a feature map at stride ``s``
  is the same camera with ``F / s`` and ``principal / s`` (``Camera.downsample``).
- PyTorch3D (as NeMo uses it): points map by ``(x, y, z) -> (x, z, -y)``; cameras are row-vector
  ``X_view = X R + T`` with ``R^T A = diag(-1, 1, -1) R_pascal`` and ``T = (0, 0, d)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import torch

from ntdmbench.datasets.records import Pose, Sample
from ntdmbench.models import rotation

AXIS_MAP = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
"""``A``: PASCAL (x, y, z) -> PyTorch3D (x, z, -y), as NeMo's ``pre_process_mesh_pascal``."""

DEFAULT_FOCAL_PX = 3000.0
"""NeMo's crops: focal 1 x viewport 3000, in crop pixels (``docs/reference.md`` §NeMo crops)."""

_FLIP_XZ = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64))


def crop_focal_px(sample: Sample, override: float | None = None) -> float:
    """The crop's focal length in pixels: ``override`` when given, else the annotation's focal x
    viewport (intrinsics of the crop, not its pose), else ``DEFAULT_FOCAL_PX``."""
    if override is not None:
        return float(override)
    if sample.pose is not None:
        return float(sample.pose.focal * sample.pose.viewport)
    return DEFAULT_FOCAL_PX


def _tensor(x, like: torch.Tensor | None = None) -> torch.Tensor:
    """Numbers and arrays become float64 tensors (or ``like``'s dtype/device); tensors keep their graph."""
    if isinstance(x, torch.Tensor):
        return x if like is None else x.to(like.device)
    if like is not None:
        return torch.as_tensor(x, dtype=like.dtype, device=like.device)
    return torch.as_tensor(x, dtype=torch.float64)


def _angles(*values) -> list[torch.Tensor]:
    tensors = [_tensor(v) for v in values]
    ref = next((t for t in tensors if t.is_floating_point() and t.requires_grad), None)
    ref = ref if ref is not None else next((t for t in tensors if t.is_floating_point()), tensors[0])
    tensors = [t.to(device=ref.device, dtype=ref.dtype) for t in tensors]
    return list(torch.broadcast_tensors(*tensors))


def rotation_matrix(azimuth, elevation, theta) -> torch.Tensor:
    """``Rz(theta) Rx(-(pi/2 - e)) Rz(-a)`` as a tensor, shape ``(..., 3, 3)``: ``models/rotation.py``, as scored."""
    return rotation.rotation_matrix(*_angles(azimuth, elevation, theta))


def angles_from_rotation(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of ``rotation_matrix``: (azimuth in [0, 2pi), elevation, theta in (-pi, pi]).

    Row 3 of R is the unit camera direction ``C / d``; column 3 is ``(-sin t cos e, cos t cos e, sin e)``.
    """
    R = _tensor(R)
    elevation = torch.asin(R[..., 2, 2].clamp(-1.0, 1.0))
    azimuth = torch.remainder(torch.atan2(R[..., 2, 0], -R[..., 2, 1]), 2 * math.pi)
    theta = torch.atan2(-R[..., 0, 2], R[..., 1, 2])
    return azimuth, elevation, theta


def camera_position(azimuth, elevation, distance) -> torch.Tensor:
    """Camera centre in the CAD frame, ``(..., 3)``."""
    a, e, d = _angles(azimuth, elevation, distance)
    return torch.stack([d * e.cos() * a.sin(), -d * e.cos() * a.cos(), d * e.sin()], -1)


def position_to_angles(position) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(azimuth in [0, 2pi), elevation, distance) of a CAD-frame camera centre ``(..., 3)``."""
    C = _tensor(position)
    distance = C.norm(dim=-1)
    elevation = torch.asin((C[..., 2] / distance).clamp(-1.0, 1.0))
    azimuth = torch.remainder(torch.atan2(C[..., 0], -C[..., 1]), 2 * math.pi)
    return azimuth, elevation, distance


def extrinsics(azimuth, elevation, theta, distance) -> tuple[torch.Tensor, torch.Tensor]:
    """World-to-camera ``(R, t)`` with ``X_cam = R X + t``; shapes ``(..., 3, 3)`` and ``(..., 3)``."""
    a, e, th, d = _angles(azimuth, elevation, theta, distance)
    zero = torch.zeros_like(d)
    return rotation_matrix(a, e, th), torch.stack([zero, zero, -d], -1)


def _screen(vertices, R, t, principal, focal_px) -> torch.Tensor:
    """``(..., N, 3)`` of (x pixel, y pixel, depth) for CAD-frame vertices; shapes broadcast."""
    cam = vertices @ R.transpose(-1, -2) + t.unsqueeze(-2)
    depth = -cam[..., 2]
    f = focal_px.unsqueeze(-1)
    x = principal[..., None, 0] + f * cam[..., 0] / depth
    y = principal[..., None, 1] - f * cam[..., 1] / depth
    return torch.stack([x, y, depth], -1)


def project(vertices, azimuth, elevation, theta, distance, principal, focal=1.0, viewport=3000.0) -> torch.Tensor:
    """Pixel coordinates ``(..., N, 2)`` (x right, y down) of CAD-frame vertices ``(..., N, 3)``.

    Angles, distance and focal broadcast over a batch shape; ``principal`` is ``(..., 2)`` as (px, py).
    """
    a, e, th, d, f = _angles(azimuth, elevation, theta, distance, _tensor(focal) * viewport)
    R, t = extrinsics(a, e, th, d)
    verts = _tensor(vertices, like=a)
    return _screen(verts, R, t, _tensor(principal, like=a), f)[..., :2]


@dataclass(frozen=True)
class Camera:
    """A batch of B PASCAL3D+ cameras; each field has leading dimension B and may carry gradients.

    ``focal_px`` is ``focal * viewport`` in pixels of the image the camera renders into.
    """

    azimuth: torch.Tensor
    elevation: torch.Tensor
    theta: torch.Tensor
    distance: torch.Tensor
    principal: torch.Tensor  # (B, 2): (px, py)
    focal_px: torch.Tensor

    @classmethod
    def create(cls, azimuth, elevation, theta, distance, principal, focal=1.0, viewport=3000.0) -> "Camera":
        """Cameras from scalars or ``(B,)`` values (broadcast to a common B); principal is ``(2,)`` or ``(B, 2)``."""
        a, e, th, d, f = (v.reshape(-1) for v in _angles(azimuth, elevation, theta, distance, _tensor(focal) * viewport))
        p = _tensor(principal, like=a).reshape(-1, 2)
        a, e, th, d, f, px, py = torch.broadcast_tensors(a, e, th, d, f, p[:, 0], p[:, 1])
        return cls(a, e, th, d, torch.stack([px, py], -1), f)

    @classmethod
    def from_poses(cls, poses: Sequence[Pose]) -> "Camera":
        """Cameras for annotated poses; a pose without a principal point is a ValueError naming it."""
        for i, pose in enumerate(poses):
            if pose.principal is None:
                raise ValueError(f"pose {i} ({pose}) has no principal point; a camera needs one")
        return cls.create(*(torch.tensor([getattr(p, k) for p in poses], dtype=torch.float64)
                            for k in ("azimuth", "elevation", "theta", "distance")),
                          torch.tensor([p.principal for p in poses], dtype=torch.float64),
                          torch.tensor([p.focal * p.viewport for p in poses], dtype=torch.float64), 1.0)

    def __len__(self) -> int:
        return self.azimuth.shape[0]

    def to(self, *args, **kwargs) -> "Camera":
        """Move or cast every field, as ``torch.Tensor.to``."""
        return Camera(*(getattr(self, k).to(*args, **kwargs) for k in self.__dataclass_fields__))

    def downsample(self, stride: float) -> "Camera":
        """The same camera seen on a feature map at ``stride`` (focal and principal point divided)."""
        return replace(self, principal=self.principal / stride, focal_px=self.focal_px / stride)

    def extrinsics(self) -> tuple[torch.Tensor, torch.Tensor]:
        return extrinsics(self.azimuth, self.elevation, self.theta, self.distance)

    def transform(self, vertices) -> torch.Tensor:
        """``(B, N, 3)`` of (x pixel, y pixel, depth) for vertices ``(N, 3)`` or ``(B, N, 3)``."""
        R, t = self.extrinsics()
        verts = _tensor(vertices, like=self.azimuth).to(self.azimuth.dtype)
        return _screen(verts, R, t, self.principal, self.focal_px)

    def project(self, vertices) -> torch.Tensor:
        """``(B, N, 2)`` pixel coordinates, the batched form of ``project``."""
        return self.transform(vertices)[..., :2]


def pascal_to_pytorch3d(points) -> torch.Tensor:
    """Map CAD-frame points ``(..., 3)`` into NeMo's PyTorch3D world frame (y up)."""
    p = _tensor(points)
    return p @ AXIS_MAP.to(p).T


def pytorch3d_to_pascal(points) -> torch.Tensor:
    p = _tensor(points)
    return p @ AXIS_MAP.to(p)


def to_pytorch3d(azimuth, elevation, theta, distance) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch3D ``(R, T)`` (row vectors, +X left, +Z forward) seeing NeMo's mapped mesh as PASCAL does."""
    R, t = extrinsics(azimuth, elevation, theta, distance)
    D, A = _FLIP_XZ.to(R), AXIS_MAP.to(R)
    return A @ R.transpose(-1, -2) @ D, t @ D


def from_pytorch3d(R, T) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(azimuth, elevation, theta, distance) of a PyTorch3D camera looking at the origin, ``T = (0, 0, d)``."""
    R, T = _tensor(R), _tensor(T)
    D, A = _FLIP_XZ.to(R), AXIS_MAP.to(R)
    return (*angles_from_rotation(D @ R.transpose(-1, -2) @ A), T[..., 2])


def pytorch3d_cameras(camera: Camera, image_size: tuple[int, int]):
    """A screen-space ``PerspectiveCameras`` whose ``transform_points_screen`` of mapped points is ``project``."""
    from pytorch3d.renderer import PerspectiveCameras

    R, T = to_pytorch3d(camera.azimuth, camera.elevation, camera.theta, camera.distance)
    f = camera.focal_px.float()
    return PerspectiveCameras(
        focal_length=torch.stack([f, f], -1), principal_point=camera.principal.float(),
        R=R.float(), T=T.float(), in_ndc=False, image_size=[tuple(image_size)] * len(camera),
        device=camera.azimuth.device,
    )
