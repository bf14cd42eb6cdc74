"""Checkpoint plumbing of the baselines that are one torch network, ``net``, whose shape a few settings
fix (``arch``): the checkpoint holds those settings and the weights, and loading rebuilds the network
they describe before filling it, so a checkpoint trained at other sizes still loads."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn


class SingleNetwork:
    """Mix in before ``BasePredictor``; the model provides ``net`` and ``_build()``."""

    arch: ClassVar[tuple[str, ...]] = ()
    net: nn.Module

    def _build(self) -> None:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The settings less ``device``: where it runs is not part of what a run computes."""
        return {k: v for k, v in super().config().items() if k != "device"}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def state_dict(self) -> dict[str, Any]:
        return {"arch": {k: getattr(self, k) for k in self.arch}, "net": self.net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_arch(state["arch"])
        self._build()
        self.net.load_state_dict(state["net"])

    def _load_arch(self, arch: dict[str, Any]) -> None:
        for key, value in arch.items():  # a tuple setting comes back from the checkpoint as a list
            setattr(self, key, tuple(value) if isinstance(value, list) else value)
