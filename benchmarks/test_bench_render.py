"""Rasterising NeMo's 144 initial poses of a ~1000-vertex cuboid into a 56x80 feature map (a 448x640
crop at stride 8), per backend: the rasterisation alone, and rendering 128-d vertex features (as NeMo
renders its feature bank) forward and forward+backward to the vertices.
Run: ``python -m pytest benchmarks/ --benchmark-enable``.
"""

import math

import numpy as np
import pytest
import torch

from ntdmbench.models import meshes as M
from ntdmbench.models import render as R
from ntdmbench.models.camera import Camera

H, W, STRIDE = 56, 80, 8
BACKENDS = [pytest.param("pytorch3d", marks=pytest.mark.skipif(not R.pytorch3d_available(), reason="no pytorch3d")),
            "torch"]


@pytest.fixture(scope="module")
def scene():
    vertices, faces = M.cuboid(np.array([[-0.18, 0.18], [-0.41, 0.41], [-0.16, 0.14]])).torch()
    a, e, t = torch.meshgrid(torch.linspace(0, 2 * math.pi, 13)[:-1], torch.linspace(-math.pi / 6, math.pi / 3, 4),
                             torch.linspace(-math.pi / 6, math.pi / 6, 3), indexing="ij")
    camera = Camera.create(a.flatten(), e.flatten(), t.flatten(), 5.0, (W * STRIDE / 2, H * STRIDE / 2))
    features = torch.nn.functional.normalize(torch.randn(len(vertices), 128), dim=1)
    return vertices, faces, camera.to(torch.float32).downsample(STRIDE), features


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["rasterize", "render", "render+backward"])
def test_bench_rasterize_144_poses(benchmark, scene, backend, mode):
    vertices, faces, camera, features = scene
    target = torch.randn(len(camera), 128, H, W)
    benchmark.extra_info.update(poses=len(camera), vertices=len(vertices), faces=len(faces), image=f"{H}x{W}",
                                threads=torch.get_num_threads())

    def step():
        verts = vertices.clone().requires_grad_(mode == "render+backward")
        fragments = R.rasterize(verts, faces, camera, (H, W), backend=backend)
        if mode != "rasterize":
            loss = (R.interpolate(fragments, faces, features) * target).sum()
            if verts.requires_grad:
                loss.backward()
        return fragments

    fragments = benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
    assert fragments.silhouette.any(dim=(1, 2)).all()
