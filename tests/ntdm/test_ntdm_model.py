"""The ``ntdm`` predictor end to end on the smoke preset: training (resumable), checkpoints, predictions,
Table 3 switches and the fig. 5 exports."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ntdmbench.models.training import Resume
from ntdmbench.datasets.catalog import load_dataset
from ntdmbench.models.camera import Camera
from ntdmbench.models.meshes import read_obj
from ntdmbench.models.registry import build_model
from ntdmbench.ntdm import export
from ntdmbench.ntdm.training import blended_logits

TINY = dict(backbone_weights=None, backbone_depth=18, template_level=2, mlp_hidden=32, mlp_layers=3, fit_iters=4, fit_lr=0.02,  # noqa: C408
            fit_points=100, fit_eval_points=100, texture_size=8, epochs=2, batch_size=4, lr=1e-3, n_pos=32, n_neg=64, n_class_neg=32,
            n_bg=4, bank_size=64, uv_stride=4, n_azimuth=4, n_elevation=1, n_theta=1, steps=3)


def trained(smoke, resume=None, **overrides):
    model = build_model("ntdm", {**TINY, **overrides})
    model.fit(load_dataset("pascal3d/train", smoke), categories=["car", "sofa"], resume=resume, seed=0,
              progress=False)
    return model


@pytest.fixture(scope="module")
def model(smoke):
    return trained(smoke)


@pytest.fixture(scope="module")
def samples(smoke):
    val = load_dataset("pascal3d/val", smoke)
    return [val.load(i) for i in val.ids()[:2] + val.ids()[-2:]]


def test_training_resumes_to_the_same_weights(smoke, model, tmp_path, monkeypatch):
    resume = Resume(tmp_path / "ckpt.pth.resume")
    saved = []
    real_save = Resume.save

    def killed_after_first_epoch(self, state):
        real_save(self, state)
        saved.append(state.get("epoch"))
        if state.get("epoch") == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Resume, "save", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        trained(smoke, resume)
    resumed = trained(smoke, resume)
    assert saved == [None, None, 1]  # meshes of car, of sofa, epoch 1; the rerun trained epoch 2 only
    first, again = model.state_dict(), resumed.state_dict()
    assert all(torch.equal(first["backbone"][k], again["backbone"][k]) for k in first["backbone"])
    for c in ("car", "sofa"):
        assert torch.equal(first["categories"][c]["texture"], again["categories"][c]["texture"])
    with pytest.raises(ValueError, match="other settings"):
        trained(smoke, resume, epochs=3)


def test_checkpoint_holds_everything_for_inference(model, samples, tmp_path):
    state = model.state_dict()
    assert set(state["categories"]) == {"car", "sofa"}
    assert state["categories"]["car"]["n_shapes"] == 10 and len(state["categories"]["car"]["fit_error"]) == 10
    assert state["categories"]["car"]["texture"].shape == (7, 128, 8, 8)
    preds = model.predict(samples)
    sha = model.save(tmp_path / "ntdm.pth")
    loaded = build_model("ntdm", {"steps": 3, "n_azimuth": 4, "n_elevation": 1, "n_theta": 1})  # architecture from the file
    loaded.load(tmp_path / "ntdm.pth")
    assert loaded.checkpoint_sha256 == sha and loaded.template_level == 2 and loaded.texture_size == 8
    again = loaded.predict(samples)
    assert [p.azimuth for p in again] == pytest.approx([p.azimuth for p in preds], abs=1e-4)
    info = loaded.describe()
    assert info["capabilities"] == ["amodal", "class", "pose"] and set(info["deformable_fit_error"]) == {"car", "sofa"}


def test_describe_omits_categories_without_fit_errors(model, tmp_path):
    # the timing checkpoints (benchmarks/timing_checkpoints.py) skip the deformable fit: no errors, and no NaN
    # in the reports (NaN is not JSON)
    model.save(tmp_path / "no_fit.pth")
    payload = torch.load(tmp_path / "no_fit.pth", weights_only=False)
    payload["state"]["categories"]["sofa"]["fit_error"] = []
    torch.save(payload, tmp_path / "no_fit.pth")
    loaded = build_model("ntdm", {})
    loaded.load(tmp_path / "no_fit.pth")
    info = loaded.describe()
    assert set(info["deformable_fit_error"]) == {"car"}
    json.dumps(info, allow_nan=False, default=str)


def test_predictions(model, samples):
    preds = model.predict(samples)
    for s, p in zip(samples, preds):
        assert p.id == s.id and p.has_pose and set(p.class_scores) == {"car", "sofa"}
        assert p.category == max(p.class_scores, key=p.class_scores.get)
        shape = s.load_image().shape[:2]
        assert p.amodal_mask.shape == shape and p.amodal_mask.dtype == bool and p.amodal_mask.any()
        assert p.inmodal_mask.shape == shape and not (p.inmodal_mask & ~p.amodal_mask).any()
        n_shapes = 10 if p.category == "car" else 6
        assert len(p.extra["latent"]) == n_shapes and len(p.extra["scale"]) == 3
        assert len(str(p.to_json()["extra"])) < 400  # the JSONL line stays small


def test_class_topk_optimises_only_the_best_models(model, samples):
    for p in with_settings(model, class_topk=1).predict(samples):
        assert len(p.class_scores) == 1 and p.category in p.class_scores


def with_settings(model, **changes):
    other = dataclasses.replace(model, **changes)
    other.backbone, other.models, other.bank = model.backbone, model.models, model.bank
    return other


@pytest.mark.parametrize("switch", [{"use_background": False}, {"single_alpha": True}, {"fix_shape": True},
                                    {"latent_init": "random"}, {"latent_init": "average"}])
def test_each_table3_switch_changes_the_output(model, samples, switch):
    def outputs(m):
        return [(p.azimuth, p.elevation, p.theta, p.extra["latent"], p.inmodal_mask.sum()) for p in m.predict(samples)]

    assert outputs(with_settings(model, **switch)) != outputs(model)


def test_single_alpha_trains_one_bin(smoke):
    single = trained(smoke, single_alpha=True, epochs=1)
    assert single.state_dict()["categories"]["sofa"]["texture"].shape[0] == 1


def test_exports(model, samples, tmp_path):
    s = samples[0]
    exporter = with_settings(model, export_dir=str(tmp_path))
    p = exporter.predict([s])[0]
    mesh = read_obj(tmp_path / (s.id.replace("/", "__") + ".obj"))
    assert len(mesh.vertices) == 162
    colours = np.loadtxt(tmp_path / (s.id.replace("/", "__") + ".obj"), usecols=(4, 5, 6), max_rows=162)
    assert {tuple(c) for c in colours} <= {tuple(c) for c in export.COLOURS}
    png = tmp_path / (s.id.replace("/", "__") + ".png")
    from PIL import Image

    assert Image.open(png).size == (s.load_image().shape[1], s.load_image().shape[0])
    assert p.amodal_mask.any()


def test_vertex_labels_and_overlay():
    from ntdmbench.models.meshes import icosphere

    v, f = icosphere(2).torch()
    camera = Camera.create(0.0, 0.0, 0.0, 5.0, (32.0, 32.0), 1.0, 200.0)
    visible = np.zeros((64, 64), dtype=bool)
    visible[:, :32] = True  # the left half of the image is foreground, the right half occluded
    labels = export.vertex_labels(v * 0.5, f, camera, visible)
    xy = camera.project(v * 0.5)[0].numpy()
    front = (v[:, 1] < -0.2).numpy()  # facing the camera at azimuth 0 (camera on -y)
    assert (labels[front & (xy[:, 0] < 30)] == export.VISIBLE).all()
    assert (labels[front & (xy[:, 0] > 34)] == export.OCCLUDED).all()
    assert (labels[(v[:, 1] > 0.2).numpy()] == export.INVISIBLE).all()
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    out = export.overlay(image, v * 0.5, f, camera, visible)
    assert out.shape == image.shape and (out[32, 20] != 128).any() and (out[2, 2] == 128).all()
    assert out[32, 20, 1] > out[32, 20, 0] and out[32, 44, 0] > out[32, 44, 1]  # green visible, red occluded


def test_blended_logits_match_the_direct_formula():
    gen = torch.Generator().manual_seed(0)
    anchors = F.normalize(torch.randn(5, 8, generator=gen), dim=1)
    alpha = torch.softmax(torch.randn(5, 3, generator=gen), 1)
    values = F.normalize(torch.randn(7, 3, 8, generator=gen), dim=-1)
    direct = torch.einsum("pd,pnd->pn", anchors, F.normalize(torch.einsum("pb,nbd->pnd", alpha, values), dim=-1))
    torch.testing.assert_close(blended_logits(anchors, alpha, values), direct)


def test_training_needs_the_cad_folder_and_bad_settings_fail(tmp_path):
    from ntdmbench.datasets.base import InMemoryDataset

    with pytest.raises(ValueError, match="CAD"):
        build_model("ntdm", TINY).fit(InMemoryDataset([]), categories=["car"], progress=False)
    with pytest.raises(ValueError, match="latent_init"):
        build_model("ntdm", {"latent_init": "zeros"})
    with pytest.raises(ValueError, match="lr='fast'"):
        build_model("ntdm", {"lr": "fast"})
    assert build_model("ntdm", {"lr": "1e-3"}).lr == 1e-3
    with pytest.raises(RuntimeError, match="no trained model"):
        build_model("ntdm").predict([])
