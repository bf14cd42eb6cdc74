"""The ResNet baselines of the paper's Tables 1-2.

- ``resnet50-pose`` (NeMo's "Res50-General", ``docs/reference.md`` §Pose as classification): one
  network for all categories whose ``fc`` gives 3 x 41 scores, cross-entropy per angle over the
  published bins (``bins``), SGD lr 0.01, step 20, 90 epochs, batch 32, 256x256 input, test-time flip
  averaging.
- ``resnet50-class``: PyTorch's reference ImageNet classifier recipe (SGD lr 0.1, momentum 0.9, weight
  decay 1e-4, step 30, 90 epochs, batch 256, 224 input, random-resized-crop and flip), top-1 over the
  trained categories.

Both resize the whole object crop to a square (as NeMo's ``PASCAL3D_NeMo_cls`` pipeline does with its
512x512 crops) rather than centre-cropping, which would cut off the ends of elongated objects.
torchvision's adaptive average pool is NeMo's ``AvgPool2d(8)`` at 256 input and keeps other sizes
working. Training starts from ImageNet as the paper's baselines did (``backbone_weights``: ``imagenet``
= torchvision's ``ResNet{depth}_Weights.IMAGENET1K_V1``, ``ResNet50_Weights.IMAGENET1K_V1`` at the paper's
depth; a local torchvision state dict; or ``none``), read only by ``fit``. Depth and input size are
settings so CPU runs can use small networks; the checkpoint fixes them (``load`` rebuilds the network it
describes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ntdmbench.baselines import bins
from ntdmbench.baselines.sgd_loop import train_epochs
from ntdmbench.baselines.single_network import SingleNetwork
from ntdmbench.models.training import Resume, ids_by_category
from ntdmbench.datasets.records import CATEGORIES, DataError, Prediction, Sample
from ntdmbench.models.backbone import IMAGENET, RESNETS, resnet_state_dict
from ntdmbench.models.inputs import image_batch
from ntdmbench.models.predictor import (
    BasePredictor,
    Capability,
    InputSpec,
    coerce_numbers,
)


def load_torchvision_resnet(net: nn.Module, state: dict[str, torch.Tensor], depth: int, source: str) -> None:
    """Copy a torchvision ResNet state dict (e.g. ImageNet weights) into ``net``, except ``fc``."""
    own = net.state_dict()
    wanted = [k for k in own if not k.startswith("fc.")]
    bad = [k for k in wanted if k not in state or state[k].shape != own[k].shape]
    if bad:
        raise DataError(f"{source}: not a torchvision ResNet-{depth} state dict ({len(bad)} tensors missing "
                        f"or of another shape, e.g. {bad[0]})")
    net.load_state_dict({k: state[k] for k in wanted}, strict=False)


def build_resnet(depth: int, num_outputs: int) -> nn.Module:
    """torchvision ResNet-``depth`` (random weights) with a new ``fc`` of ``num_outputs``."""
    import torchvision

    if depth not in RESNETS:
        raise ValueError(f"depth {depth}: choose one of {sorted(RESNETS)}")
    net = getattr(torchvision.models, RESNETS[depth])(weights=None)
    net.fc = nn.Linear(net.fc.in_features, num_outputs)
    return net


@dataclass
class _ResNetBaseline(SingleNetwork, BasePredictor):
    """Shared settings, network building, checkpoint state and the SGD training loop."""

    depth: int = 50
    image_size: int = 256
    epochs: int = 90
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step: int = 20
    lr_gamma: float = 0.1
    backbone_weights: str | None = IMAGENET  # "imagenet", a local torchvision state dict, or None
    device: str = field(default="cpu", repr=False)

    arch: ClassVar[tuple[str, ...]] = ("depth", "image_size")  # fixed by the checkpoint

    def __post_init__(self) -> None:
        coerce_numbers(self)
        if self.depth not in RESNETS:
            raise ValueError(f"depth {self.depth}: choose one of {sorted(RESNETS)}")
        for key in ("image_size", "epochs", "batch_size", "lr_step"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r}: must be a positive integer")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr!r}: must be positive")
        self.input_spec = InputSpec(image_size=(self.image_size, self.image_size))
        self._net: nn.Module | None = None  # built on first use: a checkpoint may bring another architecture

    @property
    def net(self) -> nn.Module:
        if self._net is None:
            self._build()
        return self._net

    def _build(self) -> None:
        self.input_spec = InputSpec(image_size=(self.image_size, self.image_size))
        self._net = build_resnet(self.depth, self.num_outputs()).to(self.device)

    def fit(self, dataset, *, categories: Sequence[str], resume: Resume | None = None, device: str | None = None,
            seed: int = 0, progress: bool = True) -> None:
        self.device = device or self.device
        torch.manual_seed(seed)  # the initial weights follow the seed, not whatever ran before
        self._build()
        if (start := resnet_state_dict(self.backbone_weights, self.depth)) is not None:
            load_torchvision_resnet(self.net, start, self.depth, str(self.backbone_weights))
        groups = ids_by_category(dataset, categories)
        ids = [i for c in categories for i in groups[c]]
        optimizer = torch.optim.SGD(self.net.parameters(), lr=self.lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        train_epochs(self.net, optimizer, dataset=dataset, ids=ids, epochs=self.epochs, batch_size=self.batch_size,
                     lr_factor=lambda epoch, _it: self.lr_gamma ** (epoch // self.lr_step), step=self.loss,
                     seed=seed, resume=resume, settings=self.config(), progress=progress, desc=self.name)
        self.net.eval()


@dataclass
class ResNetPosePredictor(_ResNetBaseline):
    """Viewpoint as three 41-way classifications (azimuth, elevation, theta) from one ResNet, all
    categories jointly; test-time flip averaging of the scores."""

    name = "resnet50-pose"
    capabilities = frozenset({Capability.POSE})
    paper = ("ResNet-50 pose as classification (Res50-General): NeMo ResNetGeneral, 41 bins per angle, "
             "Tulsiani & Malik binning")
    num_bins: int = bins.NUM_BINS
    decoder: str = "centre"
    flip_test: bool = True

    arch: ClassVar[tuple[str, ...]] = ("depth", "image_size", "num_bins")

    def __post_init__(self) -> None:
        bins.check_decoder(self.decoder)
        if self.num_bins < 2:
            raise ValueError(f"num_bins={self.num_bins!r}: need at least 2")
        super().__post_init__()

    def num_outputs(self) -> int:
        return 3 * self.num_bins

    def loss(self, samples: list[Sample]) -> torch.Tensor:
        images, _ = image_batch(samples, self.input_spec, self.device)
        targets = torch.stack([
            bins.encode(torch.tensor(s.pose.angles()), self.num_bins) if s.pose is not None
            else torch.full((3,), self.num_bins, dtype=torch.long)  # no pose: ignored, as the published ignore_index
            for s in samples
        ]).to(self.device)
        logits = self.net(images)
        return F.cross_entropy(logits.reshape(-1, self.num_bins), targets.reshape(-1), ignore_index=self.num_bins)

    @torch.inference_mode()
    def predict(self, batch: Sequence[Sample]) -> list[Prediction]:
        self.net.eval()
        images, _ = image_batch(batch, self.input_spec, self.device)
        logits = self.net(images)
        if self.flip_test:
            logits = (logits + bins.flip_logits(self.net(images.flip(-1)), self.num_bins)) / 2
        angles = bins.decode_logits(logits.cpu(), self.num_bins, self.decoder).tolist()
        return [Prediction(id=s.id, azimuth=a, elevation=e, theta=t) for s, (a, e, t) in zip(batch, angles)]


@dataclass
class ResNetClassPredictor(_ResNetBaseline):
    """A ResNet classifier over the trained categories (top-1), trained with PyTorch's ImageNet recipe."""

    name = "resnet50-class"
    capabilities = frozenset({Capability.CLASS})
    paper = "ResNet-50 classifier, PyTorch reference ImageNet training recipe"
    image_size: int = 224
    batch_size: int = 256
    lr: float = 0.1
    lr_step: int = 30
    augment: bool = True
    crop_scale: float = 0.08  # smallest crop area of RandomResizedCrop, as a fraction of the image
    categories: tuple[str, ...] = CATEGORIES

    arch: ClassVar[tuple[str, ...]] = ("depth", "image_size", "categories")

    def __post_init__(self) -> None:
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"crop_scale={self.crop_scale!r}: must lie in (0, 1]")
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown or not self.categories:
            raise ValueError(f"categories={self.categories!r}: not PASCAL3D+ categories")
        self.categories = tuple(self.categories)
        super().__post_init__()

    def num_outputs(self) -> int:
        return len(self.categories)

    def fit(self, dataset, *, categories: Sequence[str], **kwargs) -> None:
        self.categories = tuple(categories)  # the classifier's outputs are the trained categories
        super().fit(dataset, categories=categories, **kwargs)

    def _augmented(self, samples: list[Sample]) -> torch.Tensor:
        """Random-resized crop (area ``crop_scale``..1, aspect 3/4..4/3) and horizontal flip, normalised."""
        from torchvision.transforms import v2

        mean = torch.tensor(self.input_spec.mean).view(3, 1, 1)
        std = torch.tensor(self.input_spec.std).view(3, 1, 1)
        out = []
        for s in samples:
            x = torch.from_numpy(s.load_image().copy()).permute(2, 0, 1).float().div_(255)
            top, left, h, w = v2.RandomResizedCrop.get_params(x, scale=[self.crop_scale, 1.0], ratio=[3 / 4, 4 / 3])
            x = F.interpolate(x[None, :, top:top + h, left:left + w], size=self.input_spec.image_size,
                              mode="bilinear", align_corners=False)[0]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            out.append((x - mean) / std)
        return torch.stack(out).to(self.device)

    def loss(self, samples: list[Sample]) -> torch.Tensor:
        if self.augment:
            images = self._augmented(samples)
        else:
            images, _ = image_batch(samples, self.input_spec, self.device)
        unknown = [s.category for s in samples if s.category not in self.categories]
        if unknown:
            raise ValueError(f"category {unknown[0]!r}: not among the trained categories {self.categories}")
        targets = torch.tensor([self.categories.index(s.category) for s in samples], device=self.device)
        return F.cross_entropy(self.net(images), targets)

    @torch.inference_mode()
    def predict(self, batch: Sequence[Sample]) -> list[Prediction]:
        self.net.eval()
        images, _ = image_batch(batch, self.input_spec, self.device)
        probs = self.net(images).softmax(-1).cpu()
        out = []
        for s, p in zip(batch, probs):
            scores = dict(zip(self.categories, p.tolist()))
            out.append(Prediction(id=s.id, category=self.categories[int(p.argmax())], class_scores=scores))
        return out
