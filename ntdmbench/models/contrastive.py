"""NeMo's contrastive feature learning: the vertex/clutter feature bank and its loss (shared with NTDM).

Source: ``docs/reference.md`` §NeMo training (``Angtian/NeMo`` ``FeatureBanks.py``,
``TrainNeMo.py``). One training step, for a batch of crops with known poses:

1. ``project_visible``: pixel positions of the mesh vertices and their visibility (z-buffer test).
2. ``vertex_cells`` + ``sample_cells``: the image feature under each vertex (nearest stride-8 cell);
   ``background_cells``: ``n`` clutter cells per image (outside the object box, off the vertices).
3. ``contrastive_loss``: cross-entropy of each visible vertex's feature against the bank (own vertex
   is the target), temperature 0.07; vertices within the exclusion radius (``near_vertex_mask``) are
   removed as negatives; clutter columns are down-weighted by 5e-3; plus 0.1 x the mean similarity of
   clutter features to the vertex bank.
4. ``FeatureBank.update``: momentum update of the vertex rows with the batch mean (invisible
   vertices contribute zero), clutter features pushed into a FIFO, all rows L2-normalised.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ntdmbench.models.camera import Camera
from ntdmbench.models.render import rasterize

TEMPERATURE = 0.07
CLUTTER_WEIGHT = 5e-3
CLUTTER_REG = 0.1
NEAR_EPS = 1e5


class FeatureBank(nn.Module):
    """``memory`` ``(n_vertices + n_clutter, C)``: per-vertex features, then a FIFO of clutter features.

    NeMo sizes the clutter part ``num_noise * max_group = 5 * 512 = 2560``. Rows start uniform in
    ``[-1/sqrt(C/3), 1/sqrt(C/3)]`` (as NeMo) and are L2-normalised; ``generator`` makes that seeded.
    """

    def __init__(self, n_vertices: int, feature_dim: int = 128, n_clutter: int = 2560, momentum: float = 0.9,
                 generator: torch.Generator | None = None):
        super().__init__()
        if n_vertices < 1 or n_clutter < 0:
            raise ValueError(f"feature bank needs n_vertices >= 1 and n_clutter >= 0, got {n_vertices}, {n_clutter}")
        stdv = 1 / math.sqrt(feature_dim / 3)
        memory = torch.rand(n_vertices + n_clutter, feature_dim, generator=generator) * (2 * stdv) - stdv
        self.register_buffer("memory", F.normalize(memory, dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.n_vertices, self.n_clutter, self.momentum = n_vertices, n_clutter, momentum

    @classmethod
    def from_memory(cls, memory: torch.Tensor, n_vertices: int, momentum: float = 0.9, pointer: int = 0) -> FeatureBank:
        """A bank holding ``memory`` ``(n_vertices + n_clutter, C)`` as given (a checkpoint's, NeMo's included)."""
        if not 0 < n_vertices <= len(memory):
            raise ValueError(f"bank memory has {len(memory)} rows, cannot hold {n_vertices} vertices")
        bank = cls(n_vertices, memory.shape[1], len(memory) - n_vertices, momentum)
        bank.memory.copy_(memory)
        bank.pointer.fill_(pointer)
        return bank

    @property
    def vertices(self) -> torch.Tensor:
        return self.memory[:self.n_vertices]

    @property
    def clutter(self) -> torch.Tensor:
        return self.memory[self.n_vertices:]

    @torch.no_grad()
    def update(self, vertex_features: torch.Tensor, visible: torch.Tensor, clutter_features: torch.Tensor) -> None:
        """Momentum-update the vertex rows with ``mean_b(features * visible)`` and push ``(B, K, C)`` clutter rows."""
        mean = (vertex_features.detach() * visible[..., None].to(vertex_features.dtype)).mean(0)
        memory = self.memory.clone()
        memory[:self.n_vertices] = memory[:self.n_vertices] * self.momentum + mean * (1 - self.momentum)
        rows = clutter_features.detach().reshape(-1, memory.shape[1])
        if self.n_clutter and len(rows):
            slots = (self.pointer + torch.arange(len(rows), device=rows.device)) % self.n_clutter
            # a ring buffer: with more rows than slots, only the newest n_clutter survive
            memory[self.n_vertices + slots[-self.n_clutter:]] = rows[-self.n_clutter:].to(memory.dtype)
            self.pointer.copy_((self.pointer + len(rows)) % self.n_clutter)
        self.memory.copy_(F.normalize(memory, dim=1))


def project_visible(vertices: torch.Tensor, faces: torch.Tensor, camera: Camera, image_size: tuple[int, int],
                    tolerance: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel positions ``(B, V, 2)`` (x, y) of the vertices under B cameras and their visibility ``(B, V)``.

    A vertex is visible when it lands inside the image and nothing covers its pixel closer than its own
    depth minus ``tolerance * depth`` (a z-buffer test at the image's resolution, as NeMo's
    ``CalculateOcc``); a vertex on the silhouette edge, whose pixel no face covers, counts as visible.
    """
    with torch.no_grad():
        screen = camera.transform(vertices)
        H, W = image_size
        frags = rasterize(vertices, faces, camera, image_size)
        xy, depth = screen[..., :2], screen[..., 2]
        col, row = xy[..., 0].floor().long(), xy[..., 1].floor().long()
        inside = (col >= 0) & (col < W) & (row >= 0) & (row < H) & (depth > 0)
        flat = (row.clamp(0, H - 1) * W + col.clamp(0, W - 1))
        zbuf = frags.depth.flatten(1).gather(1, flat)
        covered = frags.pix_to_face.flatten(1).gather(1, flat) >= 0
        visible = inside & (~covered | (depth <= zbuf + tolerance * depth))
    return xy, visible


