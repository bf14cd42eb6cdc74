"""The epoch loop the learned baselines share: seeded shuffling, per-iteration learning rate, a tqdm bar
with the loss, and a resumable state (network, optimiser, epoch) saved at every epoch end.

Each epoch reseeds torch's global generator from ``(seed, epoch)``, so the order, augmentation and any
sampling inside the model depend only on the seed and the epoch: a run resumed after epoch ``k`` ends
with the same weights as one that was never interrupted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ntdmbench.models.training import Resume
from ntdmbench.datasets.base import Dataset
from ntdmbench.datasets.records import Sample


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def batches(ids: Sequence[str], batch_size: int, generator_seed: int) -> list[list[str]]:
    """``ids`` shuffled by the seed and cut into batches; a trailing batch of one joins the previous one
    (batch norm cannot train on a single sample)."""
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(generator_seed)).tolist()
    out = [[ids[i] for i in order[b:b + batch_size]] for b in range(0, len(order), batch_size)]
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2].extend(out.pop())
    return out


def train_epochs(net: nn.Module, optimizer: torch.optim.Optimizer, *, dataset: Dataset, ids: Sequence[str],
                 epochs: int, batch_size: int, lr_factor: Callable[[int, int], float],
                 step: Callable[[list[Sample]], torch.Tensor], seed: int, resume: Resume | None,
                 settings: dict[str, Any], progress: bool, desc: str) -> None:
    """Train ``net`` in place.

    ``step(samples)`` returns the batch loss; ``lr_factor(epoch, iteration)`` scales each group's initial
    learning rate (``iteration`` counts batches from the start of training). ``settings`` is stored with
    the resumable state: a state written under other settings is refused rather than mixed in.
    """
    from tqdm.auto import tqdm

    if not ids:
        raise ValueError(f"{desc}: no training samples")
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    start = 0
    state = resume.load() if resume is not None else None
    if state is not None:
        if state.get("settings") != settings:
            raise ValueError(f"{resume.path}: written with other settings ({state.get('settings')}); "
                             "delete it or train with the same --model-args")
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"]
    per_epoch = len(batches(ids, batch_size, 0))
    bar = tqdm(total=(epochs - start) * per_epoch, desc=desc, unit="batch", disable=not progress)
    for epoch in range(start, epochs):
        net.train()
        torch.manual_seed(epoch_seed(seed, epoch))
        total = 0.0
        for i, chunk in enumerate(batches(ids, batch_size, epoch_seed(seed, epoch))):
            factor = lr_factor(epoch, epoch * per_epoch + i)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
            loss = step([dataset.load(sample_id) for sample_id in chunk])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss is {loss.item()} at epoch {epoch + 1}, batch {i + 1}; "
                                         "lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{total / (i + 1):.4f}")
            bar.update()
        if resume is not None:
            resume.save({"epoch": epoch + 1, "net": net.state_dict(), "optimizer": optimizer.state_dict(),
                         "settings": settings})
    bar.close()
