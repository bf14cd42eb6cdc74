"""One NeMo category model: a feature network, its cuboid meshes and one feature bank per mesh.

NeMo trains one of these per category (``docs/reference.md`` §NeMo training): in
"single" mode one cuboid over all the category's CAD models, in "multi" mode one per CAD model, all
sharing the network. The meshes travel inside the checkpoint, so inference needs no CAD folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ntdmbench.datasets.records import DataError
from ntdmbench.models.backbone import FeatureNet
from ntdmbench.models.contrastive import FeatureBank
from ntdmbench.models.meshes import Mesh, nemo_cuboids, read_off


def cad_meshes(cad_root: str | Path, category: str) -> list[Mesh]:
    """The category's CAD models ``{cad_root}/{category}/NN.off`` in subtype order (NeMo keeps names
    shorter than 7 characters, i.e. ``NN.off``)."""
    folder = Path(cad_root) / category
    files = sorted(p for p in folder.glob("*.off") if len(p.name) < 7)
    if not files:
        raise DataError(f"{folder}: no CAD models (NN.off) for category {category!r}")
    return [read_off(p) for p in files]


def category_cuboids(cad_root: str | Path, category: str, mode: str, number_vertices: int,
                     coverage: float = 0.99) -> list[Mesh]:
    """NeMo's SingleCuboid / MultiCuboid meshes of a category, built from its CAD models."""
    return nemo_cuboids(cad_meshes(cad_root, category), mode, number_vertices, coverage)


class CategoryModel(nn.Module):
    """Network + meshes + banks of one category; ``banks[k]`` holds the features of ``meshes[k]``'s vertices."""

    def __init__(self, meshes: list[Mesh], depth: int = 50, feature_dim: int = 128, n_clutter: int = 2560,
                 momentum: float = 0.9, generator: torch.Generator | None = None):
        super().__init__()
        if not meshes:
            raise ValueError("a NeMo category model needs at least one mesh")
        self.net = FeatureNet(depth, feature_dim)
        self.depth = depth
        self.meshes = [Mesh(np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64))
                       for m in meshes]
        self.banks = nn.ModuleList(FeatureBank(len(m.vertices), feature_dim, n_clutter, momentum, generator)
                                   for m in self.meshes)

    def mesh_tensors(self, index: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        return self.meshes[index].torch(torch.float32, device)

    def export(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (plain tensors and arrays, no pickled classes)."""
        return {
            "depth": self.depth, "feature_dim": self.net.feature_dim,
            "net": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "meshes": [{"vertices": m.vertices, "faces": m.faces} for m in self.meshes],
            "memory": [b.memory.detach().cpu() for b in self.banks],
            "pointer": [int(b.pointer) for b in self.banks],
            "momentum": self.banks[0].momentum,
        }

    @classmethod
    def rebuild(cls, state: dict[str, Any]) -> CategoryModel:
        """Inverse of ``export``."""
        meshes = [Mesh(np.asarray(m["vertices"]), np.asarray(m["faces"])) for m in state["meshes"]]
        model = cls(meshes, state["depth"], state["feature_dim"], 0, state["momentum"])
        model.net.load_state_dict(state["net"])
        model.banks = nn.ModuleList(
            FeatureBank.from_memory(memory, len(mesh.vertices), state["momentum"], pointer)
            for memory, mesh, pointer in zip(state["memory"], meshes, state["pointer"]))
        return model
