"""``mt-maskrcnn``: the paper's multi-task baseline, torchvision's Mask R-CNN with a pose head.

The paper extends a Mask R-CNN with a pose head that treats pose as classification and trains it end to
end on classes, boxes, amodal masks and poses (§4.1.3). detectron2 cannot be installed from the registry,
so this is torchvision's ``maskrcnn_resnet50_fpn`` design (ResNet-FPN backbone built by
``resnet_fpn_backbone``, any depth, from ImageNet weights as ``maskrcnn_resnet50_fpn(weights_backbone=
ResNet50_Weights.IMAGENET1K_V1)`` starts: ``backbone_weights`` ``imagenet`` (torchvision's
``ResNet{depth}_Weights.IMAGENET1K_V1``), a local torchvision state dict, or ``none`` for random weights
with trainable batch norm, as torchvision builds it without pretrained weights) plus a linear pose
classifier of 3 x 41 bins (``bins``) on the box head's RoI representation, the arrangement of NeMo's
Faster R-CNN viewpoint head (``docs/reference.md`` §Pose as classification). The pose head trains on
positive RoIs (IoU >= 0.5 with a ground-truth box, at most the box sampler's positive quota per image)
like the mask branch, and predicts on the final box. Mask targets are the amodal masks, so the mask
branch learns amodal segmentation.

Prediction is for the main object: the (proposal, class) pair with the highest class probability, which
is the top detection torchvision would return but without the score threshold, so every image gets a
class, a box, a mask and a pose (an image without proposals uses the whole image as its proposal).
``class_scores`` holds each class's best probability over the proposals.

Defaults follow NeMo's Faster R-CNN viewpoint config (SGD lr 0.02, momentum 0.9, weight decay 1e-4,
drops at epochs 30 and 35 of 40, batch 24) with torchvision's sizes (800/1333) and linear warm-up;
depth, image size, proposal and RoI counts are settings so CPU runs can use small ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ntdmbench.baselines import bins
from ntdmbench.baselines.resnet import load_torchvision_resnet
from ntdmbench.baselines.sgd_loop import train_epochs
from ntdmbench.baselines.single_network import SingleNetwork
from ntdmbench.models.training import Resume, ids_by_category
from ntdmbench.datasets.records import CATEGORIES, Prediction, Sample
from ntdmbench.models.backbone import IMAGENET, RESNETS, pretrained, resnet_state_dict
from ntdmbench.models.predictor import BasePredictor, Capability, coerce_numbers


class PoseMaskRCNN(nn.Module):
    """A torchvision ``MaskRCNN`` (``detector``) and a pose classifier on its box-head features."""

    def __init__(self, depth: int, num_classes: int, num_bins: int, min_size: int, max_size: int,
                 proposals_train: int, proposals_test: int, rois_per_image: int, fpn_channels: int,
                 box_representation: int, mask_channels: int, pretrained: bool = False):
        super().__init__()
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.faster_rcnn import (
            FastRCNNPredictor,
            TwoMLPHead,
        )
        from torchvision.models.detection.mask_rcnn import (
            MaskRCNNHeads,
            MaskRCNNPredictor,
        )

        backbone = resnet_fpn(depth, fpn_channels, pretrained)
        self.detector = MaskRCNN(
            backbone, min_size=min_size, max_size=max_size,
            rpn_pre_nms_top_n_train=proposals_train, rpn_post_nms_top_n_train=proposals_train,
            rpn_pre_nms_top_n_test=proposals_test, rpn_post_nms_top_n_test=proposals_test,
            box_batch_size_per_image=rois_per_image,
            box_head=TwoMLPHead(backbone.out_channels * 7 * 7, box_representation),
            box_predictor=FastRCNNPredictor(box_representation, num_classes + 1),
            mask_head=MaskRCNNHeads(backbone.out_channels, (mask_channels,) * 4, 1),
            mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes + 1),
        )
        self.num_bins = num_bins
        self.pose_predictor = nn.Linear(box_representation, 3 * num_bins)

    def _features(self, images: list[torch.Tensor], targets=None):
        det = self.detector
        image_list, targets = det.transform(images, targets)
        return image_list, targets, det.backbone(image_list.tensors)

    def _box_features(self, features, boxes: list[torch.Tensor], image_sizes) -> torch.Tensor:
        heads = self.detector.roi_heads
        return heads.box_head(heads.box_roi_pool(features, boxes, image_sizes))

    def losses(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Mask R-CNN's five losses and ``loss_pose`` (targets carry ``pose_bins`` [N, 3], ``num_bins`` = none)."""
        det = self.detector
        image_list, targets, features = self._features(images, targets)
        proposals, rpn_losses = det.rpn(image_list, features, targets)
        _, roi_losses = det.roi_heads(features, proposals, image_list.image_sizes, targets)
        return {**rpn_losses, **roi_losses, "loss_pose": self._pose_loss(features, proposals, image_list, targets)}

    def _pose_loss(self, features, proposals, image_list, targets) -> torch.Tensor:
        from torchvision.ops import box_iou

        heads = self.detector.roi_heads
        quota = int(heads.fg_bg_sampler.batch_size_per_image * heads.fg_bg_sampler.positive_fraction)
        rois, wanted = [], []
        for boxes, target in zip(proposals, targets):
            boxes = torch.cat([boxes, target["boxes"]])  # ground-truth boxes are positives, as in the box sampler
            matched = heads.proposal_matcher(box_iou(target["boxes"], boxes))
            positive = torch.where(matched >= 0)[0]
            positive = positive[torch.randperm(positive.numel(), device=positive.device)[:quota]]
            rois.append(boxes[positive])
            wanted.append(target["pose_bins"][matched[positive]])
        logits = self.pose_predictor(self._box_features(features, rois, image_list.image_sizes))
        wanted = torch.cat(wanted).reshape(-1)
        if not (wanted != self.num_bins).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits.reshape(-1, self.num_bins), wanted, ignore_index=self.num_bins)

    @torch.no_grad()
    def main_objects(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Per image: ``box`` (original pixels), ``probs`` [C] per class, ``label`` (1-based), ``mask`` [H, W]
        probabilities and ``pose_logits`` [3 * num_bins] of the highest-scoring (proposal, class) pair."""
        from torchvision.models.detection.roi_heads import (
            maskrcnn_inference,
            paste_masks_in_image,
        )
        from torchvision.models.detection.transform import resize_boxes
        from torchvision.ops import clip_boxes_to_image

        det, heads = self.detector, self.detector.roi_heads
        original = [tuple(img.shape[-2:]) for img in images]
        image_list, _, features = self._features(images)
        sizes = image_list.image_sizes
        proposals, _ = det.rpn(image_list, features)
        proposals = [p if len(p) else torch.tensor([[0.0, 0.0, w, h]], device=p.device)
                     for p, (h, w) in zip(proposals, sizes)]
        class_logits, box_regression = heads.box_predictor(self._box_features(features, proposals, sizes))
        probs = class_logits.softmax(-1).split([len(p) for p in proposals])
        decoded = heads.box_coder.decode(box_regression, proposals).split([len(p) for p in proposals])
        boxes, labels, class_probs = [], [], []
        for p, d, size in zip(probs, decoded, sizes):
            foreground = p[:, 1:]
            flat = int(foreground.argmax())
            row, label = divmod(flat, foreground.shape[1])
            boxes.append(clip_boxes_to_image(d[row, label + 1][None], size))
            labels.append(torch.tensor([label + 1], device=p.device))
            class_probs.append(foreground.max(0).values)
        pose_logits = self.pose_predictor(self._box_features(features, boxes, sizes))
        mask_logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(features, boxes, sizes)))
        mask_probs = maskrcnn_inference(mask_logits, labels)
        out = []
        for i, (box, size, orig) in enumerate(zip(boxes, sizes, original)):
            box = resize_boxes(box, list(size), list(orig))
            mask = paste_masks_in_image(mask_probs[i], box, orig)[0, 0]
            out.append({"box": box[0], "probs": class_probs[i], "label": labels[i][0], "mask": mask,
                        "pose_logits": pose_logits[i]})
        return out


def resnet_fpn(depth: int, channels: int, pretrained: bool = False) -> nn.Module:
    """torchvision's ``resnet_fpn_backbone`` with the FPN width a setting (that function fixes it at 256).

    Its rule for batch norm and frozen stages: for ``pretrained`` weights (loaded into ``.body`` by ``fit``)
    frozen batch norm and layers 2-4 trainable; from random weights trainable batch norm and every layer
    trainable.
    """
    import torchvision
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.misc import FrozenBatchNorm2d

    if depth not in RESNETS:
        raise ValueError(f"depth {depth}: choose one of {sorted(RESNETS)}")
    resnet = getattr(torchvision.models, RESNETS[depth])(
        weights=None, norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d)
    if pretrained:
        for name, parameter in resnet.named_parameters():
            if not name.startswith(("layer2", "layer3", "layer4")):
                parameter.requires_grad_(False)
    width = resnet.inplanes // 8
    return BackboneWithFPN(resnet, {f"layer{i + 1}": str(i) for i in range(4)},
                           [width * 2 ** i for i in range(4)], channels)


def box_of(sample: Sample) -> tuple[float, float, float, float]:
    """The sample's box, else the extent of its amodal mask."""
    if sample.bbox is not None:
        x0, y0, x1, y1 = (float(v) for v in sample.bbox)
    else:
        ys, xs = np.nonzero(sample.amodal_mask)
        if not len(xs):
            raise ValueError(f"sample {sample.id}: no box and an empty amodal mask")
        x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"sample {sample.id}: degenerate box {(x0, y0, x1, y1)}")
    return x0, y0, x1, y1


