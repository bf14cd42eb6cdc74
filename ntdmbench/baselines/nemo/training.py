"""NeMo's contrastive training of one category model (``Angtian/NeMo`` ``TrainNeMo.py``,
``docs/reference.md`` §NeMo training).

Per batch of crops with known poses: image features at the projected visible cuboid vertices are
pulled towards their own bank row and pushed from the other vertices (except those within the
exclusion radius) and, down-weighted, from the clutter rows; then the bank takes a momentum step and
the clutter features enter its FIFO. Visibility labels follow the official rule (``labels.py``: depth
test in the original image, inside the annotated box). In "multi" mode each batch holds images of one
CAD subtype and trains that subtype's bank, as NeMo's per-subtype data loaders do.

Optimiser as ``TrainNeMo.py``: Adam with weight decay; one batch counter runs over the whole training
(across epochs and meshes) and the optimiser steps after batch 0, 10, 20, ... (``iter_num %
train_accumulate == 0``), so a gradient being accumulated carries over an epoch's end. Learning rate
per epoch (``lr_schedule``): ``angtian``, the ICLR 2021 code that produced the paper's numbers and the
released checkpoints: the base rate for the first epoch, then 0.2 x base (its ``(epoch - 1) % 10 == 0``
rule sets 0.2 x base at epoch 1 and again every 10 epochs, never lower); ``wufeim``: the refactor's
MultiStepLR, x0.2 at 1/2 and 3/4 of the epochs ([400, 600] of 800); ``constant``.

Determinism: each epoch reseeds torch from ``(seed, category, epoch)`` (shuffling, clutter-cell
draws), so a run resumed after epoch k ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ntdmbench.baselines.nemo.category import CategoryModel
from ntdmbench.baselines.nemo.labels import official_visibility, original_view
from ntdmbench.datasets.records import Sample
from ntdmbench.models import contrastive as ct
from ntdmbench.models.camera import Camera
from ntdmbench.models.inputs import image_batch
from ntdmbench.models.predictor import InputSpec

STRIDE = 8
LR_SCHEDULES = ("angtian", "wufeim", "constant")


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    accumulate: int
    temperature: float
    clutter_weight: float
    clutter_reg: float
    near_px: float  # exclusion radius in pixels at viewport 3000 (scaled by focal_px / 3000)
    num_noise: int
    noise_outside_box: bool
    lr_schedule: str = "angtian"


@dataclass
class Prepared:
    """One training crop, preprocessed once: normalised image, vertex pixels/visibility, clutter cells."""

    image: torch.Tensor  # (3, H, W)
    points: torch.Tensor  # (V, 2) pixel x, y
    visible: torch.Tensor  # (V,) bool
    allowed: torch.Tensor  # (h, w) bool: cells clutter may be drawn from
    near_px: float
    mesh: int


def mesh_index(sample: Sample, n_meshes: int) -> int:
    """The sample's mesh: its CAD subtype in multi mode (1-based ``cad_index``), else the single cuboid."""
    if n_meshes == 1:
        return 0
    if sample.cad_index is None or not 1 <= sample.cad_index <= n_meshes:
        raise ValueError(f"sample {sample.id}: cad_index {sample.cad_index} outside 1..{n_meshes} (multi-cuboid mode)")
    return sample.cad_index - 1


