"""The fused CPU kernel (``fused_score``) against the torch path it replaces, and ``loop_threads``.

The kernel's winner search must pick the very faces of ``render._winning_faces`` (same arithmetic), and
its loss and analytic gradient must equal autograd through rasterise -> interpolate -> ``compare_loss``.
"""

import copy
import functools
import math

import numpy as np
import pytest
import torch

from ntdmbench.baselines.nemo.inference import STRIDE, MeshRenderer
from ntdmbench.models import fused_score
from ntdmbench.models import meshes as M
from ntdmbench.models import render as R
from ntdmbench.models import render_compare as rc
from ntdmbench.models import threads
from ntdmbench.models.camera import Camera, camera_position

pytestmark = pytest.mark.skipif(not fused_score.available(), reason="fused kernel does not build here")
h, w = 24, 40


def _scene(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    verts, faces = M.cuboid(np.array([[-0.25, 0.25], [-0.55, 0.55], [-0.2, 0.2]]), 600).torch(dtype)
    bank = torch.nn.functional.normalize(torch.randn(len(verts), 16, generator=gen, dtype=dtype), dim=1)
    features = torch.nn.functional.normalize(torch.randn(2, 16, h, w, generator=gen, dtype=dtype), dim=1)
    clutter = torch.rand(2, h, w, generator=gen, dtype=dtype) * 0.3
    renderer = MeshRenderer(verts, faces, bank, torch.tensor([w * STRIDE / 2, h * STRIDE / 2], dtype=dtype), 3000.0,
                            (h, w))
    return renderer, features, clutter, torch.einsum("bchw,vc->bvhw", features, bank)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_winner_search_picks_the_torch_backends_faces(dtype):
    poses = rc.initial_poses()
    for verts, faces in (M.cuboid(np.array([[-0.25, 0.25], [-0.55, 0.55], [-0.2, 0.2]]), 600).torch(dtype),
                         M.icosphere(2).torch(dtype)):
        camera = Camera.create(poses[:, 0], poses[:, 1], poses[:, 2], 4.0, (w * 4.0, h * 4.0)).to(dtype).downsample(8)
        screen = camera.transform(verts)
        torch_faces = R._winning_faces(screen[:, faces], len(faces), h, w, 2 ** 21)
        kernel = fused_score.pix_to_face(screen, faces, (h, w)).view(-1)
        assert (kernel >= 0).any()
        assert torch.equal(torch.where(kernel < 0, len(faces), kernel), torch_faces)


@pytest.mark.parametrize("use_clutter", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_loss_and_gradient_equal_autograd_through_the_torch_path(use_clutter, dtype, monkeypatch):
    renderer, features, clutter, similarity = _scene(dtype)
    clut = clutter if use_clutter else None
    C = camera_position(torch.tensor([0.4, 2.5], dtype=dtype), torch.tensor([0.2, 0.5], dtype=dtype),
                        torch.tensor([4.5, 5.5], dtype=dtype)).requires_grad_(True)
    theta = torch.tensor([0.1, -0.2], dtype=dtype, requires_grad=True)
    fused = renderer.fused_loss(similarity, clut)(C, theta)
    fused_grads = torch.autograd.grad(fused.sum(), [C, theta])
    monkeypatch.setenv(fused_score.ENV, "0")  # the pure-torch rasteriser as well
    a, e, d = rc.position_to_angles(C)
    old = rc.compare_loss(renderer.scorer(similarity)(a, e, theta, d), features, clut)
    old_grads = torch.autograd.grad(old.sum(), [C, theta])
    # the kernel reads similarities as float32, so float64 agrees to float32 rounding of those only
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(fused, old, **tol)
    for new, ref in zip(fused_grads, old_grads):
        assert ref.abs().max() > 0
        torch.testing.assert_close(new, ref, **tol)


def test_fused_optimisation_ends_at_the_torch_paths_pose(monkeypatch):
    renderer, features, clutter, similarity = _scene(torch.float32, seed=1)
    start = [torch.tensor([0.5, 2.0]), torch.tensor([0.3, 0.4]), torch.tensor([0.0, 0.1]), torch.full((2,), 5.0)]
    fused = rc.optimise_pose(None, features, clutter, *start, steps=60,
                             loss_fn=renderer.fused_loss(similarity, clutter))
    monkeypatch.setenv(fused_score.ENV, "0")
    old = rc.optimise_pose(renderer.scorer(similarity), features, clutter, *start, steps=60)
    for key in ("azimuth", "elevation", "theta"):
        assert (getattr(fused, key) - getattr(old, key)).abs().max() < math.radians(0.5), key
    torch.testing.assert_close(fused.loss, old.loss, rtol=1e-3, atol=1e-4)


def test_loop_threads_sets_the_count_and_restores_the_callers(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.delenv(threads.ENV, raising=False)
        assert threads.kernel_threads() == 2
        with threads.loop_threads():
            assert torch.get_num_threads() == 1
            assert threads.kernel_threads() == 2  # the fused kernels keep the caller's threads
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), threads.loop_threads():
            raise RuntimeError("inside the loop")
        assert torch.get_num_threads() == 2
        monkeypatch.setenv(threads.ENV, "3")
        with threads.loop_threads():
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 2
        monkeypatch.setenv(threads.ENV, "0")
        with pytest.raises(ValueError, match=threads.ENV):
            with threads.loop_threads():
                pass
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_optimise_pose_restores_the_thread_count():
    renderer, features, clutter, similarity = _scene(torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        seen = []

        def loss_fn(C, theta):
            seen.append(torch.get_num_threads())
            return renderer.fused_loss(similarity, clutter)(C, theta)
        rc.optimise_pose(None, features, clutter, *(torch.zeros(2),) * 3, torch.full((2,), 5.0), steps=3,
                         loss_fn=loss_fn)
        assert seen == [1] * 4 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bins", [7, 1])
def test_texture_score_and_gradient_equal_autograd_through_the_texture_lookup(bins):
    from ntdmbench.ntdm.textures import NeuralTexture, blend

    gen = torch.Generator().manual_seed(0)
    texture = NeuralTexture(7, 16, 8, gen)
    uv = torch.rand(300, 2, generator=gen) * 1.4 - 0.2  # across the seam and past both poles (v clamped)
    uv.requires_grad_(True)
    alpha = torch.softmax(torch.randn(300, bins, generator=gen), -1).requires_grad_(True)
    table = torch.nn.functional.normalize(torch.randn(40, 16, generator=gen), dim=1)
    rows = torch.randint(0, 40, (300,), generator=gen)
    weights = torch.rand(300, generator=gen)
    fused = fused_score.texture_score(texture.texels(), uv, alpha, table, rows)
    fused_grads = torch.autograd.grad((fused * weights).sum(), [uv, alpha])
    reference = (blend(texture.lookup(uv, bins), alpha) * table[rows]).sum(-1)
    reference_grads = torch.autograd.grad((reference * weights).sum(), [uv, alpha])
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=0)
    for got, want in zip(fused_grads, reference_grads):
        torch.testing.assert_close(got, want, atol=1e-4 * max(float(want.abs().max()), 1.0), rtol=0)


@pytest.mark.parametrize("bins", [7, 1])
def test_start_scores_from_distinct_pairs_equal_texture_score(bins):
    """The init search's scores from each distinct (pixel, texel) pair's dot products (``start_pairs`` +
    ``start_scores``) equal ``texture_score``'s blend-then-dot, with points sharing pixels and texels."""
    from ntdmbench.ntdm.textures import NeuralTexture

    gen = torch.Generator().manual_seed(0)
    texture = NeuralTexture(7, 40, 8, gen)  # d = 40: 16-lane blocks and a remainder
    uv = torch.rand(2000, 2, generator=gen) * 1.4 - 0.2  # across the seam and past both poles
    alpha = torch.softmax(torch.randn(2000, bins, generator=gen), -1)
    slot = torch.randperm(100 * 30, generator=gen)[:2000]  # a point per (map, pixel) at most, as rendered
    start, pixel = slot // 30, slot % 30
    table = torch.nn.functional.normalize(torch.randn(2 * 30, 40, generator=gen), dim=1)
    pairs = fused_score.start_pairs(texture.texels(), uv, alpha, start, pixel, 100, 30)
    assert len(pairs.pair_pixel) < 4 * len(uv) / 2  # points share pairs
    for image in (0, 1):
        rows = table[image * 30:(image + 1) * 30]
        want = torch.zeros(100 * 30).index_put_((slot,),
                                                 fused_score.texture_score(texture.texels(), uv, alpha, rows, pixel))
        torch.testing.assert_close(fused_score.start_scores(texture.texels(), uv, alpha, pairs, rows), want,
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("beta", [1.0, 10.0])
def test_kernel_softplus_is_as_accurate_as_torchs(beta):
    """The fit's network takes its own softplus (Cephes exp and log): within 4 ulp of torch's distance to float64."""
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.linspace(-12, 30, 100_001) / beta, torch.randn(10_000, generator=gen),
                   torch.tensor([0.0, 1e-8, -1e-8, 20 / beta, math.nextafter(20 / beta, 99)])])
    y, sigma = fused_score._extension().softplus(x, beta, 20.0)
    ref = torch.nn.functional.softplus(x.double(), beta, 20.0)
    ulp = torch.finfo(torch.float32).eps * ref.abs()
    torch_error = (torch.nn.functional.softplus(x, beta, 20.0).double() - ref).abs()
    assert ((y.double() - ref).abs() <= torch_error + 4 * ulp).all()
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.softplus(xg, beta, 20.0).sum().backward()  # torch's derivative: 1 past the threshold
    torch.testing.assert_close(sigma, xg.grad, atol=0, rtol=4 * torch.finfo(torch.float32).eps)
    assert torch.equal(y[x * beta > 20], x[x * beta > 20])


def test_kernel_softmax_exp_is_within_one_ulp_of_torchs():
    """The view coefficients' softmax takes its own exp of x - max <= 0 (8 at a time): within 1 ulp of torch.exp
    down to -708, exactly 1 at 0, and the same values once rounded to float32 (the coefficients' type)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([-torch.rand(200_000, generator=gen, dtype=torch.float64) * 708,
                   -torch.rand(200_000, generator=gen, dtype=torch.float64) * 30,
                   torch.tensor([0.0, -0.0, -1e-300, -1e-8, -math.log(2) / 2, -708.0], dtype=torch.float64)])
    y, ref = fused_score._extension().exp_softmax(x), torch.exp(x)
    assert ((y - ref).abs() <= torch.from_numpy(np.spacing(ref.numpy()))).all()
    assert y[-6] == 1.0 and y[-5] == 1.0
    assert torch.equal(y.float(), ref.float())


def test_kernels_build_with_openmp():
    """This machine's compiler has OpenMP: a kernel that fails to compile with it must not pass unnoticed as
    the serial fallback build."""
    assert fused_score._extension().__name__ == "ntdmbench_fused_score"


@functools.lru_cache(maxsize=1)
def _ntdm_items():
    """Two category models and three (model, image) items on two feature maps, for ``surface_loss``."""
    from ntdmbench.ntdm import inference as ntdm
    from ntdmbench.ntdm.deformable import DeformableMesh
    from ntdmbench.ntdm.textures import NeuralTexture, bin_rotations

    torch.manual_seed(0)  # the networks' initialisation: the same inputs whichever tests ran before
    gen = torch.Generator().manual_seed(0)
    models = []
    for _ in range(2):
        mesh = DeformableMesh(3, template_level=2, hidden=16, init_scale=(0.45, 1.0, 0.35))
        with torch.no_grad():
            mesh.head.weight.normal_(0, 0.05, generator=gen)
        models.append(ntdm.CategoryModel(mesh, NeuralTexture(7, 16, 8, gen), bin_rotations(7), 5.0))
    features = torch.nn.functional.normalize(torch.randn(2, 16, h, w, generator=gen), dim=1)
    clutter = torch.rand(2, h, w, generator=gen) * 0.4
    valid = torch.ones(2, h, w, dtype=torch.bool)
    valid[1, :, :5] = False
    return models, features, clutter, valid


def _ntdm_loss_and_grads(azimuth, use_clutter=True, single_bin=False, cache=None, dtype=torch.float32):
    """Loss of ``_ntdm_items``' three items at ``azimuth`` (3,) and its gradients to the pose, latent and scale,
    computed in ``dtype``."""
    from ntdmbench.ntdm import inference as ntdm
    from ntdmbench.ntdm.textures import feature_table

    models, features, clutter, valid = _ntdm_items()
    if dtype != torch.float32:
        models, features, clutter = [copy.deepcopy(m).to(dtype) for m in models], features.to(dtype), clutter.to(dtype)
    image, item_model = torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1])
    principal = torch.tensor([[w / 2, h / 2]], dtype=dtype).expand(3, 2)
    focal = torch.full((3,), 3000.0 / STRIDE * 0.6, dtype=dtype)
    C = camera_position(azimuth.to(dtype), torch.tensor([0.25, 0.1, 0.5], dtype=dtype),
                        torch.tensor([5.4, 5.0, 6.0], dtype=dtype)).requires_grad_(True)
    theta = torch.tensor([0.05, -0.1, 0.2], dtype=dtype, requires_grad=True)
    z = torch.tensor([[0.1, 0.8, 0.1], [0.4, 0.3, 0.3], [0.0, 0.0, 1.0]], dtype=dtype, requires_grad=True)
    log_scale = (0.1 * torch.randn(3, 3, generator=torch.Generator().manual_seed(1))).to(dtype).requires_grad_(True)
    vertices = torch.cat([models[0].mesh(z[:2], log_scale[:2].exp()), models[1].mesh(z[2:], log_scale[2:].exp())])
    loss = ntdm.reconstruction_loss(models, vertices, C, theta, principal, focal, item_model, image, features,
                                    feature_table(features), clutter[image] if use_clutter else None, valid[image],
                                    single_bin, cache)
    return loss, torch.autograd.grad((loss * torch.tensor([1.0, 2.0, 3.0], dtype=dtype)).sum(),
                                     [C, theta, z, log_scale])


@pytest.mark.parametrize("use_clutter", [True, False])
@pytest.mark.parametrize("single_bin", [False, True])
def test_ntdm_surface_loss_and_gradient_equal_the_torch_path(use_clutter, single_bin, monkeypatch):
    """Two category models, three (model, image) items: loss and gradients to the pose, latent and scale, against
    the torch path in float64. The float32 meshes and texture limit both paths to about 1e-5 of the largest
    gradient (the torch path in float32 is as far off: up to 3e-5)."""
    azimuth = torch.tensor([0.9, 2.0, 4.0])
    monkeypatch.setenv(fused_score.ENV, "1")
    fused_loss, fused_grads = _ntdm_loss_and_grads(azimuth, use_clutter, single_bin)
    monkeypatch.setenv(fused_score.ENV, "0")
    torch_loss, torch_grads = _ntdm_loss_and_grads(azimuth, use_clutter, single_bin, dtype=torch.float64)
    torch.testing.assert_close(fused_loss.double(), torch_loss, atol=1e-6, rtol=0)
    for got, want in zip(fused_grads, torch_grads):
        assert float(want.abs().max()) > 0
        torch.testing.assert_close(got.double(), want, atol=5e-5 * float(want.abs().max()), rtol=0)


def test_ntdm_surface_loss_dot_cache_carries_over_steps():
    """A dot cache filled at one pose serves the next: where pixels changed cell it is refreshed, so the loss and
    gradients equal a fresh cache's."""
    cache = fused_score.dot_cache(3, h * w)
    _ntdm_loss_and_grads(torch.tensor([0.9, 2.0, 4.0]), cache=cache)
    filled = cache[0].clone()
    moved = torch.tensor([0.97, 2.05, 4.1])
    warm_loss, warm_grads = _ntdm_loss_and_grads(moved, cache=cache)
    assert (cache[0] != filled).any() and (cache[0] == filled).any()  # some pixels changed cell, some stayed
    fresh_loss, fresh_grads = _ntdm_loss_and_grads(moved)
    torch.testing.assert_close(warm_loss, fresh_loss, atol=0, rtol=0)
    for got, want in zip(warm_grads, fresh_grads):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("fix_shape", [False, True])
def test_ntdm_fit_in_one_kernel_call_follows_the_step_loop(fix_shape, monkeypatch):
    """``surface_fit`` runs each item's deformation network and steps (Adam, lr decay, simplex projection, scale
    clamp) inside the kernel: the same fit as the torch loop (torch network, per-step kernel, autograd,
    ``PoseOptimizer``), to float rounding, with NeMo's betas and decay too."""
    from ntdmbench.ntdm import inference as ntdm

    models, features, clutter, valid = _ntdm_items()
    principal, focal = torch.tensor([[w / 2, h / 2]]).expand(2, 2), torch.full((2,), 3000.0 / STRIDE * 0.6)
    starts = [(torch.tensor([[0.9, 0.25, 0.05], [2.0, 0.1, -0.1]]), torch.tensor([[0.1, 0.8, 0.1], [0.4, 0.3, 0.3]]),
               torch.zeros(2)), (torch.tensor([[4.0, 0.5, 0.2]]), torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1))]
    rows = [torch.tensor([0, 1]), torch.tensor([1])]
    fits = {}
    for kernel in (True, False):
        monkeypatch.setattr(ntdm, "_fit_in_kernel", lambda features: kernel)
        settings = ntdm.InferenceSettings(steps=6, pose_beta1=0.4, pose_beta2=0.6, pose_gamma=0.5, scale_range=1.05,
                                          fix_shape=fix_shape)
        fits[kernel] = ntdm.fit_categories(models, features, clutter, valid, principal, focal, settings, rows, starts)
    for got, want in zip(fits[True], fits[False]):
        for field in ("azimuth", "elevation", "theta", "distance", "latent", "scale", "loss"):
            torch.testing.assert_close(getattr(got, field), getattr(want, field), atol=1e-5, rtol=0)
        assert not torch.equal(got.distance, torch.full_like(got.distance, 5.0))  # it moved
    assert (fits[True][0].scale.log().abs() <= math.log(1.05) + 1e-6).all()
