"""ResNet pose and class baselines: tiny networks trained on a toy set for two epochs."""

import math

import pytest
import torch
from toy_data import make_samples

from ntdmbench.baselines.resnet import ResNetClassPredictor, ResNetPosePredictor
from ntdmbench.models.training import Resume
from ntdmbench.datasets.base import InMemoryDataset
from ntdmbench.datasets.records import CATEGORIES
from ntdmbench.models.registry import build_model

TINY = {"backbone_weights": None, "depth": 18, "image_size": 32, "epochs": 2, "batch_size": 8, "lr": 0.01}
TRAINED = list(CATEGORIES[:4])


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return InMemoryDataset(make_samples(tmp_path_factory.mktemp("toy"), n=16), name="toy/train")


def fit(model, toy, resume=None, seed=0):
    model.fit(toy, categories=TRAINED, resume=resume, device="cpu", seed=seed, progress=False)
    return model


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.net.state_dict().values() if p.is_floating_point()])


@pytest.mark.parametrize("cls", [ResNetPosePredictor, ResNetClassPredictor])
def test_saves_loads_and_predicts_the_same(cls, toy, tmp_path):
    model = fit(cls(**TINY), toy)
    samples = [toy.load(i) for i in toy.ids()]
    before = model.predict(samples)
    sha = model.save(tmp_path / "m.pth")
    fresh = cls()  # paper defaults: the checkpoint brings depth, input size (and categories)
    fresh.load(tmp_path / "m.pth")
    assert fresh.depth == 18 and fresh.input_spec.image_size == (32, 32) and fresh.checkpoint_sha256 == sha
    after = fresh.predict(samples)
    for p, q in zip(before, after):
        assert p.to_json() == q.to_json()


def test_pose_predictions_are_decoded_bin_angles(toy):
    model = fit(ResNetPosePredictor(**TINY), toy)
    preds = model.predict([toy.load(i) for i in toy.ids()])
    assert all(p.has_pose and p.category is None for p in preds)
    width = 2 * math.pi / model.num_bins
    for p in preds:
        assert 0 <= p.azimuth < 2 * math.pi and -math.pi <= p.theta <= math.pi
        assert abs(p.elevation / width - round(p.elevation / width)) < 1e-6  # centres of 41 bins: k * width


def test_class_scores_cover_the_trained_categories(toy):
    model = fit(ResNetClassPredictor(**TINY, augment=True, crop_scale=0.5), toy)
    assert model.categories == tuple(TRAINED)
    for p in model.predict([toy.load(i) for i in toy.ids()]):
        assert set(p.class_scores) == set(TRAINED)
        assert abs(sum(p.class_scores.values()) - 1) < 1e-5
        assert p.category == max(p.class_scores, key=p.class_scores.get)


def test_training_is_deterministic_and_a_resumed_run_ends_the_same(toy, tmp_path, monkeypatch):
    reference = weights(fit(ResNetPosePredictor(**TINY), toy))
    assert torch.equal(reference, weights(fit(ResNetPosePredictor(**TINY), toy)))
    assert not torch.equal(reference, weights(fit(ResNetPosePredictor(**TINY), toy, seed=1)))

    resume = Resume(tmp_path / "ckpt.pth.resume")
    calls = {"n": 0}
    original = ResNetPosePredictor.loss

    def dies_in_epoch_two(self, samples):
        calls["n"] += 1
        if calls["n"] > 2:  # 16 samples, batch 8: two batches per epoch
            raise KeyboardInterrupt
        return original(self, samples)

    monkeypatch.setattr(ResNetPosePredictor, "loss", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        fit(ResNetPosePredictor(**TINY), toy, resume=resume)
    assert resume.load()["epoch"] == 1
    monkeypatch.setattr(ResNetPosePredictor, "loss", original)
    assert torch.equal(reference, weights(fit(ResNetPosePredictor(**TINY), toy, resume=resume)))

    with pytest.raises(ValueError, match="other settings"):
        fit(ResNetPosePredictor(**{**TINY, "lr": 0.02}), toy, resume=resume)


def test_registered_names_and_describe():
    pose = build_model("resnet50-pose", TINY)
    cls = build_model("resnet50-class", TINY)
    assert pose.describe()["capabilities"] == ["pose"] and cls.describe()["capabilities"] == ["class"]
    assert pose.describe()["config"]["decoder"] == "centre" and "device" not in pose.describe()["config"]
    assert ResNetPosePredictor().depth == 50 and ResNetPosePredictor().input_spec.image_size == (256, 256)


@pytest.mark.parametrize("kwargs, message", [
    ({"depth": 20}, "depth 20"),
    ({"decoder": "edge"}, "decoder 'edge'"),
    ({"image_size": 0}, "image_size=0"),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNetPosePredictor(**kwargs)
