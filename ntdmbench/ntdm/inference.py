"""NTDM inference (paper §3.4, fig. 4, §4.1.2): render-and-compare over pose, shape latent and scale.

For each category model and a batch of feature maps: render the neural textured deformable mesh under
every (initial pose x initial latent) start, take each image's lowest-loss start (NeMo's pre-rendered
search), then optimise the camera (centre C and theta, as NeMo), the latent ``z`` and the instance
scale ``s'`` jointly with Adam (lr 0.05, 300 steps; the paper names no other setting, so torch's betas
and a constant lr; ``render_compare.PoseOptimizer`` takes NeMo's betas (0.4, 0.6) and decay 0.2 when
asked) on the reconstruction loss of eq. 9 (NeMo's fg/bg loss with the clutter score; fg-only for
Table 3's "w/o BG"). The class is the category whose optimised model reconstructs the features best;
the amodal mask is the rendered silhouette O at image resolution and the visible mask the FG pixels of
O (object score above clutter score).

How it is computed, none of which changes the numbers: a rendered feature is only ever dotted with the
image feature under it, so the object score of a covered pixel is computed directly from its UV and
view coefficients (``textures.texture_scores``) instead of rendering b x d channels. The search keeps
what the starts' scores need of their renders (``StartFragments``: image-independent, cached per crop
size); on CPU they are scored from the distinct (pixel, texel) pairs of their points
(``fused_score.start_scores``). One optimisation serves every (category model, image) pair
(``fit_categories``), and on CPU it is one kernel call (``fused_score.surface_fit``): each item runs its
deformation network, loss, analytic gradient and Adam step for all its steps in one thread task, with the
arithmetic of the torch loop it replaces (``reconstruction_loss`` + ``PoseOptimizer``, which CUDA and
float64 still use) but for the network's softplus, its own and about as accurate as torch's.

Two safeguards the paper does not state: z stays on the simplex of the training codes (projected after
each step: the MLP only learned those codes and their blends; outside, the mesh can grow to swallow
background that resembles the texture) and s' within ``[1/scale_range, scale_range]`` per axis.

Table 3's inference switches: ``latent_init`` "onehot" (every training CAD's code, the paper's),
"average" (1/K) or "random" (a seeded random point of the simplex); ``fix_shape`` keeps z at the
average latent; ``single_alpha`` renders only the normal-aligned bin; ``use_background=False`` drops the
clutter model.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ntdmbench.models import fused_score
from ntdmbench.models.camera import Camera, camera_position, position_to_angles
from ntdmbench.models.render import silhouette
from ntdmbench.models.render_compare import PoseOptimizer, compare_loss, decay_interval, initial_poses
from ntdmbench.models.stages import stage
from ntdmbench.models.threads import loop_threads
from ntdmbench.ntdm.deformable import DeformableMesh, StackedMeshes
from ntdmbench.ntdm.textures import (
    NeuralTexture,
    SurfaceFragments,
    covered_points,
    feature_table,
    polar_uv,
    render_features,
    surface_scores,
    texture_scores,
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
        self.register_buffer("corner_uvs", uvs[face_uvs], persistent=False)  # (F, 3, 2), the fused kernel's layout
        self.register_buffer("rotations", rotations[:texture.n_bins].clone(), persistent=False)
        self.alpha_temperature = alpha_temperature
        self._starts: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def surface(self, vertices: torch.Tensor, camera: Camera, size: tuple[int, int]) -> SurfaceFragments:
        return SurfaceFragments(vertices, self.mesh.faces, self.face_uvs, self.uvs, self.mesh.template, camera, size)

    def render(self, vertices: torch.Tensor, camera: Camera, size: tuple[int, int],
               single_bin: bool = False) -> tuple[torch.Tensor, SurfaceFragments]:
        """Rendered features ``(B, d, h, w)`` of deformed meshes ``(B, V, 3)`` and their fragments."""
        surface = self.surface(vertices, camera, size)
        # single_bin: the normal-aligned bin only (Table 3's "single alpha_b" on a many-bin model)
        features = render_features(self.texture, surface, self.rotations, self.alpha_temperature, 1 if single_bin else None)
        return features, surface

    def score(self, vertices: torch.Tensor, camera: Camera, table: torch.Tensor, size: tuple[int, int],
              single_bin: bool = False) -> tuple[torch.Tensor, SurfaceFragments]:
        """Object scores ``(B, h, w)`` of the rendered features against image features ``table``
        (``feature_table``), without rendering the features, and the fragments."""
        surface = self.surface(vertices, camera, size)
        return surface_scores(self.texture, surface, self.rotations, self.alpha_temperature, table,
                              1 if single_bin else None), surface


@dataclass
class InferenceSettings:
    """The inference settings (paper §3.4, §4.1.2), the defaults of ``ntdm``'s fields of the same names;
    ``start_chunk`` (starts rendered and scored at once), ``start_cache_mb`` (the start fragments kept per model)
    and ``seed`` are internal knobs. A chunk's points take each distinct (pixel, texel) pair's dot products once, so
    larger chunks share more of them: at the paper's 576 starts per category, chunks of 288 take 4.2 M pairs per
    image where chunks of 64 took 5.2 M (the init search 20 % faster, the same losses), for about 190 MB more peak
    memory while a grid is rendered."""

    n_azimuth: int = 12
    n_elevation: int = 4
    n_theta: int = 3
    init_distance: float = 5.0
    steps: int = 300
    pose_lr: float = 0.05
    pose_beta1: float = 0.9
    pose_beta2: float = 0.999
    pose_gamma: float = 1.0  # lr factor every steps // 3 steps (NeMo: 0.2)
    latent_init: str = "onehot"
    start_search: str = "joint"  # "staged": poses with the mean initial latent, then the latents at the best pose
    latent_simplex: bool = True  # z stays a convex combination of the training codes
    scale_range: float = 1.5  # instance scale s' per axis within [1/r, r]; 0: unbounded
    fix_shape: bool = False
    use_background: bool = True
    single_alpha: bool = False  # render the normal-aligned bin only
    start_chunk: int = 288
    start_cache_mb: float = 256.0
    seed: int = 0

    def __post_init__(self):
        if self.latent_init not in LATENT_INITS:
            raise ValueError(f"latent_init must be one of {LATENT_INITS}, got {self.latent_init!r}")
        if self.start_search not in ("joint", "staged"):
            raise ValueError(f"start_search must be 'joint' or 'staged', got {self.start_search!r}")
        if self.steps < 0:
            raise ValueError(f"optimisation steps must be >= 0, got {self.steps}")
        if self.scale_range and self.scale_range < 1:
            raise ValueError(f"scale_range must be 0 (unbounded) or >= 1, got {self.scale_range}")


@dataclass
class Fit:
    """One category model's fit of B images, each field with leading dimension B.

    The pose holds no intrinsics, so one fit serves the feature map (where it was optimised) and the
    crop (masks, exports): ``camera`` takes them at the resolution wanted.
    """

    azimuth: torch.Tensor  # (B,) radians in [0, 2pi)
    elevation: torch.Tensor  # (B,) radians
    theta: torch.Tensor  # (B,) radians, in-plane
    distance: torch.Tensor  # (B,) CAD units
    latent: torch.Tensor  # (B, K) shape code z over the K training CADs
    scale: torch.Tensor  # (B, 3) instance scale s'
    loss: torch.Tensor  # (B,) reconstruction loss after the optimisation
    start_loss: torch.Tensor  # (B,) reconstruction loss of the best start

    def camera(self, principal: torch.Tensor, focal_px: torch.Tensor) -> Camera:
        """Cameras for ``principal`` ``(B, 2)`` as (x, y) and ``focal_px`` ``(B,)``, both in the units of the
        image rendered into: feature cells (crop pixels / stride) or crop pixels."""
        return Camera(self.azimuth, self.elevation, self.theta, self.distance, principal, focal_px)


def project_simplex(z: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of rows ``(B, K)`` onto the probability simplex (Duchi et al. 2008)."""
    u = z.sort(dim=1, descending=True).values
    css = u.cumsum(1) - 1
    k = torch.arange(1, z.shape[1] + 1, device=z.device, dtype=z.dtype)
    rho = ((u - css / k) > 0).to(z.dtype).mul(k).argmax(1, keepdim=True)
    return (z - css.gather(1, rho) / (rho + 1)).clamp(min=0)


