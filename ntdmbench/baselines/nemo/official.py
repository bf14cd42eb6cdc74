"""Loading NeMo's released checkpoints into a ``CategoryModel`` (``docs/reference.md`` §NeMo checkpoints).

The original ``saved_model_{cate}_{epoch}.pth`` is a dict ``{state, memory, timestamp, args}``:
``state`` is the DataParallel ``state_dict`` of ``NetE2E`` (keys ``module.net.extractor.0.weight`` ...
``module.out_layer.weight``), ``memory`` a list with one ``[n_vert + 2560, 128]`` tensor per mesh, ``args``
the training argparse Namespace (``type_`` = category, ``mesh_d`` = single/multi, ``num_noise``,
``max_group``). The refactor's ``model_{epoch}.pth`` has ``state``, ``memory`` as one tensor, ``lr``,
``epoch``, ``cfg``. Neither holds the meshes: they come from NeMo's ``CAD_single`` / ``CAD_multi``
folder (used as is, so vertex order matches the bank rows) or are rebuilt from a raw ``CAD`` folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ntdmbench.baselines.nemo.category import CategoryModel, cad_meshes
from ntdmbench.datasets.records import DataError
from ntdmbench.models.backbone import strip_module_prefix
from ntdmbench.models.contrastive import FeatureBank
from ntdmbench.models.meshes import Mesh, nemo_cuboids

DEFAULT_CLUTTER = 5 * 512
FILE_CATEGORY = re.compile(r"saved_model_([a-z]+)_\d+")


def is_official(payload: Any) -> bool:
    """True for NeMo's own layouts (``state`` and ``memory``; this project's checkpoints say ``model``)."""
    return isinstance(payload, dict) and "state" in payload and "memory" in payload and "model" not in payload


def _arg(payload: dict[str, Any], name: str) -> Any:
    args = payload.get("args")
    return args.get(name) if isinstance(args, dict) else getattr(args, name, None)


def official_category(payload: dict[str, Any], path: Path) -> str | None:
    """The category from ``args.type_``, else from a ``saved_model_{cate}_{epoch}`` file name."""
    category = _arg(payload, "type_")
    if category:
        return str(category)
    match = FILE_CATEGORY.search(path.name)
    return match.group(1) if match else None


def backbone_depth(state: dict[str, torch.Tensor]) -> int:
    """ResNet depth from the layer3 (``net.extractor1``) block count and the block type."""
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("net.extractor1.")}
    bottleneck = any(k.startswith("net.extractor1.0.conv3.") for k in state)
    depth = {(2, False): 18, (6, False): 34, (6, True): 50, (23, True): 101}.get((len(blocks), bottleneck))
    if depth is None:
        raise DataError(f"official NeMo checkpoint: unrecognised backbone ({len(blocks)} layer3 blocks)")
    return depth


def official_meshes(mesh_root: str | Path, category: str, memory: list[torch.Tensor], n_clutter: int,
                    number_vertices: int) -> list[Mesh]:
    """Meshes whose vertices match the bank rows: ``{mesh_root}/{category}/NN.off`` as is when the counts
    fit (NeMo's CAD_single/CAD_multi), else cuboids rebuilt from those files as raw CAD models."""
    meshes = cad_meshes(mesh_root, category)
    wanted = [len(m) - n_clutter for m in memory]
    if [len(m.vertices) for m in meshes] == wanted:
        return meshes
    rebuilt = nemo_cuboids(meshes, "single" if len(memory) == 1 else "multi", number_vertices)
    if [len(m.vertices) for m in rebuilt] != wanted:
        raise DataError(f"{Path(mesh_root) / category}: meshes have {[len(m.vertices) for m in meshes]} vertices "
                        f"(cuboids built from them {[len(m.vertices) for m in rebuilt]}), the checkpoint's banks "
                        f"{wanted}; point mesh_root at NeMo's CAD_single or CAD_multi folder")
    return rebuilt


def load_official(payload: dict[str, Any], path: Path, mesh_root: str | Path | None, category: str | None,
                  number_vertices: int = 1000, momentum: float = 0.9) -> tuple[str, CategoryModel]:
    """``(category, model)`` from an official checkpoint payload read from ``path``."""
    category = official_category(payload, path) or category
    if not category:
        raise DataError(f"{path}: the checkpoint does not name its category; pass category=NAME")
    if mesh_root is None:
        raise DataError(f"{path}: official NeMo checkpoints hold no meshes; pass mesh_root=CAD_single folder")
    memory = payload["memory"]
    memory = [m.detach().float().cpu() for m in (memory if isinstance(memory, (list, tuple)) else [memory])]
    noise, group = _arg(payload, "num_noise"), _arg(payload, "max_group")
    n_clutter = int(noise) * int(group) if noise is not None and group is not None else DEFAULT_CLUTTER
    state = strip_module_prefix(payload["state"])
    meshes = official_meshes(mesh_root, category, memory, n_clutter, number_vertices)
    model = CategoryModel(meshes, backbone_depth(state), state["out_layer.weight"].shape[0], 0, momentum)
    model.net.load_state_dict(state)
    model.banks = torch.nn.ModuleList(FeatureBank.from_memory(m, len(mesh.vertices), momentum)
                                      for m, mesh in zip(memory, meshes))
    model.eval()
    return category, model
