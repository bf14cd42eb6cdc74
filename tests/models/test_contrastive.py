"""Contrastive feature learning: bank updates, vertex visibility and sampling, the exclusion mask and the loss."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ntdmbench.models import contrastive as ct
from ntdmbench.models.camera import Camera
from ntdmbench.models.meshes import cuboid


def test_bank_momentum_update_and_clutter_fifo():
    bank = ct.FeatureBank(3, feature_dim=4, n_clutter=4, momentum=0.9, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(bank.memory.norm(dim=1), torch.ones(7))
    before = bank.vertices.clone()
    feats = F.normalize(torch.randn(2, 3, 4), dim=-1)
    visible = torch.tensor([[True, False, True], [True, False, False]])
    clutter = F.normalize(torch.randn(2, 3, 4), dim=-1)
    bank.update(feats, visible, clutter)
    mean = (feats * visible[..., None]).mean(0)
    assert torch.allclose(bank.vertices, F.normalize(before * 0.9 + mean * 0.1, dim=1), atol=1e-6)
    assert torch.allclose(bank.clutter, clutter.reshape(6, 4)[[4, 5, 2, 3]], atol=1e-6)
    assert int(bank.pointer) == 2  # six rows through a FIFO of four


def test_project_visible_hides_the_far_side():
    verts, faces = cuboid(np.array([[-0.5, 0.5], [-0.5, 0.5], [-0.5, 0.5]]), 100).torch()
    cam = Camera.create(0.0, 0.0, 0.0, 5.0, torch.tensor([32.0, 32.0]), 1.0, 200.0).to(torch.float32)
    xy, visible = ct.project_visible(verts, faces, cam, (64, 64))
    y = verts[:, 1]  # the camera sits at -y (azimuth 0): the face at y = -0.5 faces it
    assert visible[0, y < -0.49].all()
    assert not visible[0, y > 0.49].any()
    assert xy.shape == (1, len(verts), 2)


def test_cells_and_sampling():
    feats = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)
    points = torch.tensor([[[0.0, 0.0], [31.9, 15.9]], [[8.0, 8.0], [-5.0, 99.0]]])
    cells = ct.vertex_cells(points, 8, (2, 4))
    assert cells.tolist() == [[0, 7], [5, 4]]
    got = ct.sample_cells(feats, cells)
    assert torch.equal(got[1, 0], feats[1, :, 1, 1]) and torch.equal(got[0, 1], feats[0, :, 1, 3])


def test_background_cells_stay_in_the_allowed_set():
    allowed = torch.zeros(2, 3, 3, dtype=torch.bool)
    allowed[0, 0, :2] = True
    cells = ct.background_cells(allowed, 5, torch.Generator().manual_seed(0))
    assert set(cells[0].tolist()) <= {0, 1}
    assert cells.shape == (2, 5) and cells[1].max() < 9  # no allowed cell: any cell


def test_near_vertex_mask():
    pts = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [20.0, 0.0]]])
    mask = ct.near_vertex_mask(pts, 5.0)
    assert mask[0].tolist() == [[False, True, False], [True, False, False], [False, False, False]]


def test_contrastive_loss_matches_manual_and_prefers_matching_features():
    g = torch.Generator().manual_seed(0)
    bank = ct.FeatureBank(4, feature_dim=8, n_clutter=3, generator=g)
    feats = bank.vertices.clone()[None].requires_grad_(True)
    visible = torch.tensor([[True, True, False, True]])
    near = torch.zeros(1, 4, 4, dtype=torch.bool)
    near[0, 0, 1] = True
    clutter = F.normalize(torch.randn(1, 2, 8, generator=g), dim=-1)
    loss, parts = ct.contrastive_loss(feats, visible, clutter, bank, near)
    logits = feats[0] @ bank.memory.T / 0.07
    logits[:, 4:] -= -math.log(5e-3)
    logits[0, 1] -= 1e5
    main = F.cross_entropy(logits[[0, 1, 3]], torch.tensor([0, 1, 3]))
    reg = 0.1 * (clutter @ bank.vertices.T).mean()
    assert loss.item() == pytest.approx((main + reg).item(), rel=1e-5)
    assert parts["contrastive"] == pytest.approx(main.item(), rel=1e-5)
    loss.backward()
    assert feats.grad[0, 2].abs().sum() == 0 and feats.grad[0, 0].abs().sum() > 0
    shuffled, _ = ct.contrastive_loss(feats.detach()[:, [1, 2, 3, 0]], visible, clutter, bank, near)
    assert shuffled > loss
