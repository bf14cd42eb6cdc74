"""NTDM's EM-type contrastive training (paper §3.3, fig. 2; CoKe's scheme).

Per batch of training crops with ground-truth pose and CAD index:

1. E-step on the feature extractor: image features ``F = Phi(I)``; the deformable mesh of the ground
   truth latent ``z_k`` rasterised under the ground-truth camera gives UV fragments (at ``uv_stride``,
   finer than the stride-8 features); image features are carried onto the surface by bilinear
   interpolation at every visible fragment (differentiable in the features and the UVs).
   ``n_pos`` of them are the positives; the loss of eq. 8 is the contrastive cross-entropy (CoKe's form,
   temperature 0.07) of each positive against

   - its own texture value ``theta^{b,c}_{u,v}`` (D_ML, the target),
   - ``n_neg`` texture values of its own category farther than ``tau`` on the template (D_Con),
   - ``n_class_neg`` texture values of the other categories (D_Class, weight ``W_Class``),
   - the background feature bank (D_Back, weight ``W_BG``);

   a weight W enters as ``+log W`` on those logits (W_Con = W_Class = 1, W_BG = 0.1). Texture values are
   blended with the positive's own viewing coefficients alpha_b.
2. M-step on the textures: every visible fragment's feature is splatted into its texels of each bin
   (weighted by alpha_b) and the texels move to it with momentum 0.9; background cells push their
   features into the background bank (a FIFO).

The spatial threshold ``tau`` is a chord length on the unit template sphere (the UV distance the paper
names breaks at the u seam and near the poles, where UV and surface distances disagree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ntdmbench.datasets.records import Sample
from ntdmbench.models.backbone import FeatureNet
from ntdmbench.models.camera import Camera
from ntdmbench.models.contrastive import TEMPERATURE, background_cells, sample_cells
from ntdmbench.ntdm.inference import CategoryModel
from ntdmbench.ntdm.textures import blend, sphere_uv, view_coefficients


@dataclass
class TrainSettings:
    """The per-batch training settings (paper §3.3, §4.1.2), the defaults of ``ntdm``'s fields of the same names."""

    texture_momentum: float = 0.9
    n_pos: int = 1000
    n_neg: int = 2000
    n_class_neg: int = 1000
    tau: float = 0.25
    w_con: float = 1.0
    w_class: float = 1.0
    w_bg: float = 0.1
    temperature: float = TEMPERATURE
    n_bg: int = 20
    uv_stride: int = 2


class BackgroundBank:
    """``features (n, d)``: a FIFO of unit-norm background features (the paper's B)."""

    def __init__(self, size: int, feature_dim: int, generator: torch.Generator | None = None):
        if size < 1:
            raise ValueError(f"background bank size must be >= 1, got {size}")
        self.features = F.normalize(torch.randn(size, feature_dim, generator=generator), dim=1)
        self.pointer = 0

    @torch.no_grad()
    def push(self, rows: torch.Tensor) -> None:
        rows = F.normalize(rows.detach().reshape(-1, self.features.shape[1]), dim=1)[-len(self.features):]
        slots = (self.pointer + torch.arange(len(rows))) % len(self.features)
        self.features[slots] = rows.to(self.features)
        self.pointer = int((self.pointer + len(rows)) % len(self.features))

    def state_dict(self) -> dict:
        return {"features": self.features.clone(), "pointer": self.pointer}

    def load_state_dict(self, state: dict) -> None:
        self.features, self.pointer = state["features"].clone(), int(state["pointer"])


def _uniform_sphere(n: int, generator: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(n, 3, generator=generator), dim=1)


