"""Loading NeMo's released checkpoints into a ``CategoryModel`` (``docs/reference.md`` §NeMo checkpoints).

Two layouts, both saved from ``nn.DataParallel(NetE2E)`` (keys start ``module.``):

- Angtian/NeMo (ICLR 2021, ``TrainNeMo.py``), ``saved_model_{cate}_{epoch}.pth``: ``{state, memory,
  timestamp, args}``; ``memory`` is a list with one ``[n_vert + 2560, 128]`` tensor per mesh, ``args`` the
  training argparse Namespace (``type_`` = category, ``mesh_d``, ``num_noise``, ``max_group``).
- wufeim/NeMo (``scripts/train.py``), ``model_{epoch}.pth``: ``{state, memory, lr, epoch, cfg}``; ``memory``
  one tensor, ``cfg`` the config as a dict (``args.cate``, ``model.num_noise``, ``model.max_group``).

The official decoder (``UpsamplingLayer.py``) names its blocks ``upsample0.doubleconv`` and
``upsample{1,2}.doubleconv.doubleconv``, and its convolutions carry biases. Each is followed by batch
norm, so a bias ``b`` is folded exactly into that norm's running mean (``BN(Wx + b)`` with mean ``mu``
equals ``BN(Wx)`` with mean ``mu - b``; in training mode batch norm removes it anyway). The official
test-time forward (``NetE2E.forward_test``) applies the 1x1 head without its bias, so the loaded head's
bias is zero. Neither layout holds the meshes: they come from NeMo's ``CAD_single`` / ``CAD_multi``
folder (used as is, so vertex order matches the bank rows) or are rebuilt from a raw ``CAD`` folder
in the official vertex order.
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
# official decoder block prefix -> this project's (``models/backbone.py``)
DECODER = {"net.upsample0.doubleconv.": "net.upsample0.double_conv.",
           "net.upsample1.doubleconv.doubleconv.": "net.upsample1.conv.double_conv.",
           "net.upsample2.doubleconv.doubleconv.": "net.upsample2.conv.double_conv."}
CONV_TO_NORM = {"0": "1", "3": "4"}  # in each DoubleConv: conv index -> the batch norm after it


def is_official(payload: Any) -> bool:
    """True for NeMo's own layouts (``state`` and ``memory``; this project's checkpoints say ``model``)."""
    return isinstance(payload, dict) and "state" in payload and "memory" in payload and "model" not in payload


def _lookup(tree: Any, *path: str) -> Any:
    for key in path:
        tree = tree.get(key) if isinstance(tree, dict) else getattr(tree, key, None)
        if tree is None:
            return None
    return tree


def _setting(payload: dict[str, Any], angtian: str, wufeim: tuple[str, ...]) -> Any:
    """A training setting from Angtian's ``args`` Namespace, else wufeim's ``cfg`` dict."""
    value = _lookup(payload.get("args"), angtian)
    return value if value is not None else _lookup(payload.get("cfg"), *wufeim)


def official_category(payload: dict[str, Any], path: Path) -> str | None:
    """The category from ``args.type_`` / ``cfg.args.cate``, else from a ``saved_model_{cate}_{epoch}`` name."""
    category = _setting(payload, "type_", ("args", "cate"))
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


def convert_state(state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """An official ``NetE2E`` state dict as this project's ``FeatureNet`` state dict: ``module.`` dropped,
    decoder blocks renamed, decoder conv biases folded into the following batch norm, head bias zero.
    A state already in this project's names passes through (biases aside, nothing to fold)."""
    state = {k: v.detach().float() if v.is_floating_point() else v for k, v in strip_module_prefix(state).items()}
    out: dict[str, torch.Tensor] = {}
    biases: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        prefix = next((p for p in DECODER if key.startswith(p)), None)
        if prefix is None:
            out[key] = value
            continue
        index, _, field = key[len(prefix):].partition(".")
        if index in CONV_TO_NORM and field == "bias":
            biases[DECODER[prefix] + CONV_TO_NORM[index]] = value
        else:
            out[DECODER[prefix] + key[len(prefix):]] = value
    for norm, bias in biases.items():
        mean = f"{norm}.running_mean"
        if mean not in out or out[mean].shape != bias.shape:
            raise DataError(f"{source}: decoder bias of {norm} has no matching batch norm")
        out[mean] = out[mean] - bias
    if "out_layer.weight" not in out:
        raise DataError(f"{source}: no out_layer.weight; not a NeMo NetE2E state dict")
    out["out_layer.bias"] = torch.zeros(out["out_layer.weight"].shape[0])  # forward_test drops it
    return out


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
    noise = _setting(payload, "num_noise", ("model", "num_noise"))
    group = _setting(payload, "max_group", ("model", "max_group"))
    n_clutter = int(noise) * int(group) if noise is not None and group is not None else DEFAULT_CLUTTER
    state = convert_state(payload["state"], path)
    meshes = official_meshes(mesh_root, category, memory, n_clutter, number_vertices)
    model = CategoryModel(meshes, backbone_depth(state), state["out_layer.weight"].shape[0], 0, momentum)
    try:
        missing, unexpected = model.net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        raise DataError(f"{path}: not a NeMo resnetext network ({str(exc).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise DataError(f"{path}: not a NeMo resnetext network ({len(missing)} tensors missing, e.g. "
                        f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})")
    model.banks = torch.nn.ModuleList(FeatureBank.from_memory(m, len(mesh.vertices), momentum)
                                      for m, mesh in zip(memory, meshes))
    model.eval()
    return category, model
