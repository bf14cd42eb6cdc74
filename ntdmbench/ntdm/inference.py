"""NTDM inference (paper §3.4, fig. 4, §4.1.2): render-and-compare over pose, shape latent and scale.

For each category model and a batch of feature maps: render the neural textured deformable mesh under
every (initial pose x initial latent) start, take each image's lowest-loss start (NeMo's pre-rendered
search, ``render_compare.best_start``), then optimise the camera (centre C and theta, as NeMo), the
latent ``z`` and the instance scale ``s'`` jointly with Adam (``render_compare.PoseOptimizer``: lr 0.05,
300 steps) on the reconstruction loss of eq. 9 (NeMo's fg/bg loss with the clutter score; fg-only for
Table 3's "w/o BG"). Every step is batched over the images. The class is the category whose
optimised model reconstructs the features best; the amodal mask is the rendered silhouette O at image
resolution and the visible mask the FG pixels of O (object score above clutter score).

Table 3's inference switches: ``latent_init`` "onehot" (every training CAD's code, the paper's),
"average" (1/K) or "random" (a seeded random point of the simplex); ``fix_shape`` keeps z at the
average latent; ``single_bin`` renders only the normal-aligned bin; ``use_background=False`` drops the
clutter model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ntdmbench.models.camera import Camera, camera_position, position_to_angles
from ntdmbench.models.render import rasterize
from ntdmbench.models.render_compare import (
    PoseOptimizer,
    best_start,
    compare_loss,
    initial_poses,
    object_score,
)
from ntdmbench.models.stages import stage
from ntdmbench.ntdm.deformable import DeformableMesh
from ntdmbench.ntdm.textures import (
    NeuralTexture,
    SurfaceFragments,
    polar_uv,
    render_features,
)

LATENT_INITS = ("onehot", "average", "random")


class CategoryModel(nn.Module):
    """One category's NTDM: deformable mesh, neural texture and the template's polar UVs."""

    def __init__(self, mesh: DeformableMesh, texture: NeuralTexture, rotations: torch.Tensor,
                 alpha_temperature: float):
        super().__init__()
        self.mesh, self.texture = mesh, texture
        face_uvs, uvs = polar_uv(mesh.template, mesh.faces)
        self.register_buffer("face_uvs", face_uvs, persistent=False)
        self.register_buffer("uvs", uvs, persistent=False)
        self.register_buffer("rotations", rotations[:texture.n_bins].clone(), persistent=False)
        self.alpha_temperature = alpha_temperature
        self._starts: dict[tuple, torch.Tensor] = {}

    def surface(self, vertices: torch.Tensor, camera: Camera, size: tuple[int, int]) -> SurfaceFragments:
        return SurfaceFragments(vertices, self.mesh.faces, self.face_uvs, self.uvs, self.mesh.template, camera, size)

    def render(self, vertices: torch.Tensor, camera: Camera, size: tuple[int, int],
               single_bin: bool = False) -> tuple[torch.Tensor, SurfaceFragments]:
        """Rendered features ``(B, d, h, w)`` of deformed meshes ``(B, V, 3)`` and their fragments."""
        surface = self.surface(vertices, camera, size)
        # single_bin: the normal-aligned bin only (Table 3's "single alpha_b" on a many-bin model)
        features = render_features(self.texture, surface, self.rotations, self.alpha_temperature, 1 if single_bin else None)
        return features, surface


@dataclass
class InferenceSettings:
    n_azimuth: int = 12
    n_elevation: int = 4
    n_theta: int = 3
    init_distance: float = 5.0
    steps: int = 300
    lr: float = 0.05
    latent_init: str = "onehot"
    fix_shape: bool = False
    use_background: bool = True
    single_bin: bool = False
    start_chunk: int = 64
    start_cache_mb: float = 256.0
    seed: int = 0

    def __post_init__(self):
        if self.latent_init not in LATENT_INITS:
            raise ValueError(f"latent_init must be one of {LATENT_INITS}, got {self.latent_init!r}")
        if self.steps < 0:
            raise ValueError(f"optimisation steps must be >= 0, got {self.steps}")


@dataclass
class Fit:
    """Per-image result for one category model, each with leading dimension B."""

    azimuth: torch.Tensor
    elevation: torch.Tensor
    theta: torch.Tensor
    distance: torch.Tensor
    latent: torch.Tensor  # (B, K)
    scale: torch.Tensor  # (B, 3) instance scale s'
    loss: torch.Tensor
    start_loss: torch.Tensor

    def camera(self, principal: torch.Tensor, focal_px: torch.Tensor) -> Camera:
        return Camera(self.azimuth, self.elevation, self.theta, self.distance, principal, focal_px)


def initial_latents(mesh: DeformableMesh, settings: InferenceSettings) -> torch.Tensor:
    """``(L, K)`` starting latents for ``settings.latent_init`` (the average latent when ``fix_shape``)."""
    if settings.fix_shape or settings.latent_init == "average":
        return mesh.average_latent()[None]
    if settings.latent_init == "random":
        gen = torch.Generator().manual_seed(settings.seed)
        z = torch.rand(mesh.n_shapes, generator=gen)
        return (z / z.sum())[None].to(mesh.template)
    return mesh.one_hot(torch.arange(mesh.n_shapes))


def _start_maps(model: CategoryModel, starts: torch.Tensor, latents: torch.Tensor, principal: torch.Tensor,
                focal: torch.Tensor, size: tuple[int, int], settings: InferenceSettings,
                chunk: slice) -> torch.Tensor:
    """Rendered features of starts ``chunk`` of the (pose x latent) grid for one camera intrinsic."""
    key = (size, tuple(principal.tolist()), float(focal), chunk.start, chunk.stop, settings.latent_init,
           settings.fix_shape, settings.single_bin, settings.seed)
    if key in model._starts:
        return model._starts[key]
    idx = torch.arange(chunk.start, chunk.stop)
    pose, lat = starts[idx // len(latents)], latents[idx % len(latents)]
    n = len(idx)
    dtype = model.mesh.template.dtype
    camera = Camera(pose[:, 0].to(dtype), pose[:, 1].to(dtype), pose[:, 2].to(dtype),
                    torch.full((n,), settings.init_distance, dtype=dtype), principal.expand(n, 2).to(dtype),
                    focal.expand(n).to(dtype))
    with torch.no_grad():
        maps, _ = model.render(model.mesh(lat), camera, size, settings.single_bin)
    budget = settings.start_cache_mb * 2 ** 20
    used = sum(m.numel() * m.element_size() for m in model._starts.values())
    if used + maps.numel() * maps.element_size() <= budget:
        model._starts[key] = maps
    return maps


def search_starts(model: CategoryModel, features: torch.Tensor, clut: torch.Tensor | None, valid: torch.Tensor,
                  principal: torch.Tensor, focal: torch.Tensor, settings: InferenceSettings
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best start per image: ``(B, 3)`` angles, ``(B, K)`` latents and ``(B,)`` losses.

    Images sharing intrinsics share the pre-rendered starts (cached on the model within a budget).
    """
    starts = initial_poses(settings.n_azimuth, settings.n_elevation, settings.n_theta)
    latents = initial_latents(model.mesh, settings)
    total = len(starts) * len(latents)
    size = tuple(features.shape[-2:])
    best_idx = torch.zeros(len(features), dtype=torch.long)
    best_loss = torch.zeros(len(features), dtype=features.dtype)
    groups: dict[tuple, list[int]] = {}
    for i in range(len(features)):
        groups.setdefault((tuple(principal[i].tolist()), float(focal[i])), []).append(i)
    for rows in groups.values():
        rows_t = torch.tensor(rows)
        losses = []
        for s in range(0, total, settings.start_chunk):
            maps = _start_maps(model, starts, latents, principal[rows[0]], focal[rows[0]], size, settings,
                               slice(s, min(total, s + settings.start_chunk)))
            _, chunk_losses = best_start(maps, features[rows_t], None if clut is None else clut[rows_t],
                                         valid[rows_t], chunk=settings.start_chunk)
            losses.append(chunk_losses)
        losses = torch.cat(losses, 1)
        best_loss[rows_t], best_idx[rows_t] = losses.min(1)
    return starts[best_idx // len(latents)], latents[best_idx % len(latents)], best_loss


def fit_category(model: CategoryModel, features: torch.Tensor, clut: torch.Tensor | None, valid: torch.Tensor,
                 principal: torch.Tensor, focal: torch.Tensor, settings: InferenceSettings,
                 start: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> Fit:
    """Init search (unless ``start``, ``search_starts``' result, is given) then joint optimisation of
    pose, latent and instance scale for B images.

    ``features`` ``(B, d, h, w)`` unit-norm; ``clut`` ``(B, h, w)`` clutter scores or None (fg-only loss);
    ``valid`` ``(B, h, w)`` unpadded cells; ``principal (B, 2)`` and ``focal (B,)`` at feature resolution.
    """
    size = tuple(features.shape[-2:])
    dtype = features.dtype
    if start is None:
        with stage("init_search"):
            start = search_starts(model, features, clut, valid, principal, focal, settings)
    angles, z0, start_loss = start
    with stage("optimisation"):
        B = len(features)
        centre = camera_position(angles[:, 0].to(dtype), angles[:, 1].to(dtype),
                                 torch.full((B,), settings.init_distance, dtype=dtype))
        C = centre.clone().requires_grad_(True)
        theta = angles[:, 2].to(dtype).clone().requires_grad_(True)
        z = z0.to(dtype).clone().requires_grad_(not settings.fix_shape)
        log_scale = torch.zeros(B, 3, dtype=dtype, requires_grad=True)
        params = [C, theta, log_scale] + ([] if settings.fix_shape else [z])

        def loss_at() -> torch.Tensor:
            a, e, d = position_to_angles(C)
            camera = Camera(a, e, theta, d, principal.to(dtype), focal.to(dtype))
            rendered, _ = model.render(model.mesh(z, log_scale.exp()), camera, size, settings.single_bin)
            return compare_loss(rendered, features, clut, valid)

        if settings.steps:
            opt = PoseOptimizer(params, settings.steps, settings.lr)
            for _ in range(settings.steps):
                loss_at().sum().backward()
                opt.step()
        with torch.no_grad():
            final = loss_at()
            a, e, d = position_to_angles(C)
    return Fit(a, e, theta.detach(), d, z.detach(), log_scale.detach().exp(), final, start_loss)


@torch.no_grad()
def masks(model: CategoryModel, fit: Fit, features: torch.Tensor, clut: torch.Tensor | None,
          principal: torch.Tensor, focal: torch.Tensor, stride: int, image_sizes: list[tuple[int, int]],
          single_bin: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Amodal masks (the silhouette O rendered at image resolution), visible masks (FG: O where the
    rendered object explains the feature better than clutter, from the feature grid) per image, and
    the fitted vertices ``(B, V, 3)``."""
    vertices = model.mesh(fit.latent, fit.scale)
    size = tuple(features.shape[-2:])
    rendered, surface = model.render(vertices, fit.camera(principal, focal), size, single_bin)
    fg = surface.mask
    if clut is not None:
        fg = fg & (object_score(rendered, features) > clut)
    H = max(h for h, _ in image_sizes)
    W = max(w for _, w in image_sizes)
    full = fit.camera(principal * stride, focal * stride)
    amodal = rasterize(vertices, model.mesh.faces, full, (H, W)).silhouette
    fg_full = F.interpolate(fg[:, None].float(), scale_factor=stride, mode="nearest")[:, 0, :H, :W] > 0.5
    amodals, visibles = [], []
    for i, (h, w) in enumerate(image_sizes):
        amodals.append(amodal[i, :h, :w])
        visibles.append(amodal[i, :h, :w] & fg_full[i, :h, :w])
    return amodals, visibles, vertices
