"""Untrained checkpoints with the architectures of the committed timing reports, for ``ntdmbench bench``.

Inference cost does not depend on the weights (the optimisation always runs its 300 steps), and no
machine of this project can download or keep trained ones, so timing runs (the GPU machine's too)
build these first::

    python benchmarks/timing_checkpoints.py OUT   # OUT/nemo_car.pth, OUT/ntdm_quick.pth

- ``nemo_car.pth``: one car model, ResNet50 features (128-d), NeMo's single car cuboid (1000 requested
  vertices on a car-sized box: 1118), clutter bank of 2560.
- ``ntdm_quick.pth``: the ``quick`` preset's architecture (ResNet18, 642-vertex template, texture 32,
  MLP 64), four categories of four shape latents each.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ntdmbench.baselines.nemo.category import CategoryModel as NeMoCategory
from ntdmbench.baselines.nemo.model import NeMoPredictor
from ntdmbench.models import meshes
from ntdmbench.models.backbone import FeatureNet
from ntdmbench.ntdm.deformable import DeformableMesh
from ntdmbench.ntdm.model import NTDMPredictor
from ntdmbench.ntdm.textures import NeuralTexture
from ntdmbench.ntdm.training import BackgroundBank

CAR_BOX = np.array([[-0.26, 0.26], [-0.56, 0.56], [-0.2, 0.2]])
"""A car-sized coverage box (CAD units): at distance 5 and focal 3000 it spans most of a 256x672 car crop."""


def nemo_checkpoint(path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    model = NeMoPredictor(backbone_weights=None)
    model.models = {"car": NeMoCategory([meshes.cuboid(CAR_BOX, 1000)], 50, 128, 2560, generator=gen).eval()}
    model.save(path)


def ntdm_checkpoint(path: Path) -> None:
    torch.manual_seed(0)
    model = NTDMPredictor(backbone_weights=None, backbone_depth=18, template_level=3, mlp_hidden=64, texture_size=32)
    model.backbone = FeatureNet(18, model.feature_dim).eval()
    for category in ("aeroplane", "bicycle", "bus", "car"):
        mesh = DeformableMesh(4, model.template_level, model.mlp_hidden, model.mlp_layers, model.pe_freqs,
                              init_scale=(0.45, 1.0, 0.35)).eval()
        model.models[category] = model._category_model(mesh, NeuralTexture(7, model.feature_dim, model.texture_size))
    model.bank = BackgroundBank(64, model.feature_dim)
    model.save(path)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/timing-checkpoints")
    out.mkdir(parents=True, exist_ok=True)
    nemo_checkpoint(out / "nemo_car.pth")
    ntdm_checkpoint(out / "ntdm_quick.pth")
    print(out / "nemo_car.pth", out / "ntdm_quick.pth")
