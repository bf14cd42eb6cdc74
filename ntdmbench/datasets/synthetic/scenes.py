"""One synthetic image: a CAD model with per-part materials, shaded and rendered with the project's
rasteriser over a background, with distractor objects behind it and occluders in front of it.

Occluders follow Occluded PASCAL3D+: cut-outs (renders of objects of other categories, and patches
of natural textures) pasted at a common scale found by bisection so that they cover a band of the
object (FGL) and, with more cut-outs centred off the object, a band of the background (BGL).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from ntdmbench.datasets.records import Pose
from ntdmbench.datasets.synthetic.cad import CadModel
from ntdmbench.datasets.synthetic.textures import OCCLUDER_TEXTURES, Appearance, occluder_texture
from ntdmbench.models.camera import Camera, camera_position
from ntdmbench.models.render import rasterize


@dataclass
class Rendered:
    image: np.ndarray  # (H, W, 3) float in [0, 1]
    alpha: np.ndarray  # (H, W) float coverage in [0, 1]
    keypoints: np.ndarray  # (K, 2) image pixels of the model's keypoints (x right, y down)
    keypoints_visible: np.ndarray  # (K,) bool: inside the image and not hidden by the object itself

    @property
    def amodal(self) -> np.ndarray:
        return self.alpha >= 0.5


def render_object(model: CadModel, look: Appearance, pose: Pose, size: tuple[int, int], background: np.ndarray,
                  light: np.ndarray, supersample: int = 2, tolerance: float = 0.02) -> Rendered:
    """Lambert-shaded part materials (lights unshaded), antialiased by rendering ``supersample`` times larger.

    A keypoint is visible when it projects into the image and lies within ``tolerance`` CAD units of
    the front surface there (PASCAL3D+ annotators mark the keypoints they can see)."""
    h, w = size
    s = supersample
    mesh = model.mesh
    camera = Camera.create(pose.azimuth, pose.elevation, pose.theta, pose.distance,
                           torch.tensor(pose.principal, dtype=torch.float64) * s, pose.focal, pose.viewport * s)
    verts = torch.as_tensor(mesh.vertices, dtype=torch.float64)
    faces = torch.as_tensor(mesh.faces, dtype=torch.int64)
    with torch.no_grad():
        # one fixed backend: the files must not depend on whether PyTorch3D is installed
        frags = rasterize(verts.float(), faces, camera.to(torch.float32), (h * s, w * s), backend="torch")
    pix_to_face = frags.pix_to_face[0].numpy()
    covered = pix_to_face >= 0
    face_ids = pix_to_face[covered]
    tri = mesh.vertices[mesh.faces[face_ids]]  # (N, 3, 3)
    points = np.einsum("nk,nkd->nd", frags.bary[0].numpy()[covered].astype(np.float64), tri)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    eye = camera_position(pose.azimuth, pose.elevation, pose.distance).reshape(3).numpy()
    normals *= np.sign(np.einsum("nd,nd->n", normals, eye - points))[:, None]  # two-sided shading
    parts = model.face_parts[face_ids]
    shade = np.where(look.emissive[parts], 1.0, 0.35 + 0.65 * np.clip(normals @ light, 0, None))
    albedo = np.zeros((len(points), 3))
    for k, material in enumerate(look.materials):
        on = parts == k
        if on.any():
            albedo[on] = material(points[on])
    colour = np.zeros((h * s, w * s, 3))
    colour[covered] = np.clip(albedo * shade[:, None], 0, 1)
    alpha = covered.reshape(h, s, w, s).mean(axis=(1, 3))
    colour = colour.reshape(h, s, w, s, 3).sum(axis=(1, 3)) / np.maximum(alpha * s * s, 1)[..., None]
    image = alpha[..., None] * colour + (1 - alpha[..., None]) * background
    screen = camera.transform(torch.as_tensor(model.keypoints, dtype=torch.float32))[0].numpy().astype(np.float64)
    col, row = np.floor(screen[:, 0]).astype(int), np.floor(screen[:, 1]).astype(int)
    inside = (col >= 0) & (col < w * s) & (row >= 0) & (row < h * s)
    c, r = col.clip(0, w * s - 1), row.clip(0, h * s - 1)
    depth = frags.depth[0].numpy()[r, c]
    visible = inside & (~covered[r, c] | (screen[:, 2] <= depth + tolerance))
    return Rendered(image, alpha, screen[:, :2] / s, visible)


def random_light(rng: np.random.Generator) -> np.ndarray:
    """A unit light direction from the upper hemisphere (CAD frame, z up)."""
    v = np.array([rng.normal(), rng.normal(), abs(rng.normal()) + 0.5])
    return v / np.linalg.norm(v)


# --- cut-outs: occluders and distractors -----------------------------------------------------------


@dataclass
class Cutout:
    """An RGBA picture pasted into a scene: ``rgb`` (h, w, 3) and ``alpha`` (h, w) floats in [0, 1]."""

    rgb: np.ndarray
    alpha: np.ndarray

    def paste(self, image: np.ndarray | None, mask: np.ndarray | None, centre: tuple[float, float],
              scale: float) -> None:
        """Alpha-blend into ``image`` in place, ``scale`` times the cut-out's size, centred at (x, y);
        ``mask`` gains the pixels the cut-out covers by at least half. Either may be None."""
        h0, w0 = self.alpha.shape
        w, h = max(1, round(w0 * scale)), max(1, round(h0 * scale))
        rgba = np.dstack([self.rgb, self.alpha])
        resized = np.asarray(Image.fromarray(np.uint8(np.round(rgba * 255)), "RGBA").resize((w, h), Image.BILINEAR),
                             dtype=np.float64) / 255
        x0, y0 = round(centre[0] - w / 2), round(centre[1] - h / 2)
        H, W = (image if image is not None else mask).shape[:2]
        ys, xs = slice(max(y0, 0), min(y0 + h, H)), slice(max(x0, 0), min(x0 + w, W))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            return
        patch = resized[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        if image is not None:
            a = patch[..., 3:]
            image[ys, xs] = a * patch[..., :3] + (1 - a) * image[ys, xs]
        if mask is not None:
            mask[ys, xs] |= patch[..., 3] >= 0.5


def texture_cutout(rng: np.random.Generator, size: int = 64) -> Cutout:
    """A patch of a natural texture with a rectangle, ellipse or irregular outline, shaded as if curved."""
    kind = rng.integers(3)
    t = np.linspace(0, 2 * np.pi, 4 if kind == 0 else 24, endpoint=False) + (np.pi / 4 if kind == 0 else 0)
    aspect = rng.uniform(0.35, 1.0)
    radius = np.ones_like(t) if kind < 2 else rng.uniform(0.55, 1.0, t.size)
    pts = np.stack([np.cos(t) * radius, np.sin(t) * radius * aspect], axis=1)
    a = rng.uniform(0, np.pi)
    pts = pts @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in (pts * 0.5 + 0.5) * (size - 1)], fill=255)
    alpha = np.asarray(canvas, dtype=np.float64) / 255
    rgb = occluder_texture(str(rng.choice(OCCLUDER_TEXTURES)), rng, (size, size))
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    d = rng.normal(size=2)
    rgb = np.clip(rgb * (0.85 + 0.5 * (xx * d[0] + yy * d[1]))[..., None], 0, 1)
    return Cutout(rgb, alpha)


def object_cutout(rendered: Rendered) -> Cutout:
    """A rendered object cropped to its silhouette."""
    ys, xs = np.nonzero(rendered.alpha > 0.02)
    box = slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)
    return Cutout(rendered.image[box], rendered.alpha[box])


def _coverage(cutouts: list[tuple[Cutout, tuple[float, float]]], shape: tuple[int, int], scale: float) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for cutout, centre in cutouts:
        cutout.paste(None, mask, centre, scale)
    return mask


def _bisect_scale(cutouts, shape, fraction, band, target, lo=0.0, hi=8.0, iters: int = 30):
    """The common scale at which ``fraction(mask)`` lands in ``band`` (coverage grows with scale)."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        mask = _coverage(cutouts, shape, mid)
        value = fraction(mask)
        if band[0] < value < band[1]:
            return mid, mask
        lo, hi = (mid, hi) if value < target else (lo, mid)
    return None, None


