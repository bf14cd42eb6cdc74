"""NTDM inference on a target rendered from the model itself: pose, latent and masks come back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ntdmbench.benchmark.metrics import pose_error
from ntdmbench.datasets.synthetic.cad import box
from ntdmbench.models.camera import Camera
from ntdmbench.models.render import rasterize
from ntdmbench.models.render_compare import clutter_score
from ntdmbench.ntdm.deformable import fit_deformable
from ntdmbench.ntdm.inference import (
    CategoryModel,
    InferenceSettings,
    fit_category,
    initial_latents,
    masks,
)
from ntdmbench.ntdm.textures import NeuralTexture, bin_rotations

GT = (0.9, 0.35, 0.15)  # azimuth, elevation, theta: between the grid's starting poses
SIZE = (12, 16)  # feature map
FOCAL = 3000 / 8


def smooth_texture(q: int = 64, d: int = 32, seed: int = 0) -> NeuralTexture:
    """Unit features varying smoothly but distinctly over the sphere (random Fourier features of the point)."""
    rows, cols = torch.meshgrid(torch.arange(q), torch.arange(q), indexing="ij")
    polar, azimuth = (rows + 0.5) / q * math.pi, (cols + 0.5) / q * 2 * math.pi
    p = torch.stack([polar.sin() * azimuth.cos(), polar.sin() * azimuth.sin(), polar.cos()], -1)
    proj = p @ (torch.randn(3, d // 2, generator=torch.Generator().manual_seed(seed)) * 2)
    texture = NeuralTexture(7, d, q)
    texture.maps.copy_(F.normalize(torch.cat([proj.sin(), proj.cos()], -1), dim=-1)[:, :, None].expand(-1, -1, 7, -1))
    return texture


@pytest.fixture(scope="module")
def model() -> CategoryModel:
    cads = [box((0, 0, 0), (0.3, 0.8, 0.3)), box((0, 0, 0), (0.5, 0.5, 0.2)), box((0, 0, 0), (0.2, 0.4, 0.6))]
    mesh = fit_deformable(cads, template_level=3, hidden=64, iters=60, lr=1e-2, surface_points=300)
    return CategoryModel(mesh, smooth_texture(), bin_rotations(7), 5.0)


def render_target(model: CategoryModel, k: int) -> tuple[torch.Tensor, Camera]:
    camera = Camera.create(*GT, 5.0, (SIZE[1] / 2, SIZE[0] / 2), 1.0, FOCAL).to(torch.float32)
    with torch.no_grad():
        target, _ = model.render(model.mesh(model.mesh.one_hot(k)), camera, SIZE)
    return target, camera


def test_inference_recovers_pose_and_latent_of_a_self_rendered_target(model):
    k = 2
    target, camera = render_target(model, k)
    clutter = F.normalize(torch.ones(target.shape[1]), dim=0)
    features = torch.where(target.norm(dim=1, keepdim=True) > 0, target, clutter[:, None, None])
    clut = clutter_score(features, clutter)
    valid = torch.ones(1, *SIZE, dtype=torch.bool)
    settings = InferenceSettings(steps=150)
    fit = fit_category(model, features, clut, valid, camera.principal, camera.focal_px, settings)
    error = pose_error(np.array([[float(fit.azimuth), float(fit.elevation), float(fit.theta)]]), np.array([GT]))
    assert math.degrees(error[0]) < 5
    assert int(fit.latent.argmax()) == k
    assert float(fit.loss) < float(fit.start_loss)
    # the amodal mask is the silhouette of the fitted mesh, close to the target's
    amodal, visible, _ = masks(model, fit, features, clut, camera.principal, camera.focal_px, 8, [(96, 128)])
    truth = rasterize(model.mesh(model.mesh.one_hot(k)), model.mesh.faces, camera.downsample(1 / 8), (96, 128))
    iou = (amodal[0] & truth.silhouette[0]).sum() / (amodal[0] | truth.silhouette[0]).sum()
    assert iou > 0.85 and (visible[0] <= amodal[0]).all()


def test_latent_initialisations(model):
    assert torch.equal(initial_latents(model.mesh, InferenceSettings()), torch.eye(3))
    torch.testing.assert_close(initial_latents(model.mesh, InferenceSettings(latent_init="average")), torch.full((1, 3), 1 / 3))
    torch.testing.assert_close(initial_latents(model.mesh, InferenceSettings(fix_shape=True)), torch.full((1, 3), 1 / 3))
    random = initial_latents(model.mesh, InferenceSettings(latent_init="random", seed=3))
    assert random.shape == (1, 3) and float(random.sum()) == pytest.approx(1) and not torch.allclose(random, torch.full((1, 3), 1 / 3))
    with pytest.raises(ValueError, match="latent_init"):
        InferenceSettings(latent_init="zeros")


def test_fix_shape_keeps_the_average_latent(model):
    target, camera = render_target(model, 0)
    valid = torch.ones(1, *SIZE, dtype=torch.bool)
    fit = fit_category(model, target, None, valid, camera.principal, camera.focal_px,
                       InferenceSettings(steps=5, n_azimuth=4, n_elevation=1, n_theta=1, fix_shape=True))
    torch.testing.assert_close(fit.latent, torch.full((1, 3), 1 / 3))
