"""NTDM's deformable mesh (eq. 1-2): template, MLP field, fitting to CAD models, pruned distance search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntdmbench.datasets.synthetic.cad import box
from ntdmbench.models import meshes as M
from ntdmbench.ntdm.deformable import (
    DeformableMesh,
    StackedMeshes,
    fit_deformable,
    relative_fit_error,
    sample_surface,
)


def test_candidate_search_is_exact():
    gen = torch.Generator().manual_seed(0)
    sphere_v, sphere_f = M.icosphere(3).torch(torch.float64)
    sphere_v = sphere_v * torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    cad_v, cad_f = box((0.05, 0, 0), (0.3, 0.8, 0.25)).torch(torch.float64)
    far = torch.randn(500, 3, generator=gen, dtype=torch.float64) * 0.6  # inside, outside, far away
    for points, v, f in ((sphere_v, cad_v, cad_f), (far, sphere_v, sphere_f), (cad_v * 1.3, sphere_v, sphere_f)):
        torch.testing.assert_close(M.point_face_distance(points, v, f, candidates=4), M.point_face_distance(points, v, f))


def test_template_is_the_paper_geodesic_sphere_scaled_until_trained():
    mesh = DeformableMesh(3, template_level=4, init_scale=(0.2, 0.5, 0.3))
    assert mesh.template.shape == (2562, 3) and mesh.faces.shape == (5120, 3)
    verts = mesh(mesh.one_hot(torch.tensor([0, 2])), torch.tensor([[1.0, 1.0, 1.0], [2.0, 1.0, 1.0]]))
    assert verts.shape == (2, 2562, 3)
    torch.testing.assert_close(verts[0], mesh.template * torch.tensor([0.2, 0.5, 0.3]))
    torch.testing.assert_close(verts[1, :, 0], 2 * verts[0, :, 0])  # instance scale s' per axis
    torch.testing.assert_close(mesh.average_latent().sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="shape index"):
        mesh.one_hot(3)


def test_surface_samples_lie_on_the_mesh():
    cube = box((0, 0, 0), (1.0, 2.0, 0.5))
    pts = sample_surface(cube, 400, torch.Generator().manual_seed(0))
    v, f = cube.torch()
    assert M.point_face_distance(pts, v, f).max() < 1e-10
    assert (pts[:, 1].abs() > 0.99).float().mean() == pytest.approx(0.5 / 3.5, abs=0.06)  # area-uniform


def test_fit_reaches_each_cad_model_with_its_own_latent():
    cads = [box((0, 0, 0), (0.3, 0.8, 0.3)), box((0, 0, 0), (0.6, 0.4, 0.2))]
    mesh = fit_deformable(cads, template_level=2, hidden=32, layers=3, iters=60, lr=1e-2, surface_points=200)
    errors = relative_fit_error(mesh, cads)
    assert max(errors) < 0.03
    # each latent is closer to its own CAD model than to the other one
    verts = mesh(mesh.one_hot(torch.arange(2))).detach()
    d = [[float(M.mesh_distance(verts[i], mesh.faces, *c.torch(), reduction="mean")) for c in cads] for i in range(2)]
    assert d[0][0] < d[0][1] and d[1][1] < d[1][0]
    assert np.allclose(mesh.scale.detach().numpy() > 0, True)


def test_stacked_meshes_equal_each_mesh_and_pass_gradients_to_latents_and_scales():
    gen = torch.Generator().manual_seed(0)
    meshes = [DeformableMesh(k, template_level=2, hidden=16, init_scale=(0.3, 0.6, 0.2)) for k in (3, 2, 4)]
    for mesh in meshes:
        with torch.no_grad():
            for p in mesh.parameters():
                p.normal_(0, 0.3, generator=gen)
    zs = [torch.softmax(torch.randn(n, mesh.n_shapes, generator=gen), 1).requires_grad_(True)
          for n, mesh in zip((2, 1, 3), meshes)]
    scale = torch.rand(6, 3, generator=gen).add(0.5).requires_grad_(True)
    item_mesh = torch.tensor([0, 0, 1, 2, 2, 2])
    stacked = StackedMeshes(meshes, item_mesh)(zs, scale)
    each = torch.cat([mesh(z, s) for mesh, z, s in zip(meshes, zs, scale.split([2, 1, 3]))])
    torch.testing.assert_close(stacked, each)
    weights = torch.randn(each.shape, generator=gen)
    got = torch.autograd.grad((stacked * weights).sum(), [*zs, scale])
    want = torch.autograd.grad((each * weights).sum(), [*zs, scale])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
