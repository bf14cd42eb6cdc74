"""StarMap (Zhou et al., ECCV 2018): category-agnostic keypoints and viewpoint by similarity alignment.

A stacked hourglass (``xingyizhou/StarMap`` ``-arch hg -task starembdep``) maps a square crop around
the object to five channels at a quarter of the input resolution: the StarMap (one heatmap whose
peaks are all keypoints of any category), three canonical-view features (the keypoint's 3D location
in the CAD frame) and a depth (the keypoint's depth relative to the object centre, in units of the
crop side). The viewpoint comes from the heatmap's 3x3-NMS peaks above 0.05: each peak's canonical
point is aligned to the peak lifted by its depth with Horn's weighted similarity transform (weights:
peak scores, ``horn``), whose rotation is the camera rotation.

Adapted to this benchmark (``docs/reference.md`` §StarMap describes the original):

- Keypoints: StarMap trains on PASCAL3D+'s semantic keypoints, and so does this model when the training
  samples carry them (``Sample.keypoints``, e.g. NeMo's 2D-stage ``cropped_kp_list``): the 2D targets are
  the annotated visible keypoints, the canonical feature is the keypoint's 3D location on the sample's
  CAD model (``CAD/{cate}.mat``, ``read_cad_keypoints``; StarMap's ``space_embedding``) and the depth
  comes from projecting that location with the GT pose. A keypoint the CAD model lacks is no target.
  NeMo's 3D-stage data carry no semantic keypoints; then (a deviation) per category ``keypoints`` 3D
  anchors are farthest-point samples of the pooled vertices of all ``CAD/{cate}/NN.off`` models, and
  each CAD model's keypoints are its vertices nearest the anchors (so they roughly correspond across
  models, as semantic keypoints do), projected with the sample's camera; a z-buffer test (and the
  occluder mask, where a sample has one) decides visibility. Canonical coordinates are CAD units as
  stored, either way. Inference reads no CAD file: the Horn alignment uses the canonical points the
  network predicts, which are those it was trained on. ``describe()["keypoints"]`` names the source.
- Crop: StarMap's rule on the sample's box (centre of the box, side ``1.5 max(w, h)`` capped at the
  image's larger side); without a box, the whole image. Training augmentation as StarMap: scale
  ``2^N(0, 0.25)`` clipped at 2 sigma, a vertical shift (``aug_shift`` of the side), rotation
  ``N(0, 30 deg)`` with probability 0.4 and horizontal flips (negating the canonical x).
- Loss as StarMap: mean squared error over the five channels, the heatmap everywhere, the
  features and depth only at the keypoint pixels with weight ``res^2 * reg_weight``; summed over stacks.
- Optimiser: RMSprop, lr 2.5e-4, batch 6, 90 epochs, tenfold drops every ``drop_lr`` epochs (StarMap's
  default never drops) as StarMap; ``optimizer=adam`` for short CPU runs.
- Alignment: Horn with weighted centroids (StarMap's ``horn87`` centres the points unweighted, then
  weights them); the weak-perspective lift ignores the crop's offset from the principal point.
- Output: azimuth, elevation and theta; the distance is not estimated (NaN). Test-time flip averaging
  as StarMap's test mode.

Quick settings for CPU runs make the hourglass smaller (stacks, features, modules, depth, input size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ntdmbench.baselines.horn import horn_similarity
from ntdmbench.baselines.single_network import SingleNetwork
from ntdmbench.models.training import Resume, ids_by_category
from ntdmbench.datasets.keypoints import KEYPOINT_NAMES, read_cad_keypoints
from ntdmbench.datasets.records import DataError, Prediction, Sample
from ntdmbench.models.camera import Camera, angles_from_rotation
from ntdmbench.models.meshes import Mesh, read_off
from ntdmbench.models.predictor import BasePredictor, Capability, InputSpec

CHANNELS = 5  # StarMap heatmap, canonical x, y, z, depth
DEVIATIONS = ("Horn alignment with weighted centroids; distance not predicted (NaN)",)
"""One line per difference from the official implementation (module docstring); in ``describe()``."""
FARTHEST_POINT_DEVIATION = (
    "keypoints: farthest-point anchors of the pooled CAD vertices snapped to each CAD model (the training "
    "data carry no semantic keypoints); projected with the GT pose, z-buffer visibility")
"""The further deviation of a model trained without semantic keypoints."""


# --- the network (StarMap lib/models/hg.py, Newell et al.'s stacked hourglass) ---------------------


class Residual(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-conv1x1 (out/2), BN-ReLU-conv3x3, BN-ReLU-conv1x1 (out)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, mid, 1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1),
        )
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


def _residuals(n: int, features: int) -> nn.Sequential:
    return nn.Sequential(*(Residual(features, features) for _ in range(n)))


class Hourglass(nn.Module):
    """``depth`` levels of (skip branch | max-pool, residuals, inner hourglass, residuals, nearest x2)."""

    def __init__(self, depth: int, modules: int, features: int):
        super().__init__()
        self.up1, self.low1, self.low3 = (_residuals(modules, features) for _ in range(3))
        self.low2 = Hourglass(depth - 1, modules, features) if depth > 1 else _residuals(modules, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2))))
        return self.up1(x) + F.interpolate(low, scale_factor=2, mode="nearest")


class HourglassNet(nn.Module):
    """Stem to stride 4, then ``stacks`` hourglasses with intermediate supervision; one output per stack.

    Stem widths are ``features / 4, / 2, / 2, 1`` (StarMap's 64, 128, 128, 256 at 256 features).
    """

    def __init__(self, stacks: int, modules: int, features: int, depth: int, outputs: int = CHANNELS):
        super().__init__()
        f = features
        self.stem = nn.Sequential(
            nn.Conv2d(3, f // 4, 7, stride=2, padding=3), nn.BatchNorm2d(f // 4), nn.ReLU(inplace=True),
            Residual(f // 4, f // 2), nn.MaxPool2d(2), Residual(f // 2, f // 2), Residual(f // 2, f),
        )
        self.hourglass = nn.ModuleList(Hourglass(depth, modules, f) for _ in range(stacks))
        self.residual = nn.ModuleList(_residuals(modules, f) for _ in range(stacks))
        self.lin = nn.ModuleList(nn.Sequential(nn.Conv2d(f, f, 1), nn.BatchNorm2d(f), nn.ReLU(inplace=True))
                                 for _ in range(stacks))
        self.out = nn.ModuleList(nn.Conv2d(f, outputs, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in range(stacks - 1))
        self.merge_outputs = nn.ModuleList(nn.Conv2d(outputs, f, 1) for _ in range(stacks - 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, hourglass in enumerate(self.hourglass):
            y = self.lin[i](self.residual[i](hourglass(x)))
            outs.append(self.out[i](y))
            if i < len(self.merge_features):
                x = x + self.merge_features[i](y) + self.merge_outputs[i](outs[-1])
        return outs


# --- keypoints from the CAD models -------------------------------------------------------------


def farthest_points(points: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` farthest-point samples, starting from the point farthest from the centroid."""
    chosen = [int(np.argmax(np.linalg.norm(points - points.mean(0), axis=1)))]
    dist = np.linalg.norm(points - points[chosen[0]], axis=1)
    for _ in range(1, min(k, len(points))):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return np.array(chosen)


def cad_keypoints(meshes: Sequence[Mesh], k: int) -> list[np.ndarray]:
    """Per mesh, the ``(k, 3)`` vertices nearest the farthest-point anchors of all meshes' vertices."""
    pooled = np.concatenate([m.vertices for m in meshes])
    anchors = pooled[farthest_points(pooled, k)]
    return [m.vertices[np.linalg.norm(m.vertices[None] - anchors[:, None], axis=2).argmin(1)] for m in meshes]


def load_category_keypoints(root: Path, category: str, k: int) -> dict[int, tuple[np.ndarray, Mesh]]:
    """``{cad_index: (keypoints (k, 3), mesh)}`` for ``{root}/CAD/{category}/NN.off``."""
    folder = Path(root) / "CAD" / category
    paths = sorted(p for p in folder.glob("*.off") if len(p.name) < 7)
    if not paths:
        raise DataError(f"{folder}: no CAD models (NN.off); StarMap's keypoints come from them")
    meshes = [read_off(p) for p in paths]
    points = cad_keypoints(meshes, k)
    return {int(p.stem): (kp, m) for p, kp, m in zip(paths, points, meshes)}


def project(sample: Sample, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, Camera]:
    """CAD points under the sample's pose: screen ``(K, 3)`` (pixels x, y and camera depth), the depth behind
    the object centre in image pixels (weak perspective) and the camera."""
    if sample.pose is None or sample.pose.principal is None:
        raise DataError(f"sample {sample.id}: StarMap training needs a pose with a principal point")
    camera = Camera.from_poses([sample.pose])
    screen = camera.transform(torch.as_tensor(points, dtype=torch.float64))[0].numpy()
    pixels_per_unit = float(camera.focal_px[0]) / sample.pose.distance
    return screen, (screen[:, 2] - sample.pose.distance) * pixels_per_unit, camera


@dataclass(frozen=True)
class KeypointTargets:
    """One training object's keypoints in its image: pixels, depth offsets and canonical coordinates."""

    xy: np.ndarray  # (K, 2) image pixels (x right, y down)
    depth: np.ndarray  # (K,) depth behind the object centre, image pixels (weak perspective)
    canonical: np.ndarray  # (K, 3) CAD coordinates
    visible: np.ndarray  # (K,) bool


def keypoint_targets(sample: Sample, keypoints: np.ndarray, mesh: Mesh, tolerance: float = 0.03) -> KeypointTargets:
    """Project a CAD model's keypoints with the sample's pose; a keypoint is visible when it lies in the
    image, in front of the rendered surface (within ``tolerance`` CAD units) and off the occluder mask."""
    from ntdmbench.models.render import rasterize

    screen, depth, camera = project(sample, keypoints)
    h, w = sample.load_image().shape[:2]
    vertices, faces = mesh.torch(torch.float64)
    fragments = rasterize(vertices, faces, camera, (h, w), backend="torch")
    col, row = np.floor(screen[:, 0]).astype(int), np.floor(screen[:, 1]).astype(int)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    c, r = col.clip(0, w - 1), row.clip(0, h - 1)
    covered = fragments.silhouette[0].numpy()[r, c]
    surface = fragments.depth[0].numpy()[r, c]
    visible = inside & (~covered | (screen[:, 2] <= surface + tolerance))
    if sample.occluder_mask is not None:
        visible &= ~np.asarray(sample.occluder_mask, dtype=bool)[r, c]
    return KeypointTargets(screen[:, :2], depth, np.asarray(keypoints, dtype=np.float64), visible)


def semantic_targets(sample: Sample, canonical: np.ndarray, size: int) -> KeypointTargets:
    """The sample's annotated semantic keypoints padded to ``size`` rows: image position and visibility as
    annotated, canonical coordinates from its CAD model's keypoints ``(K, 3)`` (NaN where the model lacks
    one: then no target) and depth from projecting those with the pose."""
    names = KEYPOINT_NAMES[sample.category]
    if tuple(sample.keypoints.names) != names or canonical.shape != (len(names), 3):
        raise DataError(f"sample {sample.id}: keypoints are not the {len(names)} named in "
                        f"KEYPOINT_NAMES[{sample.category!r}]")
    known = np.isfinite(canonical).all(1)
    points = np.where(known[:, None], canonical, 0.0)
    _, depth, _ = project(sample, points)
    visible = np.asarray(sample.keypoints.visible, dtype=bool) & known & np.isfinite(sample.keypoints.xy).all(1)
    xy = np.where(visible[:, None], sample.keypoints.xy, 0.0)

    def padded(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, np.zeros((size - len(a), *a.shape[1:]), dtype=a.dtype)])

    return KeypointTargets(padded(xy), padded(np.where(visible, depth, 0.0)), padded(points), padded(visible))