def blended_logits(anchors: torch.Tensor, alpha: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``(P, N)`` cosine of anchors ``(P, d)`` with ``normalize(sum_b alpha_pb values_nb)`` for
    alpha ``(P, b)`` and texture values ``(N, b, d)``, as two matrix products (no ``(P, N, d)`` blends)."""
    numerator = (alpha[:, :, None] * anchors[:, None, :]).flatten(1) @ values.flatten(1).T
    gram = torch.einsum("nbd,ncd->nbc", values, values).flatten(1)
    norm2 = (alpha[:, :, None] * alpha[:, None, :]).flatten(1) @ gram.T
    return numerator / norm2.clamp(min=1e-12).sqrt()


@dataclass
class Surface:
    """One image's visible fragments: image features carried onto the surface and their attributes."""

    features: torch.Tensor  # (N, d), differentiable in the backbone
    uv: torch.Tensor  # (N, 2)
    alpha: torch.Tensor  # (N, b)
    template_point: torch.Tensor  # (N, 3) on the unit sphere


def surface_features(model: CategoryModel, feature_map: torch.Tensor, sample: Sample, stride: int,
                     uv_stride: int) -> tuple[Surface, torch.Tensor]:
    """The visible surface of one sample's ground-truth mesh and the rendered silhouette at the
    feature grid's resolution ``(h, w)`` (bool), for picking background cells."""
    if sample.cad_index is None or sample.pose is None:
        raise ValueError(f"sample {sample.id}: NTDM training needs a pose and a CAD index")
    if not 1 <= sample.cad_index <= model.mesh.n_shapes:
        raise ValueError(f"sample {sample.id}: cad_index {sample.cad_index} outside 1..{model.mesh.n_shapes}")
    H, W = sample.load_image().shape[:2]
    size = (math.ceil(H / uv_stride), math.ceil(W / uv_stride))
    camera = Camera.from_poses([sample.pose]).to(torch.float32)
    with torch.no_grad():
        vertices = model.mesh(model.mesh.one_hot(sample.cad_index - 1))
        surface = model.surface(vertices, camera.downsample(uv_stride), size)
        coarse = model.surface(vertices, camera.downsample(stride), tuple(feature_map.shape[-2:])).mask[0]
    visible = surface.mask[0]
    if sample.inmodal_mask is not None:
        rows = ((torch.arange(size[0]) + 0.5) * uv_stride).long().clamp(max=H - 1)
        cols = ((torch.arange(size[1]) + 0.5) * uv_stride).long().clamp(max=W - 1)
        visible = visible & torch.as_tensor(np.asarray(sample.inmodal_mask, dtype=bool))[rows[:, None], cols[None]]
    r, c = visible.nonzero(as_tuple=True)
    # pixel centres in feature-cell units; grid_sample(align_corners=False) puts cell i's centre at i + 0.5
    h, w = feature_map.shape[-2:]
    gx = ((c.float() + 0.5) * uv_stride / stride) / w * 2 - 1
    gy = ((r.float() + 0.5) * uv_stride / stride) / h * 2 - 1
    grid = torch.stack([gx, gy], -1).view(1, -1, 1, 2).to(feature_map)
    feats = F.grid_sample(feature_map[None], grid, align_corners=False)[0, :, :, 0].T
    alpha = view_coefficients(surface.normals[0, r, c], surface.to_camera[0, r, c], model.rotations,
                              model.alpha_temperature)
    return Surface(F.normalize(feats, dim=1), surface.uv[0, r, c], alpha,
                   F.normalize(surface.template_point[0, r, c], dim=1)), coarse


def contrastive_loss(surface: Surface, category: str, models: dict[str, CategoryModel], bank: BackgroundBank,
                     settings: TrainSettings, generator: torch.Generator) -> torch.Tensor:
    """Eq. 8 for one image: cross-entropy of each positive against D_Con, D_Class and D_Back negatives."""
    n = len(surface.features)
    pick = torch.randint(n, (settings.n_pos,), generator=generator) if n < settings.n_pos else \
        torch.randperm(n, generator=generator)[:settings.n_pos]
    f, alpha = surface.features[pick], surface.alpha[pick]
    own = models[category]
    with torch.no_grad():
        target = own.texture.lookup(surface.uv[pick])
    logits = [(blend(target, alpha) * f).sum(1, keepdim=True)]
    points = _uniform_sphere(settings.n_neg, generator)
    with torch.no_grad():
        values = own.texture.lookup(sphere_uv(points))
    near = torch.cdist(surface.template_point[pick], points) < settings.tau
    logits.append(blended_logits(f, alpha, values).masked_fill(near, -math.inf) + math.log(settings.w_con))
    others = [c for c in models if c != category]
    if others and settings.n_class_neg > 0:
        per = max(1, settings.n_class_neg // len(others))
        with torch.no_grad():
            values = torch.cat([models[c].texture.lookup(sphere_uv(_uniform_sphere(per, generator))) for c in others])
        logits.append(blended_logits(f, alpha, values) + math.log(settings.w_class))
    logits.append(f @ bank.features.T.to(f) + math.log(settings.w_bg))
    logits = torch.cat(logits, 1) / settings.temperature
    return F.cross_entropy(logits, torch.zeros(len(f), dtype=torch.long))


def background_region(sample: Sample, silhouette: torch.Tensor, stride: int) -> torch.Tensor:
    """``(h, w)`` bool feature cells that see only background: inside the image and wholly off the
    object's box and amodal mask where annotated, and off the rendered deformable mesh (dilated by one
    cell when neither is annotated: a mesh fitted to CAD models misses thin parts, whose features must
    not enter the bank)."""
    h, w = silhouette.shape
    H, W = sample.load_image().shape[:2]
    pixels = torch.zeros(h * stride, w * stride, dtype=torch.bool)
    pixels[:H, :W] = True
    if sample.amodal_mask is not None:
        pixels[:H, :W] &= ~torch.as_tensor(np.asarray(sample.amodal_mask, dtype=bool))
    if sample.bbox is not None:
        x0, y0, x1, y1 = sample.bbox
        pixels[max(0, math.floor(y0)):max(0, math.ceil(y1)), max(0, math.floor(x0)):max(0, math.ceil(x1))] = False
    taken = silhouette.float()[None]
    if sample.amodal_mask is None and sample.bbox is None:
        taken = F.max_pool2d(taken, 3, stride=1, padding=1)
    return pixels.view(h, stride, w, stride).all(3).all(1) & (taken[0] == 0)


def train_batch(backbone: FeatureNet, images: torch.Tensor, samples: list[Sample], models: dict[str, CategoryModel],
                bank: BackgroundBank, optimizer: torch.optim.Optimizer, settings: TrainSettings,
                generator: torch.Generator) -> float:
    """One EM step on a batch: backbone update with eq. 8, then texture and bank updates. Returns the loss."""
    feature_maps = backbone(images)
    stride = backbone.stride
    losses, updates, background = [], {}, []
    for i, sample in enumerate(samples):
        model = models[sample.category]
        surface, silhouette = surface_features(model, feature_maps[i], sample, stride, settings.uv_stride)
        if len(surface.features) == 0:
            continue
        losses.append(contrastive_loss(surface, sample.category, models, bank, settings, generator))
        updates.setdefault(sample.category, []).append(surface)
        allowed = background_region(sample, silhouette, stride)
        if allowed.any():
            cells = background_cells(allowed[None], settings.n_bg, generator)
            background.append(sample_cells(feature_maps[i:i + 1].detach(), cells)[0])
    if not losses:
        raise ValueError("training batch has no visible object surface in any image")
    loss = torch.stack(losses).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        for category, surfaces in updates.items():
            models[category].texture.momentum_update(torch.cat([s.uv for s in surfaces]),
                                                     torch.cat([s.alpha for s in surfaces]),
                                                     torch.cat([s.features.detach() for s in surfaces]),
                                                     settings.texture_momentum)
        if background:
            bank.push(torch.cat(background))
    return float(loss.detach())