def prepare(sample: Sample, model: CategoryModel, spec: InputSpec, settings: TrainSettings) -> Prepared:
    if sample.pose is None:
        raise ValueError(f"sample {sample.id}: NeMo training needs a pose")
    image = image_batch([sample], spec)[0][0]
    H, W = image.shape[-2:]
    h, w = -(-H // STRIDE), -(-W // STRIDE)
    k = mesh_index(sample, len(model.meshes))
    verts, faces = model.mesh_tensors(k)
    camera = Camera.from_poses([sample.pose]).to(torch.float32)
    points = camera.project(verts)
    visible = official_visibility(model.meshes[k].vertices, faces, original_view(sample))[None]
    occupied = torch.zeros(h * w, dtype=torch.bool)
    occupied[ct.vertex_cells(points, STRIDE, (h, w))[0]] = True
    allowed = ~occupied.view(h, w)
    if settings.noise_outside_box and sample.bbox is not None:
        x0, y0, x1, y1 = sample.bbox
        cy = (torch.arange(h) + 0.5) * STRIDE
        cx = (torch.arange(w) + 0.5) * STRIDE
        inside = ((cy >= y0) & (cy <= y1))[:, None] & ((cx >= x0) & (cx <= x1))[None, :]
        allowed &= ~inside
    near_px = settings.near_px * float(camera.focal_px[0]) / 3000.0
    return Prepared(image, points[0], visible[0], allowed, near_px, k)


def _stack(items: Sequence[Prepared]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images padded bottom/right to the largest (pixel coordinates unchanged), and the rest stacked."""
    H = max(p.image.shape[1] for p in items)
    W = max(p.image.shape[2] for p in items)
    h, w = -(-H // STRIDE), -(-W // STRIDE)
    pad = torch.nn.functional.pad
    images = torch.stack([pad(p.image, [0, W - p.image.shape[2], 0, H - p.image.shape[1]]) for p in items])
    allowed = torch.stack([pad(p.allowed, [0, w - p.allowed.shape[1], 0, h - p.allowed.shape[0]]) for p in items])
    return images, torch.stack([p.points for p in items]), torch.stack([p.visible for p in items]), allowed


def epoch_batches(items: Sequence[Prepared], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffled batches, each from one mesh; a trailing batch of one joins the previous (batch norm)."""
    out = []
    order = torch.randperm(len(items), generator=generator).tolist()
    for k in sorted({p.mesh for p in items}):
        idx = [i for i in order if items[i].mesh == k]
        chunks = [idx[b:b + batch_size] for b in range(0, len(idx), batch_size)]
        if len(chunks) > 1 and len(chunks[-1]) == 1:
            chunks[-2].extend(chunks.pop())
        out.extend(chunks)
    perm = torch.randperm(len(out), generator=generator).tolist()
    return [out[i] for i in perm]


def epoch_seed(seed: int, category_index: int, epoch: int) -> int:
    return (seed * 1009 + category_index) * 100_003 + epoch


def epoch_lr(settings: TrainSettings, epoch: int) -> float:
    """The learning rate of 0-based ``epoch`` under ``settings.lr_schedule`` (module docstring)."""
    if settings.lr_schedule == "angtian":
        return settings.lr * (0.2 if epoch >= 1 else 1.0)
    if settings.lr_schedule == "wufeim":
        return settings.lr * 0.2 ** sum(epoch >= m for m in (settings.epochs // 2, settings.epochs * 3 // 4))
    if settings.lr_schedule == "constant":
        return settings.lr
    raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {settings.lr_schedule!r}")


def train_category(model: CategoryModel, items: Sequence[Prepared], settings: TrainSettings, *, seed: int,
                   category_index: int, start_state: dict[str, Any] | None,
                   save_state: Callable[[Callable[[], dict[str, Any]], bool], None], bar,
                   device: str = "cpu") -> dict[str, Any]:
    """Train ``model`` in place from ``start_state`` (a state this function saved) to ``settings.epochs``.

    After every epoch ``save_state(get_state, last)`` may save ``get_state()``, the resumable state (built
    only when asked: it is large); ``bar`` is a tqdm bar advanced per
    batch. Returns a summary (epochs, last epoch's mean losses).
    """
    if not items:
        raise ValueError("no training samples")
    model.to(device)
    params = list(model.net.parameters())
    optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    start, summary, iteration = 0, {}, 0
    if start_state is not None:
        model.load_state_dict(start_state["model"])
        optimizer.load_state_dict(start_state["optimizer"])
        start, summary, iteration = start_state["epoch"], start_state["summary"], start_state["iteration"]
        for p, g in zip(params, start_state["grads"]):  # the gradient being accumulated
            p.grad = None if g is None else g.to(device)
    for epoch in range(start, settings.epochs):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(settings, epoch)
        torch.manual_seed(epoch_seed(seed, category_index, epoch))
        generator = torch.Generator().manual_seed(epoch_seed(seed, category_index, epoch))
        totals = {"loss": 0.0, "contrastive": 0.0, "clutter_reg": 0.0}
        batches = epoch_batches(items, settings.batch_size, generator)
        for i, batch in enumerate(batches):
            chosen = [items[j] for j in batch]
            images, points, visible, allowed = (t.to(device) for t in _stack(chosen))
            bank = model.banks[chosen[0].mesh]
            features = model.net(images)
            h, w = features.shape[-2:]
            vertex_features = ct.sample_cells(features, ct.vertex_cells(points, STRIDE, (h, w)))
            clutter_features = ct.sample_cells(features, ct.background_cells(allowed, settings.num_noise, generator))
            near = ct.near_vertex_mask(points, chosen[0].near_px)
            loss, parts = ct.contrastive_loss(vertex_features, visible, clutter_features, bank, near,
                                              settings.temperature, settings.clutter_weight, settings.clutter_reg)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"NeMo loss is {loss.item()} at epoch {epoch + 1}; lower the learning rate")
            loss.backward()
            bank.update(vertex_features, visible, clutter_features)
            if iteration % settings.accumulate == 0:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            iteration += 1
            totals["loss"] += loss.item()
            for key, value in parts.items():
                totals[key] += value
            bar.set_postfix(epoch=f"{epoch + 1}/{settings.epochs}", loss=f"{totals['loss'] / (i + 1):.4f}")
            bar.update()
        summary = {"epochs": epoch + 1, **{k: v / len(batches) for k, v in totals.items()}}
        save_state(lambda done=epoch + 1, summary=summary, iteration=iteration: {
            "epoch": done, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "summary": summary,
            "iteration": iteration, "grads": [None if p.grad is None else p.grad.detach().cpu() for p in params],
        }, epoch + 1 == settings.epochs)
    model.eval()
    return summary
