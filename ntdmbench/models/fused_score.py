"""NeMo's and NTDM's render-and-compare losses as CPU kernels with analytic gradients.

A pose step in pure torch is ~150 small operations (rasterise, gather, barycentrics, loss, and their
autograd), and on a 32x84 feature map that overhead, not the arithmetic, is the cost. ``fused_score.cpp``
projects the mesh, rasterises it (the torch backend's rules), interpolates the per-vertex similarity,
evaluates NeMo's loss and its gradient to the pose in one pass per image. NTDM's step is the same chain
with a neural texture instead of vertex similarities: ``surface_loss`` projects the meshes, computes their
vertex normals, rasterises, interpolates normals, positions and UVs, blends the view-specific bins at each
covered pixel, scores it against the image feature and returns the loss and its gradient to the meshes and
poses; torch would run ``grid_sample`` over all b x d channels. A pixel's score comes from its texel-feature
dot products (``dot_cache``, kept over a fit's steps) and its cell's texel Gram matrix (``gram_cache``, kept
per texture). ``surface_fit`` runs NTDM's whole optimisation, each item's deformation network, steps and Adam
updates in one thread task; the init search scores its start points with ``start_pairs`` / ``start_scores``
(``texture_score``: one blend-and-score per point, with its gradient). CUDA tensors keep the batched torch path.

The extension is compiled on first use (``torch.utils.cpp_extension``, about a minute, cached under
``$TORCH_EXTENSIONS_DIR``); without a working compiler ``available()`` is False and callers fall back.
``$NTDMBENCH_FUSED=0`` turns the kernel off.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ntdmbench.models import threads

ENV = "NTDMBENCH_FUSED"


@lru_cache(maxsize=1)
def _extension():
    # importing cpp_extension warns "No CUDA runtime is found" on every CPU-only machine: not news here
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load
    finally:
        log.setLevel(level)

    source = Path(__file__).with_name("fused_score.cpp")
    try:  # OpenMP: NTDM's kernel splits its meshes between threads
        return load(name="ntdmbench_fused_score", sources=[str(source)], extra_cflags=["-O3", "-fopenmp"],
                    extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as exc:  # a compiler without OpenMP: the same kernels, serial (and said, not silent)
        warnings.warn(f"fused kernels built without OpenMP, NTDM's steps run on one thread: {str(exc).splitlines()[0]}")
        return load(name="ntdmbench_fused_score_serial", sources=[str(source)], extra_cflags=["-O3", "-fopenmp-simd"],
                    verbose=False)


@lru_cache(maxsize=1)
def _compiles() -> bool:
    try:
        _extension()
    except Exception as exc:  # no compiler, headers or ninja: the torch path still works
        warnings.warn(f"fused render-and-compare kernel unavailable, using the torch path: {exc}")
        return False
    return True


def available(device: torch.device | str = "cpu") -> bool:
    """Whether the kernel serves tensors on ``device`` (CPU only, not disabled, compiled)."""
    return torch.device(device).type == "cpu" and os.environ.get(ENV, "1") != "0" and _compiles()


class _RenderScoreLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, R, t, vertices, faces, principal, focal, similarity, clutter, H, W):
        loss, grad_R, grad_t = _extension().render_score_loss(vertices, faces, R.detach(), t.detach(), principal,
                                                              focal, similarity, clutter, H, W)
        ctx.save_for_backward(grad_R.to(R.dtype), grad_t.to(t.dtype))
        return loss.to(R.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        grad_R, grad_t = ctx.saved_tensors
        return grad_R * grad_loss[:, None, None], grad_t * grad_loss[:, None], *(None,) * 8


class _PoseScoreLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, C, theta, vertices, faces, principal, focal, similarity, clutter, H, W):
        loss, grad_C, grad_theta = _extension().pose_score_loss(C.detach(), theta.detach(), vertices, faces,
                                                                principal, focal, similarity, clutter, H, W)
        ctx.save_for_backward(grad_C.to(C.dtype), grad_theta.to(theta.dtype))
        return loss.to(C.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        grad_C, grad_theta = ctx.saved_tensors
        return grad_C * grad_loss[:, None], grad_theta * grad_loss, *(None,) * 8


def pose_score_loss(C: torch.Tensor, theta: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                    principal: torch.Tensor, focal: torch.Tensor, similarity: torch.Tensor,
                    clutter: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
    """``render_score_loss`` for cameras at centres ``C (B, 3)`` (CAD frame, looking at the origin) with in-plane
    rotation ``theta (B,)``, NeMo's optimisation variables: the extrinsics and their gradient are in the kernel
    too, so a whole step is one autograd node."""
    B, V, h, w = similarity.shape
    clut = torch.empty(0) if clutter is None else clutter.reshape(B, h * w)
    return _PoseScoreLoss.apply(C, theta, vertices, faces, principal, focal, similarity.reshape(B, V, h * w), clut,
                                h, w)


def render_score_loss(R: torch.Tensor, t: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                      principal: torch.Tensor, focal: torch.Tensor, similarity: torch.Tensor,
                      clutter: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
    """``(B,)`` NeMo losses (``render_compare.loss_fg_bg``, or ``loss_fg_only`` when ``clutter`` is None) of
    the mesh ``vertices (V, 3)`` / ``faces (F, 3)`` under extrinsics ``R (B, 3, 3)``, ``t (B, 3)`` and
    intrinsics ``principal (B, 2)``, ``focal (B,)`` (map cells), against per-pixel vertex similarities
    ``(B, V, h, w)`` and clutter scores ``(B, h, w)``; differentiable in R and t."""
    B, V, h, w = similarity.shape
    clut = torch.empty(0) if clutter is None else clutter.reshape(B, h * w)
    return _RenderScoreLoss.apply(R, t, vertices, faces, principal, focal, similarity.reshape(B, V, h * w), clut,
                                  h, w)


class _TextureScore(torch.autograd.Function):
    @staticmethod
    def forward(ctx, uv, alpha, texels, feature_rows, rows):
        with_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        score, grad_uv, grad_alpha = _extension().texture_score(texels, uv.detach(), alpha.detach(), feature_rows,
                                                                rows, with_grad, threads.kernel_threads())
        ctx.save_for_backward(grad_uv.to(uv.dtype), grad_alpha.to(alpha.dtype))
        return score.to(uv.dtype)

    @staticmethod
    def backward(ctx, grad_score):
        grad_uv, grad_alpha = ctx.saved_tensors
        return grad_uv * grad_score[:, None], grad_alpha * grad_score[:, None], None, None, None


def texture_score(texels: torch.Tensor, uv: torch.Tensor, alpha: torch.Tensor, feature_rows: torch.Tensor,
                  rows: torch.Tensor) -> torch.Tensor:
    """``(M,)`` NTDM object scores ``<normalize(sum_b alpha_b T_b(uv)), f>`` at M surface points: ``texels``
    ``(q, q, NB, d)`` the texture texel-major, ``uv (M, 2)``, ``alpha (M, nb)`` over its first nb bins, and
    ``f = feature_rows[rows]`` (rows of a ``(R, d)`` table, so a whole feature map is never gathered).
    Differentiable in ``uv`` and ``alpha``; the texture and the features are constants."""
    return _TextureScore.apply(uv, alpha, texels, feature_rows, rows)


@dataclass
class StartPairs:
    """The init search's image-independent data of M start points (``start_pairs``): the distinct (pixel, texel)
    pairs ``pair_pixel``, ``pair_texel`` ``(U,)`` their bilinear corners form, each point's 4 pairs ``corner_pair``
    ``(M, 4)``, its place in the flattened score maps ``target`` ``(M,)`` (all int32), the maps' total ``size`` and
    the norm of each point's blended texel vector ``norm`` ``(M,)``."""

    corner_pair: torch.Tensor
    pair_pixel: torch.Tensor
    pair_texel: torch.Tensor
    target: torch.Tensor
    size: int
    norm: torch.Tensor

    @property
    def nbytes(self) -> int:
        parts = (self.corner_pair, self.pair_pixel, self.pair_texel, self.target, self.norm)
        return sum(t.numel() * t.element_size() for t in parts)