def initial_latents(mesh: DeformableMesh, settings: InferenceSettings) -> torch.Tensor:
    """``(L, K)`` starting latents for ``settings.latent_init`` (the average latent when ``fix_shape``)."""
    if settings.fix_shape or settings.latent_init == "average":
        return mesh.average_latent()[None]
    if settings.latent_init == "random":
        gen = torch.Generator().manual_seed(settings.seed)
        z = torch.rand(mesh.n_shapes, generator=gen)
        return (z / z.sum())[None].to(mesh.template)
    return mesh.one_hot(torch.arange(mesh.n_shapes))


@dataclass
class StartFragments:
    """What the init search needs of N rendered starts, image-independent: for each of the M covered
    pixels its start ``(M,)``, pixel ``r * w + c`` ``(M,)``, polar UV ``(M, 2)`` and view coefficients
    ``(M, nb)``. A start's object scores against any image are then one ``texture_scores`` call; on CPU
    ``fused_score.start_scores``, from the points' ``StartPairs`` (made on first use, kept per texture state)."""

    count: int
    start: torch.Tensor
    pixel: torch.Tensor
    uv: torch.Tensor
    alpha: torch.Tensor
    _pairs: tuple[tuple, fused_score.StartPairs] | None = None

    @property
    def nbytes(self) -> int:
        extra = 0 if self._pairs is None else self._pairs[1].nbytes
        return extra + sum(t.numel() * t.element_size() for t in (self.start, self.pixel, self.uv, self.alpha))

    def scores(self, texture: NeuralTexture, table: torch.Tensor, image: int, size: tuple[int, int]) -> torch.Tensor:
        """``(N, h, w)`` object scores of the starts against image ``image`` of ``table`` (``feature_table``)."""
        P = size[0] * size[1]
        if fused_score.available(self.uv.device):
            state, texels = texture.state(), texture.texels()
            if self._pairs is None or self._pairs[0] != state:
                self._pairs = (state, fused_score.start_pairs(texels, self.uv, self.alpha, self.start, self.pixel,
                                                              self.count, P))
            rows = table[image * P:(image + 1) * P]
            return fused_score.start_scores(texels, self.uv, self.alpha, self._pairs[1], rows).view(-1, *size)
        score = texture_scores(texture, self.uv, self.alpha, table, image * P + self.pixel)
        return score.new_zeros(self.count * P).index_put_((self.start * P + self.pixel,), score).view(-1, *size)


