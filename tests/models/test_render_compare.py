"""Render-and-compare helpers: the pose grid, NeMo's losses, best-start selection, the optimiser schedule
and pose refinement on a rendered cuboid."""

import math

import numpy as np
import pytest
import torch

from ntdmbench.benchmark.metrics import pose_error
from ntdmbench.models import render_compare as rc
from ntdmbench.models.camera import Camera
from ntdmbench.models.meshes import cuboid
from ntdmbench.models.render import interpolate, rasterize


def test_initial_poses_grid_is_nemos_144():
    poses = rc.initial_poses()
    assert poses.shape == (144, 3)
    deg = np.degrees(poses.double().numpy())
    assert np.allclose(np.unique(deg[:, 0].round(6)), np.arange(0, 360, 30))
    assert np.allclose(np.unique(deg[:, 1].round(6)), [-30, 0, 30, 60])
    assert np.allclose(np.unique(deg[:, 2].round(6)), [-30, 0, 30])
    assert np.allclose(deg[:3, 2], [-30, 0, 30]) and np.allclose(deg[:12, 0], 0)  # azimuth varies slowest


def test_initial_poses_counts_are_configurable():
    poses = rc.initial_poses(8, 1, 1)
    assert poses.shape == (8, 3)
    assert torch.allclose(poses[:, 1], torch.tensor(math.pi / 12))  # middle of [-30, 60] degrees
    assert torch.allclose(poses[:, 2], torch.tensor(0.0))
    with pytest.raises(ValueError, match="got 0"):
        rc.initial_poses(0)


def test_losses_match_hand_computation():
    obj = torch.tensor([[[0.9, 0.0], [0.2, 0.5]]])
    clut = torch.tensor([[[0.1, 0.3], [0.4, 0.1]]])
    expected = 1 - (np.mean([0.9, 0.3, 0.4, 0.5]) - np.mean([0.1, 0.3, 0.4, 0.1]))
    assert rc.loss_fg_bg(obj, clut).item() == pytest.approx(expected)
    assert rc.loss_fg_only(obj).item() == pytest.approx(1 - 0.4)
    valid = torch.tensor([[[True, False], [True, False]]])
    assert rc.loss_fg_bg(obj, clut, valid).item() == pytest.approx(1 - (np.mean([0.9, 0.4]) - np.mean([0.1, 0.4])))


def test_clutter_score_is_dot_with_normalised_mean():
    torch.manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(2, 8, 3, 4), dim=1)
    bank = torch.randn(5, 8)
    c = bank.mean(0) / bank.mean(0).norm()
    expected = torch.nn.functional.conv2d(feats, c.view(1, 8, 1, 1))[:, 0]
    assert torch.allclose(rc.clutter_score(feats, bank), expected, atol=1e-6)


def test_best_start_picks_the_matching_render():
    torch.manual_seed(0)
    maps = torch.nn.functional.normalize(torch.randn(10, 8, 3, 4), dim=1)
    feats = maps[[7, 2]]
    clut = torch.zeros(2, 3, 4)
    index, losses = rc.best_start(maps, feats, clut, chunk=3)
    assert index.tolist() == [7, 2]
    assert losses.shape == (2, 10)
    assert losses[0, 7] == pytest.approx(0.0, abs=1e-6)


def test_pose_optimizer_decays_every_third_of_the_steps():
    p = torch.zeros(1, requires_grad=True)
    opt = rc.PoseOptimizer([p], steps=30)
    lrs = []
    for _ in range(30):
        (p - 1).pow(2).sum().backward()
        opt.step()
        lrs.append(opt.lr)
    assert lrs[8] == pytest.approx(0.05) and lrs[9] == pytest.approx(0.01) and lrs[19] == pytest.approx(0.002)
    assert opt.optimizer.defaults["betas"] == (0.4, 0.6)


def _cuboid_renderer(size=(12, 16)):
    verts, faces = cuboid(np.array([[-0.2, 0.2], [-0.4, 0.4], [-0.15, 0.15]]), 200).torch()
    g = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(len(verts), 16, generator=g), dim=1)

    def render(a, e, th, d):
        cam = Camera.create(a, e, th, d, torch.tensor([size[1] / 2, size[0] / 2]), 1.0, 90.0)
        return interpolate(rasterize(verts, faces, cam, size), faces, bank)
    return render


def test_optimise_pose_refines_a_perturbed_start():
    render = _cuboid_renderer()
    gt = torch.tensor([0.8, 0.3, 0.05])
    target = torch.nn.functional.normalize(render(*gt[:, None], torch.tensor([5.0])), dim=1)
    clut = torch.zeros(1, *target.shape[-2:])
    start = gt + torch.tensor([0.25, -0.15, 0.1])
    fit = rc.optimise_pose(render, target, clut, start[:1], start[1:2], start[2:], torch.tensor([5.0]), steps=60)
    before = float(pose_error(start.numpy(), gt.numpy()))
    after = float(pose_error(np.array([fit.azimuth.item(), fit.elevation.item(), fit.theta.item()]), gt.numpy()))
    assert after < before / 3
    assert fit.loss.shape == (1,) and fit.distance.item() == pytest.approx(5.0, abs=0.5)