def image_tensor(sample: Sample, device: str) -> torch.Tensor:
    """[3, H, W] float in [0, 1]; the detector normalises and resizes itself."""
    return torch.from_numpy(np.array(sample.load_image())).to(device).permute(2, 0, 1).float().div_(255)


@dataclass
class MultiTaskMaskRCNNPredictor(SingleNetwork, BasePredictor):
    """Mask R-CNN + 41-bin pose head, trained jointly on class, box, amodal mask and pose."""

    name = "mt-maskrcnn"
    capabilities = frozenset({Capability.POSE, Capability.CLASS, Capability.AMODAL})
    paper = ("Mask R-CNN (torchvision, ResNet-FPN) with a 3x41-bin pose classification head on the RoI "
             "features; NeMo's Faster R-CNN viewpoint head as the public analogue")
    depth: int = 50
    min_size: int = 800
    max_size: int = 1333
    num_bins: int = bins.NUM_BINS
    decoder: str = "centre"
    proposals_train: int = 2000
    proposals_test: int = 1000
    rois_per_image: int = 512
    fpn_channels: int = 256  # width of the feature pyramid (and so of the RPN head and RoI features)
    box_representation: int = 1024  # width of the box head's two fully connected layers
    mask_channels: int = 256  # width of the mask head's four convolutions and its deconvolution
    epochs: int = 40
    batch_size: int = 24
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_milestones: tuple[int, ...] | str = (30, 35)  # epochs; "30 35" on the command line
    lr_gamma: float = 0.1
    warmup_iters: int = 1000
    backbone_weights: str | None = IMAGENET  # "imagenet", a local torchvision state dict, or None
    categories: tuple[str, ...] = CATEGORIES
    device: str = field(default="cpu", repr=False)

    arch: ClassVar[tuple[str, ...]] = ("depth", "min_size", "max_size", "num_bins", "fpn_channels",
                                       "box_representation", "mask_channels", "categories",
                                       "backbone_weights")  # fixed by the checkpoint (frozen batch norm or not)

    def __post_init__(self) -> None:
        coerce_numbers(self)
        bins.check_decoder(self.decoder)
        if self.depth not in RESNETS:
            raise ValueError(f"depth {self.depth}: choose one of {sorted(RESNETS)}")
        milestones = self.lr_milestones.split() if isinstance(self.lr_milestones, str) else self.lr_milestones
        try:
            self.lr_milestones = tuple(int(v) for v in np.atleast_1d(milestones))
        except ValueError:
            raise ValueError(f"lr_milestones={self.lr_milestones!r}: expected epochs, e.g. '30 35'") from None
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr!r}: must be positive")
        for key in ("min_size", "max_size", "num_bins", "proposals_train", "proposals_test", "rois_per_image",
                    "fpn_channels", "box_representation", "mask_channels", "epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r}: must be a positive integer")
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown or not self.categories:
            raise ValueError(f"categories={self.categories!r}: not PASCAL3D+ categories")
        self.categories = tuple(self.categories)
        self._net: PoseMaskRCNN | None = None  # built on first use: a checkpoint may bring another architecture

    @property
    def net(self) -> PoseMaskRCNN:
        if self._net is None:
            self._build()
        return self._net

    def _build(self) -> None:
        self._net = PoseMaskRCNN(
            self.depth, len(self.categories), self.num_bins, self.min_size, self.max_size, self.proposals_train,
            self.proposals_test, self.rois_per_image, self.fpn_channels, self.box_representation,
            self.mask_channels, pretrained(self.backbone_weights),
        ).to(self.device)
        self._net.eval()

    def load_state_dict(self, state: dict) -> None:
        """A checkpoint written before ``backbone_weights`` was part of the architecture started from random weights."""
        super().load_state_dict({**state, "arch": {"backbone_weights": None, **state["arch"]}})

    def _targets(self, samples: list[Sample]) -> list[dict[str, torch.Tensor]]:
        out = []
        for s in samples:
            if s.category not in self.categories:
                raise ValueError(f"category {s.category!r}: not among the trained categories {self.categories}")
            if s.amodal_mask is None:
                raise ValueError(f"sample {s.id}: no amodal mask to train the mask branch on")
            pose = (bins.encode(torch.tensor(s.pose.angles()), self.num_bins) if s.pose is not None
                    else torch.full((3,), self.num_bins, dtype=torch.long))
            out.append({
                "boxes": torch.tensor([box_of(s)], dtype=torch.float32, device=self.device),
                "labels": torch.tensor([self.categories.index(s.category) + 1], device=self.device),
                "masks": torch.from_numpy(np.asarray(s.amodal_mask, dtype=np.uint8))[None].to(self.device),
                "pose_bins": pose[None].to(self.device),
            })
        return out

    def _loss(self, samples: list[Sample]) -> torch.Tensor:
        losses = self.net.losses([image_tensor(s, self.device) for s in samples], self._targets(samples))
        return sum(losses.values())

    def _lr_factor(self, epoch: int, iteration: int) -> float:
        warmup = 1.0
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            warmup = 0.001 * (1 - alpha) + alpha  # torchvision's linear warm-up from lr/1000
        return warmup * self.lr_gamma ** sum(epoch >= m for m in self.lr_milestones)

    def fit(self, dataset, *, categories: Sequence[str], resume: Resume | None = None, device: str | None = None,
            seed: int = 0, progress: bool = True) -> None:
        self.device = device or self.device
        self.categories = tuple(categories)
        torch.manual_seed(seed)  # the initial weights follow the seed
        self._build()
        if (start := resnet_state_dict(self.backbone_weights, self.depth)) is not None:
            load_torchvision_resnet(self.net.detector.backbone.body, start, self.depth, str(self.backbone_weights))
        groups = ids_by_category(dataset, categories)
        ids = [i for c in categories for i in groups[c]]
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        train_epochs(self.net, optimizer, dataset=dataset, ids=ids, epochs=self.epochs, batch_size=self.batch_size,
                     lr_factor=self._lr_factor, step=self._loss, seed=seed, resume=resume, settings=self.config(),
                     progress=progress, desc=self.name)
        self.net.eval()

    def predict(self, batch: Sequence[Sample]) -> list[Prediction]:
        self.net.eval()
        found = self.net.main_objects([image_tensor(s, self.device) for s in batch])
        out = []
        for s, obj in zip(batch, found):
            a, e, t = bins.decode_logits(obj["pose_logits"][None].cpu(), self.num_bins, self.decoder)[0].tolist()
            out.append(Prediction(
                id=s.id,
                category=self.categories[int(obj["label"]) - 1],
                class_scores=dict(zip(self.categories, obj["probs"].cpu().tolist())),
                azimuth=a, elevation=e, theta=t,
                amodal_mask=(obj["mask"] >= 0.5).cpu().numpy(),
                extra={"box": [round(v, 2) for v in obj["box"].cpu().tolist()]},
            ))
        return out
