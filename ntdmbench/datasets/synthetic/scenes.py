"""One synthetic image: a textured, shaded CAD model rendered with the project's rasteriser over a
background, and occluders fitted to an occlusion band."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from ntdmbench.datasets.records import Pose
from ntdmbench.datasets.synthetic.textures import Material, occluder_fill
from ntdmbench.models.camera import Camera, camera_position
from ntdmbench.models.meshes import Mesh
from ntdmbench.models.render import rasterize


@dataclass
class Rendered:
    image: np.ndarray  # (H, W, 3) float in [0, 1]
    amodal: np.ndarray  # (H, W) bool


def render_object(mesh: Mesh, pose: Pose, size: tuple[int, int], surface: Material, background: np.ndarray,
                  light: np.ndarray, supersample: int = 2) -> Rendered:
    """Lambert-shaded solid texture, antialiased by rendering ``supersample`` times larger."""
    h, w = size
    s = supersample
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
    shade = 0.35 + 0.65 * np.clip(normals @ light, 0, None)
    colour = np.zeros((h * s, w * s, 3))
    colour[covered] = np.clip(surface(points) * shade[:, None], 0, 1)
    alpha = covered.reshape(h, s, w, s).mean(axis=(1, 3))
    colour = colour.reshape(h, s, w, s, 3).sum(axis=(1, 3)) / np.maximum(alpha * s * s, 1)[..., None]
    image = alpha[..., None] * colour + (1 - alpha[..., None]) * background
    return Rendered(image, alpha >= 0.5)


def random_light(rng: np.random.Generator) -> np.ndarray:
    """A unit light direction from the upper hemisphere (CAD frame, z up)."""
    v = np.array([rng.normal(), rng.normal(), abs(rng.normal()) + 0.5])
    return v / np.linalg.norm(v)


def _shape_polygon(rng: np.random.Generator) -> np.ndarray:
    """A unit-sized occluder outline: a rotated rectangle, an ellipse or an irregular blob."""
    kind = rng.integers(3)
    t = np.linspace(0, 2 * np.pi, 4 if kind == 0 else 24, endpoint=False) + (np.pi / 4 if kind == 0 else 0)
    aspect = rng.uniform(0.35, 1.0)
    radius = np.ones_like(t) if kind < 2 else rng.uniform(0.55, 1.0, t.size)
    pts = np.stack([np.cos(t) * radius, np.sin(t) * radius * aspect], axis=1)
    a = rng.uniform(0, np.pi)
    return pts @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T


def fit_occluders(amodal: np.ndarray, band: tuple[float, float], rng: np.random.Generator,
                  max_tries: int = 20) -> np.ndarray:
    """An occluder mask covering a fraction of ``amodal`` inside ``band`` (as Occluded PASCAL3D+'s FGL levels).

    One to three shapes are placed on the object and scaled together; the covered fraction grows
    monotonically with the scale, so a bisection finds a scale inside the band.
    """
    h, w = amodal.shape
    area = amodal.sum()
    ys, xs = np.nonzero(amodal)
    target = rng.uniform(band[0] + 0.03, band[1] - 0.03)
    for _ in range(max_tries):
        shapes = []
        for _ in range(int(rng.integers(1, 4))):
            k = rng.integers(ys.size)
            shapes.append((np.array([xs[k], ys[k]], dtype=float), _shape_polygon(rng)))

        def mask_at(scale: float) -> np.ndarray:
            canvas = Image.new("L", (w, h), 0)
            draw = ImageDraw.Draw(canvas)
            for centre, outline in shapes:
                draw.polygon([tuple(p) for p in centre + outline * scale], fill=1)
            return np.asarray(canvas, dtype=bool)

        lo, hi = 0.0, float(max(h, w)) * 2
        for _ in range(30):
            mid = (lo + hi) / 2
            occ = mask_at(mid)
            frac = (occ & amodal).sum() / area
            if band[0] < frac < band[1]:
                return occ
            lo, hi = (mid, hi) if frac < target else (lo, mid)
    raise RuntimeError(f"could not fit occluders into band {band}")


def paint_occluders(image: np.ndarray, occluder: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    fill = occluder_fill(rng, occluder.shape)
    return np.where(occluder[..., None], fill, image)
