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
from ntdmbench.models.render_compare import clutter_score, compare_loss
from ntdmbench.ntdm.deformable import fit_deformable
from ntdmbench.ntdm.inference import (
    CategoryModel,
    InferenceSettings,
    fit_category,
    initial_latents,
    masks,
    project_simplex,
    search_starts,
)
from ntdmbench.ntdm.textures import NeuralTexture, bin_rotations

GT = (0.9, 0.35, 0.15)  # azimuth, elevation, theta: between the grid's starting poses
SIZE = (18, 24)  # feature map
FOCAL = 3000 / 8 * 1.5


def smooth_texture(q: int = 64, d: int = 32, seed: int = 0) -> NeuralTexture:
    """Unit features varying smoothly but distinctly over the sphere (random Fourier features of the point)."""
    rows, cols = torch.meshgrid(torch.arange(q), torch.arange(q), indexing="ij")
    polar, azimuth = (rows + 0.5) / q * math.pi, (cols + 0.5) / q * 2 * math.pi
    p = torch.stack([polar.sin() * azimuth.cos(), polar.sin() * azimuth.sin(), polar.cos()], -1)
    proj = p @ (torch.randn(3, d // 2, generator=torch.Generator().manual_seed(seed)) * 4)
    texture = NeuralTexture(7, d, q)
    texture.maps.copy_(F.normalize(torch.cat([proj.sin(), proj.cos()], -1), dim=-1).permute(2, 0, 1).expand(7, -1, -1, -1))
    return texture


@pytest.fixture(scope="module")
def model() -> CategoryModel:
    cads = [box((0, 0, 0), (0.3, 0.8, 0.3)), box((0, 0, 0), (0.5, 0.5, 0.2)), box((0, 0, 0), (0.2, 0.4, 0.6))]
    mesh = fit_deformable(cads, template_level=3, hidden=64, iters=20, lr=2e-2, surface_points=200)
    return CategoryModel(mesh, smooth_texture(), bin_rotations(7), 5.0)


def render_target(model: CategoryModel, shapes: list[int]) -> tuple[torch.Tensor, Camera]:
    camera = Camera.create(*GT, 5.0, (SIZE[1] / 2, SIZE[0] / 2), 1.0, FOCAL).to(torch.float32)
    camera = Camera(*(getattr(camera, f).expand(len(shapes), *getattr(camera, f).shape[1:]) for f in camera.__dataclass_fields__))
    with torch.no_grad():
        target, _ = model.render(model.mesh(model.mesh.one_hot(torch.tensor(shapes))), camera, SIZE)
    return target, camera


def test_inference_recovers_pose_and_latent_of_a_self_rendered_target(model):
    shapes = [0, 1]  # two images, batched
    target, camera = render_target(model, shapes)
    clutter = F.normalize(torch.ones(target.shape[1]), dim=0)
    features = torch.where(target.norm(dim=1, keepdim=True) > 0, target, clutter[:, None, None])
    clut = clutter_score(features, clutter)
    valid = torch.ones(2, *SIZE, dtype=torch.bool)
    settings = InferenceSettings(n_theta=1, steps=150)  # 48 starts x 3 one-hot latents
    fit = fit_category(model, features, clut, valid, camera.principal, camera.focal_px, settings)
    error = pose_error(torch.stack([fit.azimuth, fit.elevation, fit.theta], 1).numpy(), np.array([GT, GT]))
    assert np.degrees(error).max() < 5
    assert fit.latent.argmax(1).tolist() == shapes
    assert (fit.loss < fit.start_loss).all()
    # the amodal mask is the silhouette of the fitted mesh, close to the target's
    amodal, visible, _ = masks(model, fit, features, clut, camera.principal, camera.focal_px, 8, [(144, 192)] * 2)
    truth = rasterize(model.mesh(model.mesh.one_hot(torch.tensor(shapes))), model.mesh.faces, camera.downsample(1 / 8),
                      (144, 192)).silhouette
    for i in range(2):
        iou = (amodal[i] & truth[i]).sum() / (amodal[i] | truth[i]).sum()
        assert iou > 0.9 and (visible[i] <= amodal[i]).all() and visible[i].sum() > 0.5 * amodal[i].sum()


def test_latent_initialisations(model):
    assert torch.equal(initial_latents(model.mesh, InferenceSettings()), torch.eye(3))
    torch.testing.assert_close(initial_latents(model.mesh, InferenceSettings(latent_init="average")), torch.full((1, 3), 1 / 3))
    torch.testing.assert_close(initial_latents(model.mesh, InferenceSettings(fix_shape=True)), torch.full((1, 3), 1 / 3))
    random = initial_latents(model.mesh, InferenceSettings(latent_init="random", seed=3))
    assert random.shape == (1, 3) and float(random.sum()) == pytest.approx(1) and not torch.allclose(random, torch.full((1, 3), 1 / 3))
    with pytest.raises(ValueError, match="latent_init"):
        InferenceSettings(latent_init="zeros")


def test_fix_shape_keeps_the_average_latent(model):
    target, camera = render_target(model, [0])
    valid = torch.ones(1, *SIZE, dtype=torch.bool)
    fit = fit_category(model, target, None, valid, camera.principal, camera.focal_px,
                       InferenceSettings(steps=5, n_azimuth=4, n_elevation=1, n_theta=1, fix_shape=True))
    torch.testing.assert_close(fit.latent, torch.full((1, 3), 1 / 3))


def test_start_search_joint_and_staged(model):
    target, camera = render_target(model, [2, 0])
    valid = torch.ones(2, *SIZE, dtype=torch.bool)
    found = {}
    for mode in ("joint", "staged"):
        settings = InferenceSettings(n_azimuth=8, n_elevation=2, n_theta=1, start_search=mode)
        angles, latents, loss = search_starts(model, target, None, valid, camera.principal, camera.focal_px, settings)
        assert ((latents == 0) | (latents == 1)).all() and (latents.sum(1) == 1).all()  # one-hot starts
        start = Camera(angles[:, 0], angles[:, 1], angles[:, 2], torch.full((2,), 5.0), camera.principal, camera.focal_px)
        with torch.no_grad():
            rendered, _ = model.render(model.mesh(latents), start, SIZE)
        torch.testing.assert_close(compare_loss(rendered, target, None, valid), loss)  # the loss of that start
        found[mode] = loss
    assert (found["joint"] <= found["staged"] + 1e-6).all()  # joint searches every pair staged might pick


def test_project_simplex():
    z = torch.tensor([[1.2, -0.3, 0.5], [0.2, 0.3, 0.5], [-1.0, 2.0, 3.0]])
    p = project_simplex(z)
    torch.testing.assert_close(p, torch.tensor([[0.85, 0.0, 0.15], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]]))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=gen)
    q = project_simplex(x)
    assert (q >= 0).all() and torch.allclose(q.sum(1), torch.ones(50))
    # the projection is the nearest simplex point: no random simplex point is nearer
    others = torch.distributions.Dirichlet(torch.ones(4)).sample((200,))
    assert ((x[:, None] - others[None]).norm(dim=-1) >= (x - q).norm(dim=-1)[:, None] - 1e-6).all()