def _start_camera(pose: torch.Tensor, principal: torch.Tensor, focal: torch.Tensor, dtype: torch.dtype,
                  settings: InferenceSettings) -> Camera:
    """Cameras of N starts: angles ``(N, 3)`` in radians at the initial distance, intrinsics in feature cells."""
    n = len(pose)
    return Camera(pose[:, 0].to(dtype), pose[:, 1].to(dtype), pose[:, 2].to(dtype),
                  torch.full((n,), settings.init_distance, dtype=dtype, device=pose.device),
                  principal.expand(n, 2).to(dtype), focal.expand(n).to(dtype))


@torch.no_grad()
def _render_starts(model: CategoryModel, pose: torch.Tensor, latents: torch.Tensor, principal: torch.Tensor,
                   focal: torch.Tensor, size: tuple[int, int], settings: InferenceSettings) -> StartFragments:
    """The fragments of N (angles ``(N, 3)`` in radians, latent ``(N, K)``) starts at the initial distance;
    ``principal`` (x, y) and ``focal`` in feature cells, ``size`` the map's (h, w)."""
    camera = _start_camera(pose, principal, focal, model.mesh.template.dtype, settings)
    surface = model.surface(model.mesh(latents), camera, size)
    bins = 1 if settings.single_alpha else model.texture.n_bins
    (n, r, c), uv, alpha = covered_points(surface, model.rotations[:bins], model.alpha_temperature)
    return StartFragments(len(pose), n, r * size[1] + c, uv, alpha)


