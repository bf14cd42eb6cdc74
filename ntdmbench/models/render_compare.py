"""Render-and-compare on feature maps (NeMo's inference, shared with NTDM).

Everything here is generic over *a renderer*: a callable that maps per-item poses
``(azimuth, elevation, theta, distance)``, each ``(N,)``, to feature maps ``(N, C, h, w)`` (zero where
nothing is rendered). The image side is a unit-norm feature map ``(B, C, h, w)`` and its clutter
score ``(B, h, w)``. Source: ``docs/reference.md`` §NeMo inference.

- ``initial_poses``: the grid of starting poses (12 azimuths x 4 elevations x 3 thetas = 144).
- ``clutter_vector`` / ``clutter_score``: the L2-normalised mean of the clutter bank, and its 1x1
  convolution with the image features.
- ``object_score``, ``loss_fg_bg``, ``loss_fg_only``: NeMo's per-pixel score and its two losses.
- ``best_start``: the lowest-loss starting pose per image, batched over images and poses.
- ``PoseOptimizer``: Adam(lr 0.05, betas (0.4, 0.6)) whose lr is multiplied by 0.2 every
  ``steps // 3`` steps (NeMo's ExponentialLR stepped every 100 of 300 steps).
- ``optimise_pose``: the optimisation itself, over the camera centre C (so distance is free) and theta.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from ntdmbench.models.camera import camera_position, position_to_angles
from ntdmbench.models.threads import loop_threads

Renderer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``render(azimuth, elevation, theta, distance)`` with ``(N,)`` tensors -> feature maps ``(N, C, h, w)``, or
directly the object scores ``(N, h, w)`` (a renderer may dot the image features with its vertex features
first and interpolate scalars, which is the same number and much cheaper)."""

ELEVATION_RANGE = (-math.pi / 6, math.pi / 3)
THETA_RANGE = (-math.pi / 6, math.pi / 6)


def _grid(lo: float, hi: float, n: int) -> torch.Tensor:
    """``n`` values from lo to hi inclusive; a single value is the middle of the range."""
    if n < 1:
        raise ValueError(f"pose grid count must be >= 1, got {n}")
    return torch.tensor([(lo + hi) / 2]) if n == 1 else torch.linspace(lo, hi, n)


def initial_poses(n_azimuth: int = 12, n_elevation: int = 4, n_theta: int = 3,
                  elevation_range: tuple[float, float] = ELEVATION_RANGE,
                  theta_range: tuple[float, float] = THETA_RANGE, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n_azimuth * n_elevation * n_theta, 3)`` starting (azimuth, elevation, theta), azimuth slowest.

    Azimuths are ``linspace(0, 2pi, n, endpoint=False)``; elevations and thetas span their ranges end to
    end (NeMo: -30, 0, 30, 60 degrees and -30, 0, 30 degrees); a count of 1 takes the range's middle.
    """
    if n_azimuth < 1:
        raise ValueError(f"pose grid count must be >= 1, got {n_azimuth}")
    azimuth = torch.arange(n_azimuth, dtype=torch.float64) * (2 * math.pi / n_azimuth)
    grids = torch.meshgrid(azimuth, _grid(*elevation_range, n_elevation).double(),
                           _grid(*theta_range, n_theta).double(), indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], -1).to(dtype)


def clutter_vector(clutter_bank: torch.Tensor) -> torch.Tensor:
    """``(C,)``: the L2-normalised mean of the clutter rows ``(K, C)`` (a ``(C,)`` vector passes through normalised)."""
    mean = clutter_bank if clutter_bank.ndim == 1 else clutter_bank.mean(0)
    return torch.nn.functional.normalize(mean, dim=0)


def clutter_score(features: torch.Tensor, clutter: torch.Tensor) -> torch.Tensor:
    """``(B, h, w)``: each pixel's feature ``(B, C, h, w)`` dotted with the clutter vector of ``clutter`` ((K, C) or (C,))."""
    return torch.einsum("bchw,c->bhw", features, clutter_vector(clutter).to(features))