# --- crops --------------------------------------------------------------------------------------


def crop_window(sample: Sample, image_hw: tuple[int, int], pad_scale: float) -> tuple[float, float, float]:
    """StarMap's crop: (centre x, centre y, side) around the box, side capped at the image's larger side."""
    h, w = image_hw
    if sample.bbox is None:
        return w / 2, h / 2, float(max(h, w))
    x0, y0, x1, y1 = sample.bbox
    side = min(max(x1 - x0, y1 - y0) * pad_scale, max(h, w))
    return (x0 + x1) / 2, (y0 + y1) / 2, float(side)


def crop_grid(window: torch.Tensor, size: int, image_hw: tuple[int, int]) -> torch.Tensor:
    """``grid_sample`` grid ``(1, size, size, 2)`` of a window (cx, cy, side, rotation, flip ±1): crop point
    ``(u, v)`` in [-1, 1] looks at image pixel ``centre + side/2 * Rot(rotation) (flip u, v)``."""
    h, w = image_hw
    cx, cy, side, rot, flip = window.tolist()
    cos, sin = math.cos(rot), math.sin(rot)
    theta = torch.tensor([[side / w * cos * flip, -side / w * sin, 2 * cx / w - 1],
                          [side / h * sin * flip, side / h * cos, 2 * cy / h - 1]], dtype=torch.float32)
    return F.affine_grid(theta[None], [1, 1, size, size], align_corners=False)


