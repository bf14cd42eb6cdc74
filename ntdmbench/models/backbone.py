"""NeMo's feature extractor (``ResNetExt``): a ResNet with a U-Net decoder to stride 8, then a 1x1 head,
and the ImageNet starting weights of every ResNet-based model.

Shared by NeMo and NTDM. The encoder's submodule names follow the official ``NetE2E`` (``net.extractor``,
``net.extractor1``, ``net.extractor2``); the decoder's convolutions have no bias (each is followed by batch
norm, which absorbs one), so official checkpoints load through ``baselines/nemo/official.py``, which
renames the decoder and folds its biases. ``depth`` 18/34 give a CPU-sized network with the same
structure (decoder widths scale with the ResNet's channel counts).

Starting weights (``backbone_weights``, one setting of NeMo, NTDM, the ResNet baselines and the
Mask R-CNN): ``"imagenet"`` is torchvision's ``ResNet{depth}_Weights.IMAGENET1K_V1`` (the weights
``pretrained=True`` gave the published code), read through torchvision's weights API from the torch hub
cache and downloaded there on a connected machine; a path loads a local state dict in torchvision's
layout; ``None`` / ``"none"`` starts from random weights. They are read only when training starts, never
to rebuild a model from its checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ntdmbench.datasets.records import DataError

STRIDE = 8
RESNETS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101"}
IMAGENET = "imagenet"


class DoubleConv(nn.Module):
    """(conv3x3 - BN - ReLU) x 2."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None):
        super().__init__()
        mid = mid_channels or out_channels
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Up(nn.Module):
    """x2 bilinear upsample (align_corners=True), pad to the skip's size, concatenate, DoubleConv."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConv(in_channels, out_channels, mid_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class StemMaxPool(nn.MaxPool2d):
    """The ResNet stem's 3x3, stride 2, padding 1 max pool. Without autograd it is taken as the maximum of strided
    slices, the same values 5x faster on CPU than ``max_pool2d`` (11 vs 2 ms on the 64 x 128 x 336 map of a 256 x 672
    crop); with autograd it is ``max_pool2d``, whose gradient goes to one input of a tie, not split between them."""

    def __init__(self):
        super().__init__(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return super().forward(x)
        h, w = (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2
        p = F.pad(x, [1, 1, 1, 1], value=float("-inf"))
        rows = torch.maximum(torch.maximum(p[..., 0:2 * h:2, :], p[..., 1:2 * h + 1:2, :]), p[..., 2:2 * h + 2:2, :])
        return torch.maximum(torch.maximum(rows[..., 0:2 * w:2], rows[..., 1:2 * w + 1:2]), rows[..., 2:2 * w + 2:2])


class ResNetExt(nn.Module):
    """ResNet conv1..layer4 with a decoder back to the layer2 (stride 8) resolution."""

    def __init__(self, depth: int = 50):
        super().__init__()
        import torchvision

        if depth not in RESNETS:
            raise ValueError(f"backbone depth {depth}: choose one of {sorted(RESNETS)}")
        r = getattr(torchvision.models, RESNETS[depth])(weights=None)
        c2, c3, c4 = r.layer2[-1].conv1.in_channels, r.layer3[-1].conv1.in_channels, r.layer4[-1].conv1.in_channels
        self.extractor = nn.Sequential(r.conv1, r.bn1, r.relu, StemMaxPool(), r.layer1, r.layer2)
        self.extractor1, self.extractor2 = r.layer3, r.layer4
        self.upsample0 = DoubleConv(c4, c3)
        self.upsample1 = Up(c4, c3, c2)
        self.upsample2 = Up(2 * c2, c2, c2 // 2)
        self.out_channels = c2 // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = self.extractor(x)
        x3 = self.extractor1(x2)
        x4 = self.upsample0(self.extractor2(x3))
        return self.upsample2(self.upsample1(x4, x3), x2)


class FeatureNet(nn.Module):
    """Image [B,3,H,W] (ImageNet-normalised) -> unit-norm features [B, d, ceil(H/8), ceil(W/8)]."""

    stride = STRIDE

    def __init__(self, depth: int = 50, feature_dim: int = 128):
        super().__init__()
        self.net = ResNetExt(depth)
        self.out_layer = nn.Linear(self.net.out_channels, feature_dim)
        self.feature_dim = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        if pad_h or pad_w:
            images = F.pad(images, [0, pad_w, 0, pad_h])
        x = self.net(images)
        x = F.conv2d(x, self.out_layer.weight[..., None, None], self.out_layer.bias)
        return F.normalize(x, dim=1)


def pretrained(spec: str | Path | None) -> bool:
    """Whether ``backbone_weights`` names starting weights (``None``, ``""`` and ``"none"`` do not)."""
    return spec is not None and str(spec).strip().lower() not in ("", "none", "null")


def imagenet_weights(depth: int):
    """torchvision's ImageNet weights enum member for a ResNet depth (``IMAGENET1K_V1``, what the
    published code's ``pretrained=True`` loaded)."""
    import torchvision

    if depth not in RESNETS:
        raise ValueError(f"depth {depth}: choose one of {sorted(RESNETS)}")
    return getattr(torchvision.models, f"ResNet{depth}_Weights").IMAGENET1K_V1


def resnet_state_dict(spec: str | Path | None, depth: int) -> dict[str, torch.Tensor] | None:
    """The torchvision-layout ResNet state dict ``spec`` names (see the module docstring), or ``None``."""
    if not pretrained(spec):
        return None
    if str(spec).strip().lower() == IMAGENET:
        weights = imagenet_weights(depth)
        try:
            return weights.get_state_dict(progress=False)
        except Exception as exc:  # no network, proxy, truncated file: one line saying what to do
            target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            raise DataError(f"cannot download {weights.url} ({type(exc).__name__}); place that file at {target} "
                            f"or pass backbone_weights=PATH (backbone_weights=none trains from scratch)") from None
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"{path}: backbone weights not found (backbone_weights=imagenet|PATH|none)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: cannot read backbone weights ({type(exc).__name__}: {exc})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise DataError(f"{path}: backbone weights must be a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_resnet_weights(net: ResNetExt, state: dict[str, torch.Tensor], source: str = "backbone weights") -> None:
    """Initialise the encoder of ``net`` from a torchvision ResNet state dict (the decoder stays random)."""
    stems = {"conv1": "extractor.0", "bn1": "extractor.1", "layer1": "extractor.4", "layer2": "extractor.5",
             "layer3": "extractor1", "layer4": "extractor2"}
    renamed = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in stems:
            renamed[f"{stems[head]}.{rest}"] = value
    own = net.state_dict()
    missing = [k for k in own if k.startswith("extractor") and k not in renamed]
    wrong = [k for k, v in renamed.items() if k in own and own[k].shape != v.shape]
    if not renamed or missing or wrong:
        raise DataError(f"{source}: not a torchvision ResNet state dict for this depth "
                        f"({len(missing)} encoder tensors missing, {len(wrong)} of another shape)")
    net.load_state_dict(renamed, strict=False)


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel's ``module.`` prefix (official checkpoints were saved from DataParallel)."""
    return {k.removeprefix("module."): v for k, v in state.items()}