def _start_fragments(model: CategoryModel, starts: torch.Tensor, latents: torch.Tensor, principal: torch.Tensor,
                     focal: torch.Tensor, size: tuple[int, int], settings: InferenceSettings,
                     chunk: slice) -> StartFragments:
    """Fragments of starts ``chunk`` of the (pose x latent) grid for one camera intrinsic, kept in the
    model's least-recently-used cache within ``start_cache_mb``."""
    key = (size, tuple(principal.tolist()), float(focal), chunk.start, chunk.stop, latents.shape,
           dataclasses.astuple(settings))
    cache = model._starts
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    idx = torch.arange(chunk.start, chunk.stop, device=starts.device)
    frags = _render_starts(model, starts[idx // len(latents)], latents[idx % len(latents)], principal, focal, size,
                           settings)
    budget = settings.start_cache_mb * 2 ** 20
    if frags.nbytes <= budget:
        cache[key] = frags
        while sum(f.nbytes for f in cache.values()) > budget:
            cache.popitem(last=False)
    return frags


def _grid_search(model: CategoryModel, starts: torch.Tensor, latents: torch.Tensor, features: torch.Tensor,
                 clut: torch.Tensor | None, valid: torch.Tensor, principal: torch.Tensor, focal: torch.Tensor,
                 settings: InferenceSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Index into the (pose x latent) grid and loss of each image's best start ``(B,)``; images sharing
    intrinsics share the rendered grid."""
    total = len(starts) * len(latents)
    size = tuple(features.shape[-2:])
    table = feature_table(features)
    best_idx = torch.zeros(len(features), dtype=torch.long, device=features.device)
    best_loss = torch.zeros(len(features), dtype=features.dtype, device=features.device)
    groups: dict[tuple, list[int]] = {}
    for i in range(len(features)):
        groups.setdefault((tuple(principal[i].tolist()), float(focal[i])), []).append(i)
    for rows in groups.values():
        losses = [[] for _ in rows]
        for s in range(0, total, settings.start_chunk):
            frags = _start_fragments(model, starts, latents, principal[rows[0]], focal[rows[0]], size, settings,
                                     slice(s, min(total, s + settings.start_chunk)))
            with torch.no_grad():
                for k, b in enumerate(rows):
                    losses[k].append(compare_loss(frags.scores(model.texture, table, b, size), features[b:b + 1],
                                                  None if clut is None else clut[b:b + 1], valid[b:b + 1]))
        rows_t = torch.tensor(rows, device=features.device)
        best_loss[rows_t], best_idx[rows_t] = torch.stack([torch.cat(row) for row in losses]).min(1)
    return best_idx, best_loss


def search_starts(model: CategoryModel, features: torch.Tensor, clut: torch.Tensor | None, valid: torch.Tensor,
                  principal: torch.Tensor, focal: torch.Tensor, settings: InferenceSettings
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best start per image: ``(B, 3)`` angles (azimuth, elevation, theta in radians), ``(B, K)`` latents
    and ``(B,)`` losses; inputs as ``fit_category``'s.

    "joint" scores every (initial pose x initial latent) pair, as the paper; "staged" scores the poses
    with the mean of the initial latents, then the initial latents at each image's best pose.
    """
    starts = initial_poses(settings.n_azimuth, settings.n_elevation, settings.n_theta).to(features.device)
    latents = initial_latents(model.mesh, settings)
    if settings.start_search == "joint" or len(latents) == 1:
        idx, loss = _grid_search(model, starts, latents, features, clut, valid, principal, focal, settings)
        return starts[idx // len(latents)], latents[idx % len(latents)], loss
    idx, _ = _grid_search(model, starts, latents.mean(0, keepdim=True), features, clut, valid, principal, focal,
                          settings)
    B, L = len(features), len(latents)
    camera = _start_camera(starts[idx].repeat_interleave(L, 0), principal.repeat_interleave(L, 0),
                           focal.repeat_interleave(L, 0), model.mesh.template.dtype, settings)
    with torch.no_grad():
        score, _ = model.score(model.mesh(latents.repeat(B, 1)), camera,
                               feature_table(features.repeat_interleave(L, 0)), tuple(features.shape[-2:]),
                               settings.single_alpha)
    loss = compare_loss(score, features.repeat_interleave(L, 0),
                        None if clut is None else clut.repeat_interleave(L, 0), valid.repeat_interleave(L, 0))
    loss, best = loss.view(B, L).min(1)
    return starts[idx], latents[best], loss


def reconstruction_loss(models: list[CategoryModel], vertices: torch.Tensor, C: torch.Tensor, theta: torch.Tensor,
                        principal: torch.Tensor, focal: torch.Tensor, item_model: torch.Tensor, image: torch.Tensor,
                        features: torch.Tensor, table: torch.Tensor, clut: torch.Tensor | None, valid: torch.Tensor,
                        single_bin: bool = False, cache: tuple[torch.Tensor, torch.Tensor] | None = None
                        ) -> torch.Tensor:
    """``(N,)`` eq. 9 losses of N deformed meshes ``vertices (N, V, 3)`` seen from camera centres ``C (N, 3)`` with
    in-plane rotations ``theta (N,)`` (the optimisation's pose variables) and intrinsics ``principal (N, 2)``,
    ``focal (N,)`` in feature cells: item n is rendered by ``models[item_model[n]]`` and compared with image
    ``image[n]`` of ``features`` ``(B, d, h, w)`` (rows: ``table``); ``clut`` and ``valid`` are per item
    ``(N, h, w)``. The models must share their template and bins. ``cache``: the kernel's ``fused_score.dot_cache``
    for these items, kept over a fit's steps.

    On CPU the whole chain is one fused kernel with a mesh per thread task (``fused_score.surface_loss``); else
    torch renders the fragments, scores the covered pixels (``texture_scores``) and takes ``compare_loss``: the same
    number.
    """
    first = models[0]
    size = tuple(features.shape[-2:])
    rotations = first.rotations[:1 if single_bin else first.texture.n_bins]
    if fused_score.available(C.device):
        return fused_score.surface_loss(
            C, theta, principal, focal, vertices, first.mesh.faces, first.corner_uvs, rotations,
            first.alpha_temperature, [m.texture.texels() for m in models], [m.texture.gram_cache() for m in models],
            item_model, table, image, clut, valid, cache)
    a, e, d = position_to_angles(C)
    camera = Camera(a, e, theta, d, principal, focal)
    surface = first.surface(vertices, camera, size)
    (item, r, c), uv, alpha = covered_points(surface, rotations, first.alpha_temperature)
    table_rows = (image[item] * size[0] + r) * size[1] + c
    per_model = torch.bincount(item_model[item], minlength=len(models)).tolist()
    score = torch.cat([texture_scores(m.texture, u, al, table, tr) for m, u, al, tr in
                       zip(models, uv.split(per_model), alpha.split(per_model), table_rows.split(per_model))])
    score = score.new_zeros(surface.mask.shape).index_put((item, r, c), score)
    return compare_loss(score, features[image], clut, valid)


def fit_category(model: CategoryModel, features: torch.Tensor, clut: torch.Tensor | None, valid: torch.Tensor,
                 principal: torch.Tensor, focal: torch.Tensor, settings: InferenceSettings,
                 start: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> Fit:
    """Init search (unless ``start``, ``search_starts``' result, is given) then joint optimisation of
    pose, latent and instance scale for B images.

    ``features`` ``(B, d, h, w)`` unit-norm, one cell per 8 crop pixels (the backbone's stride); ``clut``
    ``(B, h, w)`` clutter scores or None (fg-only loss); ``valid`` ``(B, h, w)`` unpadded cells;
    ``principal`` ``(B, 2)`` as (x, y) and ``focal`` ``(B,)`` in feature cells, i.e. crop pixels divided
    by the stride, so the renders line up with the feature map.
    """
    rows = torch.arange(len(features), device=features.device)
    return fit_categories([model], features, clut, valid, principal, focal, settings, [rows], [start])[0]


def _batchable(models: list[CategoryModel]) -> bool:
    """Whether the models render alike (template, UVs, bins, temperature) and deform with networks of one
    shape, so one batch serves them all (the models of one checkpoint always do)."""
    first = models[0]

    def network(m: CategoryModel) -> list:
        return [p.shape for p in (*m.mesh.body.parameters(), *m.mesh.head.parameters(), m.mesh.point_layer.weight)]

    return all(torch.equal(m.mesh.faces, first.mesh.faces) and torch.equal(m.uvs, first.uvs)
               and torch.equal(m.rotations, first.rotations) and m.alpha_temperature == first.alpha_temperature
               and network(m) == network(first) for m in models[1:])


def _fit_in_kernel(features: torch.Tensor) -> bool:
    """Whether ``fit_categories`` runs each item's whole optimisation in one kernel call (``fused_score.surface_fit``:
    float32 on CPU) rather than a torch loop around the per-step kernel."""
    return features.dtype == torch.float32


def fit_categories(models: list[CategoryModel], features: torch.Tensor, clut: torch.Tensor | None,
                   valid: torch.Tensor, principal: torch.Tensor, focal: torch.Tensor, settings: InferenceSettings,
                   rows: list[torch.Tensor], starts: list[tuple | None]) -> list[Fit]:
    """``fit_category`` for several category models, model j fitting images ``rows[j]`` from ``starts[j]``
    (None: its own init search), inputs as ``fit_category``'s for all B images.

    All (model, image) pairs are optimised in one loop: their losses are independent and Adam is
    elementwise, so this is the same as one loop per model, but each step's rasterisation and
    autograd run once for all the models (which share their template and bins; else one loop each).
    """
    if len(models) > 1 and not _batchable(models):
        return [fit_categories([m], features, clut, valid, principal, focal, settings, [r], [st])[0]
                for m, r, st in zip(models, rows, starts)]
    dtype = features.dtype
    starts = list(starts)
    for j, (model, r) in enumerate(zip(models, rows)):
        if starts[j] is None:
            with stage("init_search"):
                starts[j] = search_starts(model, features[r], None if clut is None else clut[r], valid[r],
                                          principal[r], focal[r], settings)
    with stage("optimisation"):
        image = torch.cat(list(rows)).to(features.device)
        counts = [len(r) for r in rows]
        item_model = torch.repeat_interleave(torch.arange(len(models), device=features.device),
                                             torch.tensor(counts, device=features.device))
        angles = torch.cat([st[0] for st in starts]).to(dtype)
        N = len(image)
        centre = camera_position(angles[:, 0], angles[:, 1],
                                 torch.full((N,), settings.init_distance, dtype=dtype, device=features.device))
        C = centre.clone().requires_grad_(True)
        theta = angles[:, 2].clone().requires_grad_(True)
        zs = [st[1].to(dtype).clone().requires_grad_(not settings.fix_shape) for st in starts]
        log_scale = torch.zeros(N, 3, dtype=dtype, device=features.device, requires_grad=True)
        table = feature_table(features)
        item_clut, item_valid = None if clut is None else clut[image], valid[image]
        item_principal, item_focal = principal[image].to(dtype), focal[image].to(dtype)
        deform = StackedMeshes([m.mesh for m in models], item_model)
        fused = fused_score.available(features.device)
        if fused and _fit_in_kernel(features):
            first = models[0]
            rotations = first.rotations[:1 if settings.single_alpha else first.texture.n_bins]
            with torch.no_grad(), loop_threads(features.device):
                C, theta, log_scale, zs, final = fused_score.surface_fit(
                    C, theta, log_scale, zs, deform.network, item_principal, item_focal, first.mesh.faces,
                    first.corner_uvs, rotations, first.alpha_temperature, [m.texture.texels() for m in models],
                    [m.texture.gram_cache() for m in models], item_model, table, image, item_clut, item_valid,
                    fused_score.Optimisation(
                        settings.steps, decay_interval(settings.steps), settings.pose_lr,
                        (settings.pose_beta1, settings.pose_beta2), settings.pose_gamma,
                        math.log(settings.scale_range) if settings.scale_range else 0.0, not settings.fix_shape,
                        settings.latent_simplex))
        else:
            params = [C, theta, log_scale] + ([] if settings.fix_shape else zs)
            cache = fused_score.dot_cache(N, table.shape[0] // len(features)) if fused else None

            def loss_at() -> torch.Tensor:
                return reconstruction_loss(models, deform(zs, log_scale.exp()), C, theta, item_principal, item_focal,
                                           item_model, image, features, table, item_clut, item_valid,
                                           settings.single_alpha, cache)

            if settings.steps:
                opt = PoseOptimizer(params, settings.steps, settings.pose_lr,
                                    (settings.pose_beta1, settings.pose_beta2), settings.pose_gamma)
                with loop_threads(features.device):
                    _optimise(loss_at, opt, params, zs, log_scale, settings)
            with torch.no_grad():
                final = loss_at()
        with torch.no_grad():
            a, e, d = position_to_angles(C)
    return [Fit(*fields, z.detach(), scale, loss, start[2]) for *fields, z, scale, loss, start in
            zip(a.split(counts), e.split(counts), theta.detach().split(counts), d.split(counts), zs,
                log_scale.detach().exp().split(counts), final.split(counts), starts)]


def _optimise(loss_at, opt: PoseOptimizer, params: list[torch.Tensor], zs: list[torch.Tensor],
              log_scale: torch.Tensor, settings: InferenceSettings) -> None:
    """``settings.steps`` Adam steps on ``loss_at()``, keeping each z on the simplex and s' within its range.
    Gradients go to ``params`` only: the models' weights are fixed here, and backpropagating into them would
    double the deformation network's backward."""
    for _ in range(settings.steps):
        loss_at().sum().backward(inputs=params)
        opt.step()
        with torch.no_grad():
            if settings.latent_simplex and not settings.fix_shape:
                for z in zs:
                    z.copy_(project_simplex(z))
            if settings.scale_range:
                log_scale.clamp_(-math.log(settings.scale_range), math.log(settings.scale_range))


@torch.no_grad()
def masks(model: CategoryModel, fit: Fit, features: torch.Tensor, clut: torch.Tensor | None,
          principal: torch.Tensor, focal: torch.Tensor, stride: int, image_sizes: list[tuple[int, int]],
          single_bin: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Amodal masks (the silhouette O rendered at image resolution), visible masks (FG: O where the
    rendered object explains the feature better than clutter, from the feature grid) per image, and
    the fitted vertices ``(B, V, 3)``.

    ``features``, ``clut``, ``principal`` and ``focal`` as for ``fit_category`` (feature cells); ``stride``
    crop pixels per cell scales the camera back to the crops, whose ``image_sizes`` are (H, W) in pixels:
    the masks are ``(H, W)`` bool each, the FG decision upsampled nearest x ``stride``.
    """
    vertices = model.mesh(fit.latent, fit.scale)
    size = tuple(features.shape[-2:])
    score, surface = model.score(vertices, fit.camera(principal, focal), feature_table(features), size, single_bin)
    fg = surface.mask
    if clut is not None:
        fg = fg & (score > clut)
    H = max(h for h, _ in image_sizes)
    W = max(w for _, w in image_sizes)
    full = fit.camera(principal * stride, focal * stride)
    amodal = silhouette(vertices, model.mesh.faces, full, (H, W))
    fg_full = F.interpolate(fg[:, None].float(), scale_factor=stride, mode="nearest")[:, 0, :H, :W] > 0.5
    amodals, visibles = [], []
    for i, (h, w) in enumerate(image_sizes):
        amodals.append(amodal[i, :h, :w])
        visibles.append(amodal[i, :h, :w] & fg_full[i, :h, :w])
    return amodals, visibles, vertices
