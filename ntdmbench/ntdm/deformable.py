"""NTDM's deformable mesh (paper eq. 1-2): a geodesic-sphere template deformed by an MLP neural field.

``Gamma(z) = s * (v + Psi(v, z))`` for every template vertex ``v``; ``z`` is a one-hot code per
training CAD model (continuous at inference), ``s = [s_x, s_y, s_z]`` a learned average scale (the
paper's ``[s_h, s_w, s_d]``, here in CAD axis order), and at inference an instance scale ``s'``
multiplies it. One ``DeformableMesh`` per category, fitted to that category's CAD models with the
two-sided point-to-face distance of eq. 2 plus normal consistency and Laplacian smoothing.

Eq. 2 sums over vertices; the CAD side here also uses area-uniform surface samples (a CAD box
face has only corner vertices, so its vertices alone leave most of its surface unconstrained), and
both sides are averaged rather than summed so the regulariser weights do not depend on mesh size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ntdmbench.models import fused_score, meshes
from ntdmbench.models.meshes import Mesh


class DeformableMesh(nn.Module):
    """One category's deformable mesh: sphere template, deformation MLP and average scale."""

    def __init__(self, n_shapes: int, template_level: int = 4, hidden: int = 128, layers: int = 4,
                 pe_freqs: int = 4, init_scale: Sequence[float] = (1.0, 1.0, 1.0)):
        super().__init__()
        if n_shapes < 1:
            raise ValueError(f"a deformable mesh needs at least one shape latent, got n_shapes={n_shapes}")
        if layers < 2:
            raise ValueError(f"deformation MLP needs at least 2 layers, got {layers}")
        template = meshes.icosphere(template_level)
        verts, faces = template.torch(torch.float32)
        self.register_buffer("template", verts)
        self.register_buffer("faces", faces)
        self.n_shapes, self.pe_freqs = n_shapes, pe_freqs
        width = 3 + 6 * pe_freqs
        self.point_layer = nn.Linear(width, hidden)
        self.latent_layer = nn.Linear(n_shapes, hidden, bias=False)
        body: list[nn.Module] = []
        for _ in range(layers - 2):
            body += [nn.Linear(hidden, hidden), nn.Softplus(beta=10)]
        self.body = nn.Sequential(nn.Softplus(beta=10), *body)
        self.head = nn.Linear(hidden, 3)
        nn.init.zeros_(self.head.weight)  # start as the scaled sphere
        nn.init.zeros_(self.head.bias)
        self.log_scale = nn.Parameter(torch.tensor(init_scale, dtype=torch.float32).log())

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def encode(self, points: torch.Tensor) -> torch.Tensor:
        """Points and their sin/cos at ``pe_freqs`` octaves (NeRF's positional encoding)."""
        freqs = 2.0 ** torch.arange(self.pe_freqs, device=points.device, dtype=points.dtype) * math.pi
        x = points[..., None] * freqs
        return torch.cat([points, x.sin().flatten(-2), x.cos().flatten(-2)], -1)

    def one_hot(self, index: int | torch.Tensor) -> torch.Tensor:
        """The training latent ``z_k`` of shape ``k`` (0-based), ``(K,)`` or ``(B, K)``."""
        index = torch.as_tensor(index, device=self.template.device)
        if ((index < 0) | (index >= self.n_shapes)).any():
            raise ValueError(f"shape index {index.tolist()} out of range for {self.n_shapes} shapes")
        return nn.functional.one_hot(index, self.n_shapes).to(self.template.dtype)

    def average_latent(self) -> torch.Tensor:
        """``(K,)`` all ``1/K``: the average shape (Table 3's "fix shape" / "average" initialisation)."""
        return torch.full((self.n_shapes,), 1.0 / self.n_shapes, device=self.template.device)

    def template_features(self) -> torch.Tensor:
        """``(V, hidden)``: the first layer's template-vertex term, the same for every latent."""
        return self.point_layer(self.encode(self.template))

    def forward(self, z: torch.Tensor, instance_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices ``(B, V, 3)`` of ``Gamma(z, s')`` for latents ``(B, K)`` (or ``(K,)``: B = 1) and
        instance scales ``s'`` ``(B, 3)`` (None: 1)."""
        z = z.reshape(-1, self.n_shapes).to(self.template.dtype)
        h = self.template_features() + self.latent_layer(z)[:, None]
        verts = (self.template + self.head(self.body(h))) * self.scale
        if instance_scale is not None:
            verts = verts * instance_scale.reshape(-1, 1, 3)
        return verts


class StackedMeshes:
    """Several categories' deformable meshes (same template and network shape, any number of shape latents)
    as one batched network with fixed weights, for an optimisation over latents and scales: item n of a
    batch deforms with mesh ``item_mesh[n]``, and a step costs one batched network instead of one per mesh (on
    CPU ``fused_score.surface_fit`` runs each item's network in the item's own task, from ``network``).
    ``StackedMeshes(meshes, item_mesh)(zs, instance_scale)`` equals ``cat([mesh(z, s) ...])``."""

    def __init__(self, meshes: Sequence[DeformableMesh], item_mesh: torch.Tensor):
        first = meshes[0]
        softplus = first.body[0]
        with torch.no_grad():
            base = torch.stack([m.template_features() for m in meshes])[item_mesh]  # (N, V, hidden)
            # per item, each layer after the first (the body's, then the head): weight (N, in, out), bias (N, 1, out)
            layers = [[*(layer for layer in m.body if isinstance(layer, nn.Linear)), m.head] for m in meshes]
            weights = [torch.stack([ls[i].weight.T for ls in layers])[item_mesh] for i in range(len(layers[0]))]
            biases = [torch.stack([ls[i].bias for ls in layers])[item_mesh, None] for i in range(len(layers[0]))]
            scale = torch.stack([m.scale for m in meshes])[item_mesh, None]  # (N, 1, 3)
            self.network = fused_score.DeformNetwork([m.latent_layer.weight.T for m in meshes],
                                                     (base, first.template, scale, *weights, *biases), softplus.beta,
                                                     softplus.threshold)

    def __call__(self, zs: Sequence[torch.Tensor], instance_scale: torch.Tensor) -> torch.Tensor:
        """Vertices ``(N, V, 3)`` for mesh j's latents ``zs[j]`` ``(n_j, K_j)`` (items in mesh order) and
        instance scales ``(N, 3)``."""
        return deformed_vertices(self.network, zs, instance_scale)


def deformed_vertices(network: fused_score.DeformNetwork, zs: Sequence[torch.Tensor],
                      instance_scale: torch.Tensor) -> torch.Tensor:
    """The vertices ``(N, V, 3)`` of a ``StackedMeshes.network`` for latents ``zs`` and instance scales
    ``(N, 3)``, the network run in torch."""
    base, template, scale, *layers = network.constants
    weights, biases = layers[:len(layers) // 2], layers[len(layers) // 2:]
    h = torch.cat([z.to(template.dtype) @ weight for weight, z in zip(network.latent_weights, zs)])[:, None] + base
    for weight, bias in zip(weights, biases):
        h = torch.baddbmm(bias, nn.functional.softplus(h, network.beta, network.threshold), weight)
    return (template + h) * scale * instance_scale[:, None]


def sample_surface(mesh: Mesh, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, 3)`` points uniform by area on a mesh (float32)."""
    v, f = mesh.torch(torch.float64)
    tri = v[f]
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)
    if not area.sum() > 0:
        raise ValueError("cannot sample a mesh with zero surface area")
    face = torch.multinomial(area, n, replacement=True, generator=generator)
    r1, r2 = torch.rand(n, generator=generator, dtype=torch.float64), torch.rand(n, generator=generator, dtype=torch.float64)
    s = r1.sqrt()
    w = torch.stack([1 - s, s * (1 - r2), s * r2], -1)
    return (tri[face] * w[..., None]).sum(1).float()


def two_sided_distance(verts: torch.Tensor, faces: torch.Tensor, target: Mesh, target_points: torch.Tensor,
                       candidates: int | None = 16) -> torch.Tensor:
    """Eq. 2 averaged per side: mean distance of our vertices to the target's faces plus mean distance
    of the target's points (vertices and surface samples) to our faces."""
    tv, tf = target.torch(verts.dtype, verts.device)
    there = meshes.point_face_distance(verts, tv, tf, candidates=candidates).clamp(min=1e-18).sqrt().mean()
    back = meshes.point_face_distance(target_points.to(verts), verts, faces, candidates=candidates)
    return there + back.clamp(min=1e-18).sqrt().mean()


def fit_deformable(cads: Sequence[Mesh], *, template_level: int = 4, hidden: int = 128, layers: int = 4,
                   pe_freqs: int = 4, iters: int = 1000, lr: float = 1e-3, surface_points: int = 2000,
                   w_normal: float = 0.01, w_laplacian: float = 0.1, seed: int = 0,
                   start: DeformableMesh | None = None, start_iter: int = 0,
                   checkpoint: Callable[[DeformableMesh, int], None] | None = None,
                   checkpoint_every: int = 100) -> DeformableMesh:
    """Fit ``Psi`` and ``s`` so ``Gamma(z_k)`` matches CAD model k for every k (Adam, cosine-decayed lr).

    The loss per model is eq. 2 + ``w_normal`` normal consistency + ``w_laplacian`` uniform Laplacian
    smoothing, summed over models. ``start``/``start_iter`` resume a fit; ``checkpoint(model, it)``
    is called every ``checkpoint_every`` iterations.
    """
    if not cads:
        raise ValueError("fit_deformable needs at least one CAD model")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    points = [torch.cat([torch.as_tensor(c.vertices, dtype=torch.float32), sample_surface(c, surface_points, gen)])
              for c in cads]
    if start is None:
        half = np.mean([(c.vertices.max(0) - c.vertices.min(0)) / 2 for c in cads], axis=0)
        model = DeformableMesh(len(cads), template_level, hidden, layers, pe_freqs, tuple(np.maximum(half, 1e-3)))
    else:
        model = start
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    z = model.one_hot(torch.arange(len(cads)))
    for it in range(start_iter, iters):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * it / iters))
        verts = model(z)
        loss = sum(two_sided_distance(verts[k], model.faces, cad, points[k]) for k, cad in enumerate(cads))
        loss = loss + w_normal * meshes.normal_consistency(verts, model.faces) * len(cads)
        loss = loss + w_laplacian * meshes.laplacian_smoothing(verts, model.faces) * len(cads)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if checkpoint is not None and (it + 1) % checkpoint_every == 0 and it + 1 < iters:
            checkpoint(model, it + 1)
    return model


@torch.no_grad()
def relative_fit_error(model: DeformableMesh, cads: Sequence[Mesh], surface_points: int = 5000,
                       seed: int = 1) -> list[float]:
    """Per CAD model: mean two-sided surface distance between ``Gamma(z_k)`` and the CAD (surface
    samples on both sides, averaged over the two directions), divided by the CAD's box diagonal."""
    gen = torch.Generator().manual_seed(seed)
    verts = model(model.one_hot(torch.arange(len(cads))))
    out = []
    for k, cad in enumerate(cads):
        ours = sample_surface(Mesh(verts[k].double().numpy(), model.faces.numpy()), surface_points, gen)
        theirs = sample_surface(cad, surface_points, gen)
        cv, cf = cad.torch(torch.float32)
        a = meshes.point_face_distance(ours, cv, cf, candidates=16).sqrt().mean()
        b = meshes.point_face_distance(theirs, verts[k], model.faces, candidates=16).sqrt().mean()
        diagonal = float(np.linalg.norm(cad.vertices.max(0) - cad.vertices.min(0)))
        out.append(float((a + b) / 2) / diagonal)
    return out