def object_score(rendered: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``(..., h, w)``: per-pixel dot product of rendered and image feature maps ``(..., C, h, w)`` (0 off the object)."""
    return (rendered * features).sum(-3)


def _mean(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean over the last two (pixel) dimensions, optionally over ``valid`` pixels only (e.g. unpadded)."""
    if valid is None:
        return x.mean((-2, -1))
    valid = valid.to(x.dtype)
    return (x * valid).sum((-2, -1)) / valid.sum((-2, -1)).clamp(min=1)


def loss_fg_bg(obj_score: torch.Tensor, clut_score: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """NeMo's loss ``1 - (mean(max(object, clutter)) - mean(clutter))`` per item (shapes broadcast).

    A pixel counts for the object only where the rendered object explains it better than clutter,
    which is what makes the fit robust to occluders.
    """
    return 1 - (_mean(torch.maximum(obj_score, clut_score), valid) - _mean(clut_score.expand_as(obj_score), valid))


def loss_fg_only(obj_score: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - mean(object score)`` per item: NeMo's loss with the clutter model turned off."""
    return 1 - _mean(obj_score, valid)


def compare_loss(rendered: torch.Tensor, features: torch.Tensor, clut_score: torch.Tensor | None,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """``loss_fg_bg`` of rendered maps against image features (``loss_fg_only`` when ``clut_score`` is None);
    ``rendered`` may also be object scores already (one dimension fewer than ``features``)."""
    score = rendered if rendered.ndim == features.ndim - 1 else object_score(rendered, features)
    return loss_fg_only(score, valid) if clut_score is None else loss_fg_bg(score, clut_score, valid)


def best_start(start_maps: torch.Tensor, features: torch.Tensor, clut_score: torch.Tensor | None,
               valid: torch.Tensor | None = None, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick each image's starting pose from pre-rendered maps.

    ``start_maps`` ``(P, C, h, w)`` are the renders of the P starting poses (the same for every image of
    one size); ``features`` ``(B, C, h, w)``; ``clut_score`` and ``valid`` ``(B, h, w)``. Returns the index
    ``(B,)`` of the lowest-loss pose and all losses ``(B, P)``; poses are scored ``chunk`` at a time.
    """
    losses = []
    with torch.no_grad():
        for s in range(0, start_maps.shape[0], chunk):
            score = torch.einsum("pchw,bchw->bphw", start_maps[s:s + chunk], features)
            clut = None if clut_score is None else clut_score[:, None]
            v = None if valid is None else valid[:, None]
            losses.append(loss_fg_only(score, v) if clut is None else loss_fg_bg(score, clut, v))
    losses = torch.cat(losses, 1)
    return losses.argmin(1), losses


def decay_interval(steps: int, decays: int = 3) -> int:
    """Steps between ``PoseOptimizer``'s lr decays: ``decays`` over a run of ``steps``."""
    return max(1, steps // decays)


class PoseOptimizer:
    """Adam with NeMo's settings and step decay: ``lr * gamma ** (step // (steps // 3))``.

    ``opt = PoseOptimizer(params, steps); loss.backward(); opt.step()`` (``step`` also zeroes the
    gradients and advances the schedule, so it is called exactly once per optimisation step).
    """

    def __init__(self, params: Iterable[torch.Tensor], steps: int, lr: float = 0.05,
                 betas: tuple[float, float] = (0.4, 0.6), gamma: float = 0.2, decays: int = 3):
        if steps < 1:
            raise ValueError(f"optimisation steps must be >= 1, got {steps}")
        # fused: one kernel per step instead of ~20 small ones (the loop is overhead-bound)
        self.optimizer = torch.optim.Adam(list(params), lr=lr, betas=tuple(betas), fused=True)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=gamma)
        self.every = decay_interval(steps, decays)
        self.count = 0

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.count += 1
        if self.count % self.every == 0:
            self.scheduler.step()


@dataclass
class PoseFit:
    """Per-image result of ``optimise_pose``: final angles, distance and loss, each ``(B,)``."""

    azimuth: torch.Tensor
    elevation: torch.Tensor
    theta: torch.Tensor
    distance: torch.Tensor
    loss: torch.Tensor


def optimise_pose(render: Renderer, features: torch.Tensor, clut_score: torch.Tensor | None,
                  azimuth: torch.Tensor, elevation: torch.Tensor, theta: torch.Tensor, distance: torch.Tensor,
                  steps: int = 300, lr: float = 0.05, betas: tuple[float, float] = (0.4, 0.6), gamma: float = 0.2,
                  valid: torch.Tensor | None = None, loss_fn: Callable | None = None) -> PoseFit:
    """Refine B poses, one per image, by gradient descent on the render-and-compare loss.

    The parameters are the camera centre C (3D, CAD frame) and theta, as in NeMo, so the distance is
    free; images are independent (their losses are summed, and Adam is elementwise). The returned loss
    is evaluated at the final pose, so it can be compared across category models. ``loss_fn(C, th)``,
    when given, computes the ``(B,)`` losses from the camera centres ``(B, 3)`` and thetas in one go
    (``fused_score``) instead of ``render`` + ``compare_loss``. The loop runs on ``threads.loop_threads``.
    """
    dtype = features.dtype
    C = camera_position(azimuth.to(dtype), elevation.to(dtype), distance.to(dtype)).detach().clone().requires_grad_(True)
    th = theta.to(dtype).detach().clone().requires_grad_(True)
    opt = PoseOptimizer([C, th], steps, lr, betas, gamma)
    if loss_fn is None:
        def loss_fn(C: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
            a, e, d = position_to_angles(C)
            return compare_loss(render(a, e, th, d), features, clut_score, valid)
    with loop_threads(features.device):
        for _ in range(steps):
            loss_fn(C, th).sum().backward(inputs=[C, th])
            opt.step()
        with torch.no_grad():
            final = loss_fn(C, th)
            a, e, d = position_to_angles(C)
    return PoseFit(a.detach(), e.detach(), th.detach(), d.detach(), final)
