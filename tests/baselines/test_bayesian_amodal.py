import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ntdmbench.baselines.bayesian_amodal import (
    BayesianAmodalPredictor,
    _Mixture,
    estimate_mixture,
    kmeans_directions,
    log_likelihood,
    vmf_kernels,
)
from ntdmbench.datasets.catalog import load_dataset

TINY = {"backbone": "resnet18", "layer": 2, "input_size": (32, 64), "backbone_epochs": 1, "batch_size": 4,
        "vc_num": 8, "kappa": 20.0, "mixtures": 2, "em_iterations": 2, "vmf_iterations": 5}


@pytest.fixture(scope="module")
def trained(smoke, tmp_path_factory):
    torch.set_num_threads(1)
    model = BayesianAmodalPredictor(**TINY)
    model.fit(load_dataset("pascal3d/train", smoke), categories=["car", "sofa"], seed=0, progress=False)
    path = tmp_path_factory.mktemp("ckpt") / "ba.pth"
    model.save(path)
    return model, path


def test_vmf_kernels_find_separated_directions():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(4)[:3]
    feats = F.normalize(centres.repeat_interleave(50, 0) + 0.05 * torch.randn(150, 4, generator=g), dim=1)
    mu = vmf_kernels(feats, 3, kappa=30.0, iterations=10, generator=g)
    assert (mu @ centres.T).amax(0).min() > 0.98  # every true direction has a kernel on it
    with pytest.raises(ValueError, match="vc_num=200"):
        vmf_kernels(feats, 200, 30.0, 1, g)


def test_viewpoint_clusters_split_opposite_directions():
    a = np.linspace(0, 2 * math.pi, 40, endpoint=False)
    dirs = np.stack([np.sin(a), -np.cos(a), np.zeros_like(a)], 1)
    labels = kmeans_directions(dirs, 2)
    assert len(set(labels.tolist())) == 2
    assert labels[0] != labels[20]  # azimuth 0 and 180 degrees land in different components


def test_mixture_estimate_follows_masks_and_never_gives_zero_probability():
    V, h, w = 4, 2, 3
    dists = torch.zeros(4, V, h, w)
    dists[:, 0] = 1.0  # object features use kernel 0 ...
    masks = torch.zeros(4, h, w)
    masks[:, :, :2] = 1.0  # ... in the left two columns; context elsewhere uses kernel 3
    dists[:, :, :, 2] = 0
    dists[:, 3, :, 2] = 1.0
    model = estimate_mixture(dists, masks, torch.tensor([0, 0, 1, 1]), 2, smoothing=0.01)
    assert torch.allclose(model.prior[:, :, :2], torch.full((2, h, 2), 1 - 1e-3))
    assert torch.allclose(model.prior[:, :, 2], torch.full((2, h), 1e-3))
    assert model.alpha[0, 0, 0, 0] > 0.99 and model.beta[0, 3, 0, 2] > 0.99
    assert model.alpha[0, 0, 0, 2] > 0.99  # no object seen here: the category's mean object distribution
    assert (model.alpha > 0).all() and (model.beta > 0).all()
    assert torch.allclose(model.alpha.sum(1), torch.ones(2, h, w))
    with pytest.raises(ValueError, match="component 1"):
        estimate_mixture(dists, masks, torch.zeros(4, dtype=torch.long), 2, 0.01)


def test_amodal_probability_counts_occluded_object_by_its_prior():
    V = 3
    model = BayesianAmodalPredictor.__new__(BayesianAmodalPredictor)
    alpha = torch.tensor([1.0, 0, 0]).view(1, V, 1, 1).expand(1, V, 1, 3).clone() * 0.98 + 0.01
    beta = torch.tensor([0, 1.0, 0]).view(1, V, 1, 1).expand(1, V, 1, 3).clone() * 0.98 + 0.01
    prior = torch.tensor([[[0.999, 0.999, 0.3]]])
    model.models = {"car": _Mixture(alpha, beta, prior)}
    log_act = torch.full((1, V, 1, 3), -20.0)
    log_act[0, 0, 0, 0] = 20.0  # position 0: an object feature
    log_act[0, 2, 0, 1:] = 20.0  # positions 1, 2: a feature neither model knows (an occluder)
    outlier = log_likelihood(log_act, torch.full((1, V), 1 / V)).amax(1)
    p = model.amodal_probability(log_act, outlier, "car", 0)[0]
    assert p[0] > 0.99  # visible object
    assert p[1] > 0.99  # occluded where the object surely is
    assert abs(float(p[2]) - 0.3) < 0.02  # occluded where the object is only 30 % likely


def test_trained_model_predicts_masks_and_classes_and_reloads_the_same(smoke, trained):
    model, path = trained
    val = load_dataset("occluded-pascal3d/val/L2", smoke)
    samples = [val.load(i) for i in val.ids()]
    first = model.predict(samples)
    fresh = BayesianAmodalPredictor()  # paper defaults: the checkpoint restores the architecture
    fresh.load(path)
    assert fresh.backbone == "resnet18" and fresh.input_size == (32, 64) and fresh.vc_num == 8
    assert fresh.describe()["checkpoint_sha256"] == model.checkpoint_sha256
    again = fresh.predict(samples)
    for a, b, s in zip(first, again, samples):
        assert a.category == b.category and a.category in ("car", "sofa")
        assert np.array_equal(a.amodal_mask, b.amodal_mask)
        assert a.amodal_mask.shape == s.amodal_mask.shape and a.amodal_mask.dtype == bool
        assert a.class_scores == b.class_scores and abs(sum(a.class_scores.values()) - 1) < 1e-4


def test_training_is_deterministic_under_the_seed(smoke, trained):
    model, _ = trained
    other = BayesianAmodalPredictor(**TINY)
    other.fit(load_dataset("pascal3d/train", smoke), categories=["car", "sofa"], seed=0, progress=False)
    assert torch.equal(other.kernels, model.kernels)
    assert torch.equal(other.models["sofa"].prior, model.models["sofa"].prior)


def test_settings_parse_and_bad_settings_are_refused():
    assert BayesianAmodalPredictor(**{**TINY, "input_size": "48x96"}).input_size == (48, 96)  # --model-args form
    with pytest.raises(ValueError, match="backbone='vgg'"):
        BayesianAmodalPredictor(backbone="vgg")
    with pytest.raises(ValueError, match="layer=5"):
        BayesianAmodalPredictor(**{**TINY, "layer": 5})
    with pytest.raises(ValueError, match="input_size"):
        BayesianAmodalPredictor(**{**TINY, "input_size": "8x64"})
    with pytest.raises(ValueError, match="not trained"):
        BayesianAmodalPredictor(**TINY).predict([])