def crop_image(image: np.ndarray, window: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor
               ) -> torch.Tensor:
    """A ``(3, size, size)`` normalised crop (``crop_grid``); outside the image is zero after normalisation."""
    x = (torch.tensor(image).permute(2, 0, 1).float() / 255 - mean) / std
    grid = crop_grid(window, size, image.shape[:2])
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def to_crop(xy: torch.Tensor, window: torch.Tensor, res: int) -> torch.Tensor:
    """Image pixels ``(..., K, 2)`` to continuous crop-map pixels at resolution ``res`` (inverse of ``crop_image``)."""
    cx, cy, side, rot, flip = window.unbind(-1)
    d = (xy - torch.stack([cx, cy], -1).unsqueeze(-2)) / (side / 2)[..., None, None]
    cos, sin = rot.cos().unsqueeze(-1), rot.sin().unsqueeze(-1)
    u = (cos * d[..., 0] + sin * d[..., 1]) * flip.unsqueeze(-1)
    v = -sin * d[..., 0] + cos * d[..., 1]
    return (torch.stack([u, v], -1) + 1) / 2 * res


def render_targets(kp: dict[str, torch.Tensor], window: torch.Tensor, res: int, sigma: float, reg_weight: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """StarMap's target maps ``(B, 5, res, res)`` and loss mask for a batch of keypoint sets.

    ``kp`` holds ``xy (B, K, 2)``, ``depth (B, K)``, ``canonical (B, K, 3)``, ``visible (B, K)``: a Gaussian
    per visible keypoint in the heatmap, the canonical coordinates and depth at its pixel.
    """
    B, K = kp["visible"].shape
    pix = to_crop(kp["xy"], window, res).floor().long()
    valid = kp["visible"] & (pix >= 0).all(-1) & (pix < res).all(-1)
    grid = torch.arange(res, dtype=torch.float32)
    gy = torch.exp(-(grid.view(1, 1, res) - pix[..., 1:].float()) ** 2 / (2 * sigma ** 2))  # (B, K, res)
    gx = torch.exp(-(grid.view(1, 1, res) - pix[..., :1].float()) ** 2 / (2 * sigma ** 2))
    heat = (gy.unsqueeze(-1) * gx.unsqueeze(-2) * valid[..., None, None]).amax(1)
    canonical = kp["canonical"].clone()
    canonical[..., 0] *= window[:, 4:5]  # a mirrored crop sees the mirrored object
    values = torch.cat([canonical, (kp["depth"] / window[:, 2:3]).unsqueeze(-1)], -1)  # (B, K, 4)
    target = torch.zeros(B, CHANNELS, res, res)
    mask = torch.zeros(B, CHANNELS, res, res)
    target[:, 0], mask[:, 0] = heat, 1.0
    weight = res * math.sqrt(reg_weight)
    for k in range(K):  # in keypoint order: a later keypoint on the same pixel wins (StarMap's loop)
        b = valid[:, k].nonzero(as_tuple=True)[0]
        y, x = pix[b, k, 1], pix[b, k, 0]
        target[b, 1:, y, x] = values[b, k]
        mask[b, 1:, y, x] = weight
    return target, mask


# --- viewpoint from the maps --------------------------------------------------------------------


def viewpoint_from_maps(maps: torch.Tensor, threshold: float = 0.05, max_peaks: int = 64
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 3)`` (azimuth, elevation, theta) and the peak counts ``(B,)`` from output maps ``(B, 5, R, R)``.

    Peaks: 3x3 maxima of the heatmap above ``threshold`` (the ``max_peaks`` strongest). Each peak's
    canonical point (channels 1-3) is aligned to the peak lifted to ``(col, -row, -depth * R)`` (x right,
    y up, z towards the camera: the camera frame up to scale) by Horn's similarity weighted with the
    peak scores. Fewer than three peaks give NaN angles.
    """
    R = maps.shape[-1]
    heat = maps[:, 0]
    peaks = (heat == F.max_pool2d(heat[:, None], 3, stride=1, padding=1)[:, 0]) & (heat > threshold)
    scores = torch.where(peaks, heat, 0).flatten(1)
    values, index = scores.topk(min(max_peaks, R * R), dim=1)
    rows, cols = (index // R).double(), (index % R).double()
    flat = maps.flatten(2).double()
    canonical = flat[:, 1:4].gather(2, index[:, None].expand(-1, 3, -1)).transpose(1, 2)
    depth = flat[:, 4].gather(1, index)
    lifted = torch.stack([cols, -rows, -depth * R], -1)
    rotation, _, _ = horn_similarity(canonical, lifted, values.double())
    count = (values > 0).sum(1)
    angles = torch.stack(angles_from_rotation(rotation), -1)
    return torch.where((count >= 3)[:, None], angles, torch.nan), count


# --- the predictor ------------------------------------------------------------------------------


@dataclass
class StarMapPredictor(SingleNetwork, BasePredictor):
    """StarMap: stacked hourglass for the StarMap heatmap, canonical-view features and depth; viewpoint
    by Horn's weighted similarity alignment of the lifted peaks (semantic keypoints where the data carry them,
    else farthest-point keypoints of the CAD models)."""

    name = "starmap"
    capabilities = frozenset({Capability.POSE})
    paper = ("Zhou, Karpur, Luo, Huang: StarMap for Category-Agnostic Keypoint and Viewpoint Estimation, "
             "ECCV 2018 (xingyizhou/StarMap, -task starembdep)")
    input_spec: ClassVar[InputSpec] = InputSpec(needs_box=True)

    stacks: int = 2
    features: int = 256
    modules: int = 2
    hourglass_depth: int = 4
    input_size: int = 256
    keypoints: int = 12  # farthest-point keypoints per CAD model, for data without semantic keypoints
    pad_scale: float = 1.5
    sigma: float = 1.0
    reg_weight: float = 0.1
    epochs: int = 90
    batch_size: int = 6
    optimizer: str = "rmsprop"
    lr: float = 2.5e-4
    drop_lr: int = 1_000_000  # StarMap's -dropLR: the learning rate falls tenfold every drop_lr epochs
    aug_scale: float = 0.25
    aug_shift: float = 0.03
    aug_rotate: float = 30.0
    aug_rotate_prob: float = 0.4
    aug_flip: float = 0.5
    peak_threshold: float = 0.05
    flip_test: bool = True
    device: str = field(default="cpu", repr=False)

    arch: ClassVar[tuple[str, ...]] = ("stacks", "features", "modules", "hourglass_depth", "input_size")

    def __post_init__(self) -> None:
        self.keypoint_source: str | None = None  # "semantic" or "farthest-point" once trained
        for key in ("stacks", "features", "modules", "hourglass_depth", "input_size", "keypoints", "epochs",
                    "batch_size", "drop_lr"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r}: must be a positive integer")
        if self.features % 4:
            raise ValueError(f"features={self.features!r}: must be a multiple of 4 (the stem uses features/4)")
        if self.input_size % (4 * 2 ** self.hourglass_depth):
            raise ValueError(f"input_size={self.input_size!r}: must be a multiple of 4 * 2^hourglass_depth "
                             f"= {4 * 2 ** self.hourglass_depth}")
        if self.optimizer not in ("rmsprop", "adam"):
            raise ValueError(f"optimizer={self.optimizer!r}: choose 'rmsprop' (StarMap) or 'adam'")
        self._build()

    @property
    def resolution(self) -> int:
        return self.input_size // 4

    def _build(self) -> None:
        self.net = HourglassNet(self.stacks, self.modules, self.features, self.hourglass_depth).to(self.device)
        self.net.eval()

    def describe(self) -> dict[str, Any]:
        extra = [FARTHEST_POINT_DEVIATION] if self.keypoint_source == "farthest-point" else []
        return {**super().describe(), "keypoints": self.keypoint_source, "deviations": [*DEVIATIONS, *extra]}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "keypoints": self.keypoint_source}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.keypoint_source = state.get("keypoints", "farthest-point")  # older checkpoints had no other

    def _norm(self) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.input_spec
        return torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)

    # training

    def _augment(self, base: torch.Tensor) -> torch.Tensor:
        """StarMap's random scale, vertical shift, rotation and flip of windows ``(B, 5)`` (global torch RNG)."""
        B = base.shape[0]
        window = base.clone()
        window[:, 2] *= 2 ** (torch.randn(B) * self.aug_scale).clamp(-2 * self.aug_scale, 2 * self.aug_scale)
        window[:, 1] += (torch.randn(B) * self.aug_shift).clamp(-2 * self.aug_shift, 2 * self.aug_shift) * base[:, 2]
        rotate = torch.rand(B) < self.aug_rotate_prob
        angle = (torch.randn(B) * self.aug_rotate).clamp(-2 * self.aug_rotate, 2 * self.aug_rotate)
        window[:, 3] = torch.where(rotate, torch.deg2rad(angle), 0.0)
        window[:, 4] = torch.where(torch.rand(B) < self.aug_flip, -1.0, 1.0)
        return window

    def _targets(self, dataset, categories: Sequence[str], ids: Sequence[str], progress: bool
                 ) -> dict[str, tuple[KeypointTargets, tuple[float, float, float]]]:
        """Per sample, its keypoint targets and crop window. Semantic keypoints when the first sample carries
        them (then every sample must), else the farthest-point ones; sets ``keypoint_source``."""
        from tqdm.auto import tqdm

        root = getattr(dataset, "root", None)
        if root is None:
            raise ValueError(f"{getattr(dataset, 'name', dataset)}: StarMap needs a dataset with a root holding CAD/")
        semantic = bool(ids) and dataset.load(ids[0]).keypoints is not None
        if semantic:
            tables = {c: read_cad_keypoints(root, c) for c in categories}
            size = max(len(KEYPOINT_NAMES[c]) for c in categories)
        else:
            tables = {c: load_category_keypoints(root, c, self.keypoints) for c in categories}
        out = {}
        for sample_id in tqdm(ids, desc="starmap keypoints", unit="img", disable=not progress):
            s = dataset.load(sample_id)
            if (s.keypoints is not None) != semantic:
                raise DataError(f"sample {s.id}: {'no' if semantic else 'has'} semantic keypoints, unlike {ids[0]}; "
                                "StarMap trains on one kind")
            if s.cad_index not in tables[s.category]:
                where = f"CAD/{s.category}.mat" if semantic else f"CAD/{s.category}/NN.off"
                raise DataError(f"sample {s.id}: cad_index {s.cad_index} has no model in {where}")
            if semantic:
                targets = semantic_targets(s, tables[s.category][s.cad_index], size)
            else:
                kp, mesh = tables[s.category][s.cad_index]
                targets = keypoint_targets(s, kp, mesh)
            out[sample_id] = (targets, crop_window(s, s.load_image().shape[:2], self.pad_scale))
        self.keypoint_source = "semantic" if semantic else "farthest-point"
        return out

    def fit(self, dataset, *, categories: Sequence[str], resume: Resume | None = None, device: str | None = None,
            seed: int = 0, progress: bool = True) -> None:
        from ntdmbench.baselines.sgd_loop import train_epochs

        self.device = device or self.device
        groups = ids_by_category(dataset, categories)
        ids = [i for c in categories for i in groups[c]]
        targets = self._targets(dataset, categories, ids, progress)
        torch.manual_seed(seed)  # initial weights follow the seed
        self._build()
        mean, std = self._norm()
        res = self.resolution

        def step(samples: list[Sample]) -> torch.Tensor:
            kps = [targets[s.id][0] for s in samples]
            base = torch.tensor([(*targets[s.id][1], 0.0, 1.0) for s in samples], dtype=torch.float32)
            window = self._augment(base)
            images = torch.stack([crop_image(s.load_image(), w, self.input_size, mean, std)
                                  for s, w in zip(samples, window)])
            kp = {"xy": torch.tensor(np.stack([k.xy for k in kps]), dtype=torch.float32),
                  "depth": torch.tensor(np.stack([k.depth for k in kps]), dtype=torch.float32),
                  "canonical": torch.tensor(np.stack([k.canonical for k in kps]), dtype=torch.float32),
                  "visible": torch.tensor(np.stack([k.visible for k in kps]))}
            target, mask = render_targets(kp, window, res, self.sigma, self.reg_weight)
            target, mask = target.to(self.device), mask.to(self.device)
            outputs = self.net(images.to(self.device))
            return sum(F.mse_loss(out * mask, target * mask) for out in outputs)

        params = self.net.parameters()
        optimizer = (torch.optim.RMSprop(params, lr=self.lr, alpha=0.99, eps=1e-8) if self.optimizer == "rmsprop"
                     else torch.optim.Adam(params, lr=self.lr))
        train_epochs(self.net, optimizer, dataset=dataset, ids=ids, epochs=self.epochs, batch_size=self.batch_size,
                     lr_factor=lambda epoch, _it: 0.1 ** (epoch // self.drop_lr), step=step, seed=seed, resume=resume,
                     settings=self.config(), progress=progress, desc=self.name)
        self.net.eval()

    # inference

    @torch.no_grad()
    def maps(self, batch: Sequence[Sample]) -> torch.Tensor:
        """The last stack's output maps ``(B, 5, R, R)`` for samples, flip-averaged if ``flip_test``."""
        mean, std = self._norm()
        images = []
        for s in batch:
            image = s.load_image()
            window = torch.tensor([*crop_window(s, image.shape[:2], self.pad_scale), 0.0, 1.0])
            images.append(crop_image(image, window, self.input_size, mean, std))
        x = torch.stack(images).to(self.device)
        self.net.eval()
        out = self.net(x)[-1]
        if self.flip_test:
            flipped = self.net(x.flip(-1))[-1].flip(-1)
            flipped[:, 1] = -flipped[:, 1]
            out = (out + flipped) / 2
        return out.cpu()

    def predict(self, batch: Sequence[Sample]) -> list[Prediction]:
        angles, counts = viewpoint_from_maps(self.maps(batch), self.peak_threshold)
        return [Prediction(id=s.id, azimuth=a, elevation=e, theta=t, distance=math.nan, extra={"peaks": int(n)})
                for s, (a, e, t), n in zip(batch, angles.tolist(), counts.tolist())]