@dataclass
class Occlusion:
    mask: np.ndarray  # (H, W) bool: occluder pixels
    image: np.ndarray  # the occluded image
    foreground: float  # occluded fraction of the object
    background: float  # occluded fraction of the rest of the image


def occlude(image: np.ndarray, amodal: np.ndarray, fg_band: tuple[float, float], bg_band: tuple[float, float],
            pool: list[Cutout], rng: np.random.Generator, max_tries: int = 20) -> Occlusion:
    """Paste cut-outs from ``pool`` over the object until it is covered inside ``fg_band`` and the
    background inside ``bg_band`` (Occluded PASCAL3D+'s FGLk_BGLk). When the background band cannot be
    met together with the foreground band (tight crops), the foreground band wins and the achieved
    background fraction is returned."""
    h, w = amodal.shape
    ys, xs = np.nonzero(amodal)
    bys, bxs = np.nonzero(~amodal)
    n_bg = max(int((~amodal).sum()), 1)
    fg = lambda m: (m & amodal).sum() / amodal.sum()  # noqa: E731
    bg = lambda m: (m & ~amodal).sum() / n_bg  # noqa: E731
    best = None
    for _ in range(max_tries):
        picks = [pool[i] for i in rng.integers(len(pool), size=int(rng.integers(1, 4)))]
        front = [(c, (xs[k], ys[k])) for c, k in zip(picks, rng.integers(ys.size, size=len(picks)))]
        norm = max(h, w) / 64  # the scale at which a 64 px cut-out spans the image's longer side
        scale, mask = _bisect_scale(front, (h, w), fg, fg_band, rng.uniform(fg_band[0] + 0.03, fg_band[1] - 0.03),
                                    hi=4.0 * norm)
        if scale is None:
            continue
        placed = [(c, p, scale) for c, p in front]
        if bg(mask) < bg_band[0] and bys.size:
            extra = [pool[i] for i in rng.integers(len(pool), size=int(rng.integers(1, 4)))]
            back = [(c, (bxs[k], bys[k])) for c, k in zip(extra, rng.integers(bys.size, size=len(extra)))]

            def both(m, base=mask):
                m = m | base
                return bg(m) if fg_band[0] < fg(m) < fg_band[1] else np.inf

            target = rng.uniform(bg_band[0] + 0.02, bg_band[1] - 0.02)
            s2, mask2 = _bisect_scale(back, (h, w), both, bg_band, target, hi=4.0 * norm)
            if s2 is not None:
                placed += [(c, p, s2) for c, p in back]
                mask = mask | mask2
        candidate = (placed, mask)
        if bg_band[0] <= bg(mask) <= bg_band[1]:
            best = candidate
            break
        if best is None or abs(bg(mask) - sum(bg_band) / 2) < abs(bg(best[1]) - sum(bg_band) / 2):
            best = candidate
    if best is None:
        raise RuntimeError(f"could not fit occluders into band {fg_band}")
    placed, mask = best
    out = image.copy()
    for cutout, centre, scale in placed:
        cutout.paste(out, None, centre, scale)
    return Occlusion(mask, out, float(fg(mask)), float(bg(mask)))