def start_pairs(texels: torch.Tensor, uv: torch.Tensor, alpha: torch.Tensor, start: torch.Tensor, pixel: torch.Tensor,
                maps: int, pixels: int) -> StartPairs:
    """``StartPairs`` of M points, point m at pixel ``pixel[m]`` (``r * w + c`` of ``pixels``) of map ``start[m]``
    (of ``maps``), with ``uv`` and ``alpha`` as for ``texture_score``, for ``start_scores``. The pairs are
    texel-major, so a texel's values stay in cache while its pixels' dot products are taken."""
    corners, norm = _extension().start_pairs(texels, uv, alpha, threads.kernel_threads())
    keys = corners.to(torch.int64) * pixels + pixel.to(torch.int64)[:, None]
    unique, inverse = torch.unique(keys.flatten(), return_inverse=True)
    return StartPairs(inverse.view(-1, 4).to(torch.int32), (unique % pixels).to(torch.int32),
                      (unique // pixels).to(torch.int32), (start * pixels + pixel).to(torch.int32), maps * pixels,
                      norm)


def start_scores(texels: torch.Tensor, uv: torch.Tensor, alpha: torch.Tensor, pairs: StartPairs,
                 feature_rows: torch.Tensor) -> torch.Tensor:
    """The score maps, flattened ``(maps * pixels,)``, of the points of ``pairs`` against one image's
    ``feature_rows`` ``(h w, d)`` (rows by pixel): ``texture_score`` (no gradient) where a point is, else 0.
    Each distinct pair's nb texel-feature dot products are taken once, about a fifth of the points' 4 nb."""
    return _extension().start_scores(texels, uv.contiguous(), alpha.contiguous(), pairs.norm, pairs.corner_pair,
                                     pairs.pair_pixel, pairs.pair_texel, pairs.target, pairs.size, feature_rows,
                                     threads.kernel_threads())


class _SurfaceLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, C, theta, vertices, arguments):
        with_grad = any(ctx.needs_input_grad[:3])
        loss, *grads = _extension().surface_loss(C.detach(), theta.detach(), vertices.detach(), *arguments, with_grad,
                                                 threads.kernel_threads())
        ctx.save_for_backward(*(g.to(t.dtype) for g, t in zip(grads, (C, theta, vertices))))
        return loss.to(C.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        grad_C, grad_theta, grad_vertices = ctx.saved_tensors
        return grad_C * grad_loss[:, None], grad_theta * grad_loss, grad_vertices * grad_loss[:, None, None], None


PAIRS = 32  # a texel cell's 4 corners x at most 7 bins, padded: the kernel's row width


def gram_cache(q: int, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An empty cache of a q x q texture's cell Gram matrices for ``surface_loss`` (filled as cells are used):
    ``(q * q, 4 bins, PAIRS)`` float32 (untouched pages cost no memory) and ``(q * q,)`` int32 states."""
    return torch.empty(q * q, 4 * bins, PAIRS), torch.zeros(q * q, dtype=torch.int32)


def dot_cache(items: int, pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An empty cache of each item's per-pixel texel-feature dot products for ``surface_loss``: valid for calls
    with the same items (mesh, texture, image), i.e. one fit's steps."""
    return torch.full((items, pixels), -1, dtype=torch.int32), torch.zeros(items, pixels, PAIRS)


def surface_loss(C: torch.Tensor, theta: torch.Tensor, principal: torch.Tensor, focal: torch.Tensor,
                 vertices: torch.Tensor, faces: torch.Tensor, corner_uv: torch.Tensor, rotations: torch.Tensor,
                 temperature: float, texels: list[torch.Tensor], grams: list[tuple[torch.Tensor, torch.Tensor]],
                 item_model: torch.Tensor, feature_rows: torch.Tensor, image: torch.Tensor,
                 clutter: torch.Tensor | None, valid: torch.Tensor,
                 cache: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``(N,)`` NTDM render-and-compare losses of N meshes (``loss_fg_bg``, or ``loss_fg_only`` when ``clutter`` is
    None), the whole chain of ``Camera.transform`` + ``textures.surface_scores`` + ``compare_loss`` in one pass per
    mesh.

    Item n is the mesh ``vertices[n]`` (``(N, V, 3)`` in the CAD frame; its vertex normals are
    ``meshes.vertex_normals``') seen by a camera at centre ``C[n]`` ``(N, 3)`` looking at the origin with in-plane
    rotation ``theta[n]`` (NeMo's pose variables: ``Camera`` at ``position_to_angles(C)``) and intrinsics
    ``principal (N, 2)``, ``focal (N,)`` in map cells; ``faces (F, 3)`` and the per-corner UVs ``corner_uv (F, 3, 2)``
    are shared. It is textured by ``texels[item_model[n]]`` (``NeuralTexture.texels``, its first ``len(rotations)``
    bins; ``grams`` their ``gram_cache``s) and compared with image ``image[n]``: ``feature_rows`` is
    ``feature_table`` of the ``(B, d, h, w)`` maps, ``clutter`` and ``valid`` are ``(N, h, w)``. ``cache``
    (``dot_cache``) carries the texel-feature dot products from one call to the next over the steps of a fit; None:
    a fresh one. Differentiable in ``C``, ``theta`` and the vertices.
    """
    N, h, w = valid.shape
    clut = torch.empty(0) if clutter is None else clutter.reshape(N, h * w)
    cache = dot_cache(N, h * w) if cache is None else cache
    arguments = (principal, focal, faces, corner_uv, rotations, float(temperature), list(texels),
                 [g for g, _ in grams], [state for _, state in grams], item_model, feature_rows, image, clut,
                 valid.reshape(N, h * w), *cache, h, w)
    return _SurfaceLoss.apply(C, theta, vertices, arguments)


def surface_fit(C: torch.Tensor, theta: torch.Tensor, log_scale: torch.Tensor, zs: list[torch.Tensor],
                network: DeformNetwork, principal: torch.Tensor, focal: torch.Tensor, faces: torch.Tensor,
                corner_uv: torch.Tensor, rotations: torch.Tensor, temperature: float, texels: list[torch.Tensor],
                grams: list[tuple[torch.Tensor, torch.Tensor]], item_model: torch.Tensor, feature_rows: torch.Tensor,
                image: torch.Tensor, clutter: torch.Tensor | None, valid: torch.Tensor, optimiser: Optimisation
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """NTDM's whole optimisation in one call: ``optimiser.steps`` steps of ``surface_loss`` (inputs as there) on the
    meshes ``network`` makes, with what autograd and ``PoseOptimizer`` do around it, from the starts ``C (N, 3)``,
    ``theta (N,)``, ``log_scale (N, 3)`` (log s') and ``zs`` (model j's items' latents ``(n_j, K_j)``, items in
    model order). Each item runs its network and all its steps in one thread task, so threads never wait for each
    other between steps. The network's softplus is the kernel's own (``softplus``: torch's costs more than the
    network's matrix products), so fits differ from the torch loop's by float roundings. Returns the final C,
    theta, log s', zs and ``(N,)`` losses at them."""
    N, h, w = valid.shape
    clut = torch.empty(0) if clutter is None else clutter.reshape(N, h * w)
    K = max(len(weight) for weight in network.latent_weights)
    z = torch.cat([torch.nn.functional.pad(latent.detach().float(), (0, K - latent.shape[1])) for latent in zs])
    C, theta, log_scale, z, loss = _extension().surface_fit(
        C.detach(), theta.detach(), log_scale.detach(), z, list(network.latent_weights), principal, focal,
        list(network.constants), network.beta, network.threshold, faces, corner_uv, rotations,
        float(temperature), list(texels), [g for g, _ in grams], [state for _, state in grams], item_model,
        feature_rows, image, clut, valid.reshape(N, h * w), *dot_cache(N, h * w), h, w, optimiser.steps,
        optimiser.every, optimiser.lr, *optimiser.betas, optimiser.gamma, optimiser.scale_bound, optimiser.shape,
        optimiser.simplex, threads.kernel_threads())
    parts = z.split([len(latent) for latent in zs])
    return C, theta, log_scale, [part[:, :latent.shape[1]] for part, latent in zip(parts, zs)], loss


@dataclass
class Optimisation:
    """``surface_fit``'s optimiser: Adam (``lr``, ``betas``, eps 1e-8) with lr x ``gamma`` every ``every`` steps
    (``render_compare.PoseOptimizer``), the latent kept on the simplex (``simplex``) or fixed (not ``shape``), log s'
    clamped to +-``scale_bound`` (0: unbounded)."""

    steps: int
    every: int
    lr: float
    betas: tuple[float, float]
    gamma: float
    scale_bound: float
    shape: bool
    simplex: bool


@dataclass
class DeformNetwork:
    """N items' deformation networks with fixed weights (``deformable.StackedMeshes``; ``deformed_vertices`` runs
    them in torch): vertices ``(N, V, 3)`` = ``(template + MLP(base + z @ latent_weights[j])) * scale * s'`` for item n
    of model j, with ``Softplus(beta, threshold)`` before each per-item layer ``h @ weights[l][n] + biases[l][n]``
    (the last is the head). ``constants`` holds ``(base (N, V, H), template (V, 3), scale (N, 1, 3), *weights,
    *biases)``, ``latent_weights`` one ``(K_j, H)`` per model."""

    latent_weights: list[torch.Tensor]
    constants: tuple[torch.Tensor, ...]
    beta: float
    threshold: float


def pix_to_face(screen: torch.Tensor, faces: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, h, w)`` nearest covering face per pixel (-1: none) of screen-space meshes ``(B, V, 3)``, with the
    torch backend's rules and arithmetic (``render._winning_faces``); no gradients."""
    return _extension().pix_to_face(screen.detach(), faces, *size)
