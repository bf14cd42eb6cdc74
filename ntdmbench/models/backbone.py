"""NeMo's feature extractor (``ResNetExt``): a ResNet with a U-Net decoder to stride 8, then a 1x1 head.

Shared by NeMo and NTDM. Submodule names follow the official ``NetE2E`` (``net.extractor``,
``net.extractor1``, ``net.extractor2``, ``net.upsample{0,1,2}``, ``out_layer``) so official checkpoints
load by name once the DataParallel ``module.`` prefix is stripped. ``depth`` 18/34 give a CPU-sized
network with the same structure (decoder widths scale with the ResNet's channel counts).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 8
RESNETS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101"}


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


class ResNetExt(nn.Module):
    """ResNet conv1..layer4 with a decoder back to the layer2 (stride 8) resolution."""

    def __init__(self, depth: int = 50):
        super().__init__()
        import torchvision

        if depth not in RESNETS:
            raise ValueError(f"backbone depth {depth}: choose one of {sorted(RESNETS)}")
        r = getattr(torchvision.models, RESNETS[depth])(weights=None)
        c2, c3, c4 = r.layer2[-1].conv1.in_channels, r.layer3[-1].conv1.in_channels, r.layer4[-1].conv1.in_channels
        self.extractor = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2)
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

    def __init__(self, depth: int = 50, feature_dim: int = 128, weights: str | Path | None = None):
        super().__init__()
        self.net = ResNetExt(depth)
        self.out_layer = nn.Linear(self.net.out_channels, feature_dim)
        self.feature_dim = feature_dim
        if weights:
            load_resnet_weights(self.net, weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        if pad_h or pad_w:
            images = F.pad(images, [0, pad_w, 0, pad_h])
        x = self.net(images)
        x = F.conv2d(x, self.out_layer.weight[..., None, None], self.out_layer.bias)
        return F.normalize(x, dim=1)


def load_resnet_weights(net: ResNetExt, path: str | Path) -> None:
    """Initialise the encoder from a local torchvision ResNet state dict (no downloads on our machines)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: backbone weights not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    stems = {"conv1": "extractor.0", "bn1": "extractor.1", "layer1": "extractor.4", "layer2": "extractor.5",
             "layer3": "extractor1", "layer4": "extractor2"}
    renamed = {}
    for key, value in state.items():
        head, _, rest = key.removeprefix("module.").partition(".")
        if head in stems:
            renamed[f"{stems[head]}.{rest}"] = value
    missing = [k for k in net.state_dict() if k.startswith("extractor") and k not in renamed]
    if not renamed or missing:
        raise ValueError(f"{path}: not a torchvision ResNet state dict for this depth "
                         f"({len(missing)} encoder tensors missing)")
    net.load_state_dict(renamed, strict=False)


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel's ``module.`` prefix (official checkpoints were saved from DataParallel)."""
    return {k.removeprefix("module."): v for k, v in state.items()}
