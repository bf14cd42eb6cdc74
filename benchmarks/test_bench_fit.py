"""One-image fits at the paper's inference settings on fixed synthetic features (no network, no training):
NeMo (a 1118-vertex car cuboid, 128x32x84 features = a 256x672 crop at stride 8, 144 starts, 300 Adam
steps) and NTDM (four category models with the quick checkpoint's 642-vertex mesh and 32x32 texture,
144 starts x 4 one-hot latents each, 300 steps, every category optimised). The features are a noisy
render of a model itself, so the fit has an optimum to find. Run: ``python -m pytest
benchmarks/test_bench_fit.py --benchmark-enable``.
"""

import math

import numpy as np
import pytest
import torch

from ntdmbench.baselines.nemo.category import CategoryModel as NeMoCategory
from ntdmbench.baselines.nemo.inference import STRIDE, InferenceSettings, MeshRenderer, StartCache, fit_category
from ntdmbench.models import meshes
from ntdmbench.models.camera import Camera
from ntdmbench.ntdm import inference as ntdm
from ntdmbench.ntdm.deformable import DeformableMesh
from ntdmbench.ntdm.textures import NeuralTexture, bin_rotations

H, W = 256, 672
h, w = H // STRIDE, W // STRIDE
POSE = (0.8, 0.25, 0.08, 5.4)  # azimuth, elevation, theta, distance of the rendered object


class FixedFeatures(torch.nn.Module):
    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.features = features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features.expand(len(images), -1, -1, -1)


def _noisy(rendered: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(rendered + 0.1 * torch.randn(rendered.shape, generator=gen), dim=1)


@pytest.fixture(scope="module")
def nemo_model():
    gen = torch.Generator().manual_seed(0)
    model = NeMoCategory([meshes.cuboid(np.array([[-0.26, 0.26], [-0.56, 0.56], [-0.2, 0.2]]), 1000)], 18, 128, 64,
                         generator=gen).eval()
    verts, faces = model.mesh_tensors(0)
    renderer = MeshRenderer(verts, faces, model.banks[0].vertices, torch.tensor([W / 2, H / 2]), 3000.0, (h, w))
    with torch.no_grad():
        model.net = FixedFeatures(_noisy(renderer(*(torch.tensor([v]) for v in POSE)), gen))
    return model


@pytest.mark.parametrize("batch", [1, 4])
def test_bench_nemo_fit_paper_settings(benchmark, nemo_model, batch):
    settings, cache = InferenceSettings(), StartCache()
    images = torch.zeros(batch, 3, H, W)
    benchmark.extra_info.update(vertices=len(nemo_model.meshes[0].vertices), feature_map=f"128x{h}x{w}", starts=144,
                                steps=settings.steps, batch=batch, threads=torch.get_num_threads())
    fit = benchmark.pedantic(fit_category, (nemo_model, images, [[0]] * batch, 3000.0, settings, cache, "car"),
                             rounds=5, iterations=1, warmup_rounds=1)  # warm-up pre-renders the start grid
    assert (fit.azimuth - POSE[0]).abs().max() < math.radians(3) and (fit.elevation - POSE[1]).abs().max() < math.radians(3)


def test_bench_ntdm_fit_paper_settings(benchmark):
    """Four category models (the paper optimises every one), the image rendered by the first."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    models = []
    for _ in range(4):
        mesh = DeformableMesh(4, template_level=3, hidden=64, init_scale=(0.45, 1.0, 0.35)).eval()
        with torch.no_grad():
            mesh.head.weight.normal_(0, 0.05, generator=gen)  # four distinct shapes per category
        models.append(ntdm.CategoryModel(mesh, NeuralTexture(7, 128, 32, generator=gen), bin_rotations(7, 60.0), 5.0))
    principal, focal = torch.tensor([[w / 2, h / 2]]), torch.tensor([3000.0 / STRIDE])
    with torch.no_grad():
        camera = Camera(*(torch.tensor([v]) for v in POSE), principal, focal)
        mesh = models[0].mesh
        features = _noisy(models[0].render(mesh(mesh.one_hot(torch.tensor([1]))), camera, (h, w))[0], gen)
    clutter, valid = torch.full((1, h, w), 0.1), torch.ones(1, h, w, dtype=torch.bool)
    settings = ntdm.InferenceSettings()
    benchmark.extra_info.update(vertices=len(mesh.template), feature_map=f"128x{h}x{w}", categories=len(models),
                                starts=144 * 4, steps=settings.steps, threads=torch.get_num_threads())
    rows = [torch.arange(1)] * len(models)
    fits = benchmark.pedantic(ntdm.fit_categories, (models, features, clutter, valid, principal, focal, settings, rows,
                                                    [None] * len(models)),
                              rounds=3, iterations=1, warmup_rounds=1)  # warm-up renders the start grids
    assert min(range(4), key=lambda j: fits[j].loss.item()) == 0  # the rendering category explains it best
    assert abs(fits[0].azimuth.item() - POSE[0]) < math.radians(3) and abs(fits[0].elevation.item() - POSE[1]) < math.radians(3)