def vertex_cells(points: torch.Tensor, stride: int, map_size: tuple[int, int]) -> torch.Tensor:
    """Flat cell index ``(B, N)`` in an ``(h, w)`` feature map of pixel points ``(B, N, 2)`` (x, y),
    clamped into the map (NeMo: ``y // stride * w + x // stride`` after clamping into the image)."""
    h, w = map_size
    col = torch.div(points[..., 0], stride, rounding_mode="floor").long().clamp(0, w - 1)
    row = torch.div(points[..., 1], stride, rounding_mode="floor").long().clamp(0, h - 1)
    return row * w + col


def sample_cells(features: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """``(B, N, C)``: the feature vectors of ``features`` ``(B, C, h, w)`` at flat cells ``(B, N)``."""
    flat = features.flatten(2)
    return flat.gather(2, cells[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)


def background_cells(allowed: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, n)`` flat cells drawn uniformly from ``allowed`` ``(B, h, w)`` (with replacement when an image
    has fewer than ``n``); an image with no allowed cell draws from all of its cells."""
    weights = allowed.flatten(1).float()
    weights[weights.sum(1) == 0] = 1.0
    replace = bool((weights.sum(1) < n).any())
    return torch.multinomial(weights, n, replacement=replace, generator=generator)


def near_vertex_mask(points: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(B, V, V)`` bool: vertex pairs whose projections are within ``threshold`` pixels, excluding
    each vertex itself (NeMo's ``mask_remove_near``, ``distance_thr`` 48 px at viewport 3000)."""
    near = torch.cdist(points, points) <= threshold
    return near & ~torch.eye(points.shape[1], dtype=torch.bool, device=points.device)


def contrastive_loss(vertex_features: torch.Tensor, visible: torch.Tensor, clutter_features: torch.Tensor,
                     bank: FeatureBank, near: torch.Tensor, temperature: float = TEMPERATURE,
                     clutter_weight: float = CLUTTER_WEIGHT, clutter_reg: float = CLUTTER_REG
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """NeMo's loss against the bank as it is before this batch's update.

    ``vertex_features`` ``(B, V, C)`` and ``clutter_features`` ``(B, K, C)`` are unit-norm image features at
    the vertices and at clutter cells; ``visible`` ``(B, V)``; ``near`` ``(B, V, V)`` from ``near_vertex_mask``.
    Logits are ``f . memory / T`` minus ``1e5`` on near vertices and minus ``-log(clutter_weight)`` on the
    clutter rows; the cross-entropy targets the vertex's own row and averages over visible vertices.
    Returns the loss and its two parts as floats.
    """
    b_idx, v_idx = visible.nonzero(as_tuple=True)
    if len(b_idx) == 0:
        raise ValueError("contrastive loss: no visible vertex in the batch")
    feats = vertex_features[b_idx, v_idx]  # (N, C)
    logits = feats @ bank.memory.T / temperature  # (N, V + K)
    penalty = torch.cat([near[b_idx, v_idx].to(logits.dtype) * NEAR_EPS,
                         torch.full((len(b_idx), bank.n_clutter), -math.log(clutter_weight),
                                    dtype=logits.dtype, device=logits.device)], 1)
    main = F.cross_entropy(logits - penalty, v_idx)
    reg = (clutter_features @ bank.vertices.T).mean() * clutter_reg if clutter_features.numel() else logits.new_zeros(())
    return main + reg, {"contrastive": main.detach().item(), "clutter_reg": reg.detach().item()}
