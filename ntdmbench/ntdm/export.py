"""NTDM's interpretable outputs (paper fig. 5): the fitted deformable mesh as a coloured ``.obj`` whose
vertices are visible, occluded or invisible, and the predicted mesh rendered over the input image.

A vertex is *invisible* when the camera cannot see it (self-occluded, or outside the crop: the
z-buffer test of ``contrastive.project_visible``); a seen vertex is *visible* when its pixel is in
the FG (visible) mask and *occluded* when the fit says something else covers it. The overlay shades
the mesh by its normals, tints FG pixels green and occluded ones red, and outlines the silhouette.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ntdmbench.datasets.records import Sample
from ntdmbench.models.camera import Camera, camera_position
from ntdmbench.models.contrastive import project_visible
from ntdmbench.models.meshes import Mesh, vertex_normals, write_obj
from ntdmbench.models.render import interpolate, rasterize

INVISIBLE, VISIBLE, OCCLUDED = 0, 1, 2
COLOURS = np.array([[0.6, 0.6, 0.6], [0.1, 0.8, 0.2], [0.9, 0.15, 0.1]])
"""grey: invisible, green: visible, red: occluded (per label)."""


def vertex_labels(vertices: torch.Tensor, faces: torch.Tensor, camera: Camera, visible_mask: np.ndarray) -> np.ndarray:
    """``(V,)`` labels INVISIBLE / VISIBLE / OCCLUDED of one mesh's vertices ``(V, 3)`` under one camera."""
    H, W = visible_mask.shape
    xy, seen = project_visible(vertices, faces, camera, (H, W))
    xy, seen = xy[0].cpu().numpy(), seen[0].cpu().numpy()
    col = np.clip(np.floor(xy[:, 0]).astype(int), 0, W - 1)
    row = np.clip(np.floor(xy[:, 1]).astype(int), 0, H - 1)
    fg = np.asarray(visible_mask, dtype=bool)[row, col]
    return np.where(seen, np.where(fg, VISIBLE, OCCLUDED), INVISIBLE)


def write_coloured_obj(path: str | Path, vertices: torch.Tensor, faces: torch.Tensor, labels: np.ndarray) -> None:
    write_obj(path, Mesh(vertices.detach().cpu().double().numpy(), faces.cpu().numpy()), COLOURS[labels])


def overlay(image: np.ndarray, vertices: torch.Tensor, faces: torch.Tensor, camera: Camera,
            visible_mask: np.ndarray, opacity: float = 0.55) -> np.ndarray:
    """``(H, W, 3)`` uint8: the mesh rendered under ``camera`` (normal shading, green FG / red occluded)
    blended over the image, with a white silhouette outline."""
    H, W = image.shape[:2]
    vertices = vertices.detach().float()
    frags = rasterize(vertices, faces, camera.to(torch.float32), (H, W))
    normals = vertex_normals(vertices, faces)
    surface = interpolate(frags, faces, torch.cat([normals, vertices], -1))[0].permute(1, 2, 0)
    centre = camera_position(camera.azimuth, camera.elevation, camera.distance).float()[0]
    to_camera = torch.nn.functional.normalize(centre - surface[..., 3:], dim=-1)
    shade = (torch.nn.functional.normalize(surface[..., :3], dim=-1) * to_camera).sum(-1).abs()
    shade = (0.35 + 0.65 * shade).cpu().numpy()[..., None]
    sil = frags.silhouette[0].cpu().numpy()
    fg = sil & np.asarray(visible_mask, dtype=bool)
    tint = np.where(fg[..., None], COLOURS[VISIBLE], COLOURS[OCCLUDED])
    out = image.astype(np.float64) / 255
    out = np.where(sil[..., None], (1 - opacity) * out + opacity * shade * tint, out)
    edge = sil & ~(np.roll(sil, 1, 0) & np.roll(sil, -1, 0) & np.roll(sil, 1, 1) & np.roll(sil, -1, 1))
    out[edge] = 1.0
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def export_prediction(directory: Path, sample: Sample, vertices: torch.Tensor, faces: torch.Tensor, camera: Camera,
                      visible_mask: np.ndarray) -> tuple[Path, Path]:
    """Write ``{directory}/{sample id}.obj`` (coloured mesh in the CAD frame) and ``.png`` (overlay)."""
    from PIL import Image

    stem = directory / sample.id.replace("/", "__")
    stem.parent.mkdir(parents=True, exist_ok=True)
    obj, png = stem.with_suffix(".obj"), stem.with_suffix(".png")
    write_coloured_obj(obj, vertices, faces, vertex_labels(vertices, faces, camera, visible_mask))
    Image.fromarray(overlay(sample.load_image(), vertices, faces, camera, visible_mask)).save(png)
    return obj, png
