"""NeMo's render-and-compare inference with one category model (``MeshPoseSolveAll.py``,
``docs/reference.md`` §NeMo inference).

For a batch of same-size crops: features from the category's network; the clutter score from its
clutter bank; the lowest-loss pose among the pre-rendered starting grid (144 poses at the initial
distance); then Adam on the camera centre and theta; the final loss scores the category. The
in-modal mask is where the best vertex similarity beats the clutter score inside the fitted cuboid's
silhouette, upsampled x8 nearest to the crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ntdmbench.baselines.nemo.category import CategoryModel
from ntdmbench.models import fused_score
from ntdmbench.models import render_compare as rc
from ntdmbench.models.camera import Camera
from ntdmbench.models.render import Fragments, interpolate, rasterize
from ntdmbench.models.stages import stage

STRIDE = 8


@dataclass(frozen=True)
class InferenceSettings:
    """``MeshPoseSolveAll.py``'s settings, the defaults of ``nemo``'s fields of the same names."""

    n_azimuth: int = 12
    n_elevation: int = 4
    n_theta: int = 3
    steps: int = 300
    pose_lr: float = 0.05
    pose_beta1: float = 0.4
    pose_beta2: float = 0.6
    pose_gamma: float = 0.2  # lr factor every steps // 3 steps
    init_distance: float = 5.0
    use_clutter: bool = True  # False: loss_fg_only


@dataclass
class CategoryFit:
    """Per-image results of one category model, each ``(B,)`` (masks ``(B, H, W)`` bool)."""

    loss: torch.Tensor
    azimuth: torch.Tensor
    elevation: torch.Tensor
    theta: torch.Tensor
    distance: torch.Tensor
    mesh: torch.Tensor
    inmodal: torch.Tensor


class MeshRenderer:
    """Renders one mesh's bank features ``(V, C)`` on the feature map ``map_size`` (h, w) of a crop.

    ``principal`` (x, y) and ``focal_px`` are in crop pixels; the camera is divided by ``STRIDE`` (8) to
    render at one cell per 8 pixels. Angles are radians, distance CAD units.
    """

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, features: torch.Tensor,
                 principal: torch.Tensor, focal_px: float, map_size: tuple[int, int]):
        self.vertices, self.faces, self.features = vertices, faces, features
        self.principal, self.focal_px, self.map_size = principal, focal_px, map_size

    def fragments(self, a: torch.Tensor, e: torch.Tensor, th: torch.Tensor, d: torch.Tensor) -> Fragments:
        camera = Camera.create(a, e, th, d, self.principal, 1.0, self.focal_px).downsample(STRIDE)
        return rasterize(self.vertices, self.faces, camera, self.map_size)

    def __call__(self, a: torch.Tensor, e: torch.Tensor, th: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return interpolate(self.fragments(a, e, th, d), self.faces, self.features)

    def scorer(self, similarity: torch.Tensor):
        """A renderer of object scores ``(B, h, w)`` for B images whose per-pixel similarity to every vertex
        feature is ``similarity`` ``(B, V, h, w)``: barycentric interpolation of scalars instead of C-vectors
        (the dot product is linear, so this equals ``object_score(self(...), features)``)."""
        B, V, h, w = similarity.shape
        table = similarity.reshape(B, V, h * w)

        def render(a: torch.Tensor, e: torch.Tensor, th: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
            frags = self.fragments(a, e, th, d)
            corners = self.faces[frags.pix_to_face.clamp(min=0)].reshape(B, h * w, 3).transpose(1, 2)
            picked = table.gather(1, corners)  # (B, 3, hw): similarity of each corner vertex at its pixel
            return (picked * frags.bary.reshape(B, h * w, 3).transpose(1, 2)).sum(1).view(B, h, w)
        return render

    def fused_loss(self, similarity: torch.Tensor, clutter: torch.Tensor | None):
        """``loss(C, theta)`` -> ``(B,)``: ``compare_loss`` of ``scorer(similarity)``'s maps for cameras at centres
        C, in one CPU kernel (``fused_score``; same value and gradient, without ~150 small torch operations
        per step); ``rc.optimise_pose``'s ``loss_fn``."""
        B = similarity.shape[0]
        # einsum hands back a (B, V, h, w) view with V innermost for B > 1: copied here once, not every step
        similarity = similarity.contiguous()
        principal = (self.principal / STRIDE).to(similarity).expand(B, 2)
        focal = torch.full((B,), self.focal_px / STRIDE, dtype=similarity.dtype)

        def loss(C: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
            return fused_score.pose_score_loss(C, theta, self.vertices, self.faces, principal, focal, similarity,
                                               clutter, self.map_size)
        return loss

    def grid_scores(self, frags: Fragments, similarity: torch.Tensor) -> torch.Tensor:
        """Object scores ``(B, P, h, w)`` of P pre-rasterised poses ``frags`` on each of B images."""
        B, V, h, w = similarity.shape
        P = frags.pix_to_face.shape[0]
        corners = self.faces[frags.pix_to_face.clamp(min=0)].reshape(P, h * w, 3)
        pixel = torch.arange(h * w, device=corners.device).view(1, -1, 1)
        picked = similarity.reshape(B, V, h * w)[:, corners, pixel]  # (B, P, hw, 3)
        return (picked * frags.bary.reshape(P, h * w, 3)).sum(-1).view(B, P, h, w)


class StartCache:
    """Rasterised starting grids keyed by (category, mesh, map size, principal, focal, grid): the grid's
    fragments are the same for every image of one size, so NeMo pre-renders them once."""

    def __init__(self) -> None:
        self._store: dict[tuple, Fragments] = {}

    def fragments(self, key: tuple, renderer: MeshRenderer, poses: torch.Tensor, distance: float) -> Fragments:
        if key not in self._store:
            with torch.no_grad():
                self._store[key] = renderer.fragments(poses[:, 0], poses[:, 1], poses[:, 2],
                                                      torch.full_like(poses[:, 0], distance))
        return self._store[key]

    def clear(self) -> None:
        self._store.clear()


def upsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, h, w)`` feature-map mask -> ``(B, H, W)`` crop mask (nearest x8, cut to the crop)."""
    up = mask.repeat_interleave(STRIDE, -2).repeat_interleave(STRIDE, -1)
    return up[..., :size[0], :size[1]]


def fit_category(model: CategoryModel, images: torch.Tensor, candidates: Sequence[Sequence[int]],
                 focal_px: float, settings: InferenceSettings, cache: StartCache, key: str) -> CategoryFit:
    """Fit the category's meshes to B same-size crops ``(B, 3, H, W)`` whose focal length is ``focal_px``
    crop pixels. Features, scores and renders are ``(h, w) = (ceil(H / 8), ceil(W / 8))`` cells; angles
    come back in radians, distance in CAD units, the in-modal masks ``(B, H, W)`` at crop resolution.

    ``candidates[b]`` lists the meshes tried for image b (NeMo's multi-cuboid protocol tries the GT
    subtype's); an image keeps its lowest-loss mesh. The principal point is the crop centre.
    """
    device = images.device
    B, (H, W) = images.shape[0], images.shape[-2:]
    with stage("features"), torch.no_grad():
        features = model.net(images)
        clutter = [rc.clutter_score(features, bank.clutter) for bank in model.banks]
    h, w = features.shape[-2:]
    principal = torch.tensor([W / 2, H / 2], dtype=torch.float32, device=device)
    poses = rc.initial_poses(settings.n_azimuth, settings.n_elevation, settings.n_theta).to(device)
    best = CategoryFit(torch.full((B,), torch.inf, device=device), *(torch.zeros(B, device=device) for _ in range(4)),
                       torch.zeros(B, dtype=torch.long, device=device),
                       torch.zeros(B, H, W, dtype=torch.bool, device=device))
    for k, bank in enumerate(model.banks):
        rows = [b for b in range(B) if k in candidates[b]]
        if not rows:
            continue
        verts, faces = model.mesh_tensors(k, device)
        renderer = MeshRenderer(verts, faces, bank.vertices, principal, focal_px, (h, w))
        feats = features[rows]
        clut = clutter[k][rows] if settings.use_clutter else None
        with stage("init_search"), torch.no_grad():
            similarity = torch.einsum("bchw,vc->bvhw", feats, bank.vertices)
            grid_key = (key, k, h, w, W / 2, H / 2, focal_px, settings.n_azimuth, settings.n_elevation,
                        settings.n_theta, settings.init_distance)
            scores = renderer.grid_scores(cache.fragments(grid_key, renderer, poses, settings.init_distance),
                                          similarity)
            losses = rc.loss_fg_only(scores) if clut is None else rc.loss_fg_bg(scores, clut[:, None])
            start = poses[losses.argmin(1)]
        with stage("optimisation"):
            fused = renderer.fused_loss(similarity, clut) if fused_score.available(device) else None
            fit = rc.optimise_pose(renderer.scorer(similarity), feats, clut, start[:, 0], start[:, 1], start[:, 2],
                                   torch.full((len(rows),), settings.init_distance, device=device),
                                   settings.steps, settings.pose_lr, (settings.pose_beta1, settings.pose_beta2),
                                   settings.pose_gamma, loss_fn=fused)
        with stage("scoring"), torch.no_grad():
            silhouette = renderer.fragments(fit.azimuth, fit.elevation, fit.theta, fit.distance).silhouette
            inmodal = upsample_mask(silhouette & (similarity.amax(1) > clutter[k][rows]), (H, W))
            for i, b in enumerate(rows):
                if fit.loss[i] < best.loss[b]:
                    best.loss[b], best.mesh[b], best.inmodal[b] = fit.loss[i], k, inmodal[i]
                    best.azimuth[b], best.elevation[b] = fit.azimuth[i], fit.elevation[i]
                    best.theta[b], best.distance[b] = fit.theta[i], fit.distance[i]
    return best

