"""The multi-task Mask R-CNN: a mask and a pose for every image, end-to-end losses, save/load."""

import dataclasses

import numpy as np
import pytest
import torch
from toy_data import make_samples

from ntdmbench.baselines.mt_maskrcnn import (
    MultiTaskMaskRCNNPredictor,
    box_of,
    image_tensor,
)
from ntdmbench.datasets.base import InMemoryDataset
from ntdmbench.datasets.records import CATEGORIES, Sample

TINY = {"backbone_weights": None, "depth": 18, "min_size": 48, "max_size": 64, "proposals_train": 20, "proposals_test": 10,
        "rois_per_image": 16, "fpn_channels": 16, "box_representation": 32, "mask_channels": 8, "epochs": 1,
        "batch_size": 4, "lr": 0.005, "warmup_iters": 2}
TRAINED = list(CATEGORIES[:4])


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return InMemoryDataset(make_samples(tmp_path_factory.mktemp("toy"), n=8), name="toy/train")


@pytest.fixture(scope="module")
def trained(toy):
    model = MultiTaskMaskRCNNPredictor(**TINY)
    model.fit(toy, categories=TRAINED, device="cpu", seed=0, progress=False)
    return model


def check(pred, sample, categories):
    h, w = sample.load_image().shape[:2]
    assert pred.id == sample.id and pred.failure is None
    assert pred.amodal_mask.shape == (h, w) and pred.amodal_mask.dtype == bool
    assert pred.has_pose
    assert pred.category in categories and set(pred.class_scores) == set(categories)
    assert pred.category == max(pred.class_scores, key=pred.class_scores.get)


def test_every_image_gets_a_mask_a_pose_and_a_class(trained, toy):
    samples = [toy.load(i) for i in toy.ids()]
    blank = Sample(id="car/blank", category="car", image=np.zeros((30, 50, 3), dtype=np.uint8))
    preds = trained.predict(samples + [blank])
    assert len(preds) == len(samples) + 1
    for p, s in zip(preds, samples + [blank]):
        check(p, s, TRAINED)


def test_an_image_without_proposals_falls_back_to_the_whole_image(trained, toy, monkeypatch):
    rpn = trained.net.detector.rpn
    monkeypatch.setattr(rpn, "forward", lambda images, features, targets=None: (
        [torch.zeros((0, 4)) for _ in images.image_sizes], {}))
    samples = [toy.load(i) for i in toy.ids()[:2]]
    preds = trained.predict(samples)
    for p, s in zip(preds, samples):
        check(p, s, TRAINED)
        h, w = s.load_image().shape[:2]
        x0, y0, x1, y1 = p.extra["box"]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def test_losses_cover_class_box_mask_and_pose_and_reach_the_pose_head(trained, toy):
    net = trained.net
    net.train()
    samples = [toy.load(i) for i in toy.ids()[:2]]
    losses = net.losses([image_tensor(s, "cpu") for s in samples], trained._targets(samples))
    net.eval()
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask",
                           "loss_pose"}
    assert all(torch.isfinite(v) for v in losses.values())
    net.zero_grad()
    losses["loss_pose"].backward()
    assert net.pose_predictor.weight.grad.abs().sum() > 0
    assert net.detector.backbone.body.conv1.weight.grad.abs().sum() > 0  # end to end, into the backbone


def test_saves_loads_and_predicts_the_same(trained, toy, tmp_path):
    samples = [toy.load(i) for i in toy.ids()]
    before = trained.predict(samples)
    trained.save(tmp_path / "m.pth")
    # the checkpoint brings the architecture; inference settings (here the proposal count) stay the caller's
    fresh = MultiTaskMaskRCNNPredictor(proposals_test=TINY["proposals_test"])
    fresh.load(tmp_path / "m.pth")
    assert (fresh.depth, fresh.fpn_channels, fresh.categories) == (18, 16, tuple(TRAINED))
    for p, q in zip(before, fresh.predict(samples)):
        assert p.to_json() == q.to_json()


def test_box_comes_from_the_sample_else_from_the_mask(toy):
    sample = dataclasses.replace(toy.load(toy.ids()[0]))
    ys, xs = np.nonzero(sample.amodal_mask)
    assert box_of(sample) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    sample.bbox = (1, 2, 10, 12)
    assert box_of(sample) == (1.0, 2.0, 10.0, 12.0)
    sample.bbox = (5, 2, 5, 12)
    with pytest.raises(ValueError, match="degenerate box"):
        box_of(sample)


@pytest.mark.parametrize("kwargs, message", [
    ({"depth": 20}, "depth 20"),
    ({"decoder": "edge"}, "decoder 'edge'"),
    ({"categories": ("car", "tank")}, "not PASCAL3D"),
    ({"fpn_channels": 0}, "fpn_channels=0"),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskMaskRCNNPredictor(**kwargs)
