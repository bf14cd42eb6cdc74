"""NeMo: pose recovery by render-and-compare, training (deterministic, resumable), predictions and checkpoints."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ntdmbench.baselines.nemo.category import CategoryModel
from ntdmbench.baselines.nemo.inference import (
    InferenceSettings,
    MeshRenderer,
    StartCache,
    fit_category,
)
from ntdmbench.benchmark.metrics import pose_error
from ntdmbench.models.training import Resume
from ntdmbench.datasets.catalog import load_dataset
from ntdmbench.models import render_compare as rc
from ntdmbench.models.camera import angles_from_rotation, rotation_matrix
from ntdmbench.models.meshes import cuboid
from ntdmbench.models.registry import build_model

CROP = (80, 184)  # the quick preset's bus crop: a 10 x 23 feature map
FOCAL = 750.0


def smooth_model(seed: int = 0, dim: int = 32) -> CategoryModel:
    """A category model whose bank varies smoothly over the cuboid, as trained NeMo features do
    (neighbouring vertices are never pushed apart inside the exclusion radius)."""
    mesh = cuboid(np.array([[-0.19, 0.19], [-0.37, 0.37], [-0.15, 0.05]]), 400)
    model = CategoryModel([mesh], depth=18, feature_dim=dim, n_clutter=8, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    freq, phase = torch.randn(3, dim, generator=g) / 0.3, torch.rand(dim, generator=g) * 2 * math.pi
    verts = torch.as_tensor(mesh.vertices, dtype=torch.float32)
    model.banks[0].memory[:len(verts)] = F.normalize(torch.sin(verts @ freq + phase), dim=1)
    return model


def renderer(model: CategoryModel) -> MeshRenderer:
    verts, faces = model.mesh_tensors(0)
    h, w = -(-CROP[0] // 8), -(-CROP[1] // 8)
    return MeshRenderer(verts, faces, model.banks[0].vertices, torch.tensor([CROP[1] / 2, CROP[0] / 2]), FOCAL, (h, w))


def target_features(model: CategoryModel, poses: torch.Tensor) -> torch.Tensor:
    """Feature maps rendered from the model's own mesh and bank (unit norm), clutter vector elsewhere."""
    rendered = renderer(model)(poses[:, 0], poses[:, 1], poses[:, 2], torch.full((len(poses),), 5.0))
    clutter = rc.clutter_vector(model.banks[0].clutter)[None, :, None, None]
    return torch.where(rendered.norm(dim=1, keepdim=True) > 0, F.normalize(rendered, dim=1), clutter)


def perturbed(poses: torch.Tensor, degrees: float, seed: int = 0) -> torch.Tensor:
    """Poses rotated by exactly ``degrees`` about random axes."""
    g = torch.Generator().manual_seed(seed)
    axis = F.normalize(torch.randn(len(poses), 3, generator=g, dtype=torch.float64), dim=1)
    K = torch.zeros(len(poses), 3, 3, dtype=torch.float64)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    K = K - K.transpose(1, 2)
    t = math.radians(degrees)
    delta = torch.eye(3, dtype=torch.float64) + math.sin(t) * K + (1 - math.cos(t)) * K @ K
    R = rotation_matrix(*poses.double().T) @ delta
    return torch.stack(angles_from_rotation(R), 1).float()


GT = torch.tensor([[0.9, 0.35, 0.05], [4.0, 0.2, -0.08], [2.4, 0.45, 0.0]])


def test_inference_recovers_a_pose_40_degrees_away():
    model = smooth_model()
    target = target_features(model, GT)
    start = perturbed(GT, 40.0)
    assert np.allclose(np.degrees(pose_error(start.numpy(), GT.numpy())), 40.0, atol=1e-3)
    clutter = rc.clutter_score(target, model.banks[0].clutter)
    similarity = torch.einsum("bchw,vc->bvhw", target, model.banks[0].vertices)  # as fit_category does
    fit = rc.optimise_pose(renderer(model).scorer(similarity), target, clutter, start[:, 0], start[:, 1],
                           start[:, 2], torch.full((3,), 5.0), steps=300)
    final = torch.stack([fit.azimuth, fit.elevation, fit.theta], 1)
    errors = np.degrees(pose_error(final.numpy(), GT.numpy()))
    assert (errors < 5.0).all(), errors
    assert torch.allclose(fit.distance, torch.tensor(5.0), atol=0.3)


class FixedFeatures(torch.nn.Module):
    """Stands in for the network: returns the given feature maps whatever the image."""

    def __init__(self, maps: torch.Tensor):
        super().__init__()
        self.maps = maps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.maps[:len(images)]


def test_fit_category_searches_refines_and_masks():
    model = smooth_model()
    target = target_features(model, GT[:2])
    model.net = FixedFeatures(target)
    settings = InferenceSettings(n_azimuth=12, n_elevation=4, n_theta=3, steps=150)
    fit = fit_category(model, torch.zeros(2, 3, *CROP), [[0], [0]], FOCAL, settings, StartCache(), "car")
    final = torch.stack([fit.azimuth, fit.elevation, fit.theta], 1)
    assert (np.degrees(pose_error(final.numpy(), GT[:2].numpy())) < 5.0).all()
    silhouette = renderer(model).fragments(GT[:2, 0], GT[:2, 1], GT[:2, 2], torch.full((2,), 5.0)).silhouette
    expected = silhouette.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :CROP[0], :CROP[1]]
    assert fit.inmodal.shape == (2, *CROP)
    iou = (fit.inmodal & expected).sum() / (fit.inmodal | expected).sum()
    assert iou > 0.8
    at_gt = rc.compare_loss(renderer(model)(GT[:2, 0], GT[:2, 1], GT[:2, 2], torch.full((2,), 5.0)), target,
                            rc.clutter_score(target, model.banks[0].clutter))
    assert (fit.loss <= at_gt + 0.01).all()


# ---------------------------------------------------------------------- training and checkpoints

TINY = {"checkpoint_every_s": 0, "backbone_weights": None, "backbone_depth": 18, "epochs": 2, "batch_size": 2, "lr": 1e-3, "accumulate": 1, "max_group": 4,
        "mesh_vertices": 100, "n_azimuth": 4, "n_elevation": 1, "n_theta": 1, "steps": 4}


def trained(smoke, resume=None, categories=("car",), **overrides):
    model = build_model("nemo", {**TINY, **overrides})
    model.fit(load_dataset("pascal3d/train", smoke), categories=list(categories), resume=resume, seed=0,
              progress=False)
    return model


def test_training_is_deterministic_and_resumes_to_the_same_weights(smoke, tmp_path, monkeypatch):
    first = trained(smoke).state_dict()["categories"]["car"]
    resume = Resume(tmp_path / "ckpt.pth.resume")
    calls = []
    real_save = Resume.save

    def killed_after_first_epoch(self, state):
        real_save(self, state)
        calls.append(state["current"]["state"]["epoch"])
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Resume, "save", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        trained(smoke, resume)
    resumed = trained(smoke, resume).state_dict()["categories"]["car"]
    assert calls == [1, 2]  # the rerun trained epoch 2 only, and ends where the uninterrupted run did
    assert all(torch.equal(first["net"][k], resumed["net"][k]) for k in first["net"])
    assert torch.equal(first["memory"][0], resumed["memory"][0])
    with pytest.raises(ValueError, match="other settings"):
        trained(smoke, resume, epochs=3)


def test_predictions_checkpoint_round_trip_and_describe(smoke, tmp_path):
    model = trained(smoke, categories=("car", "sofa"), epochs=1)
    val = load_dataset("pascal3d/val", smoke)
    samples = [val.load(i) for i in val.ids()[:2] + val.ids()[-1:]]
    preds = model.predict(samples)
    for s, p in zip(samples, preds):
        assert p.id == s.id and set(p.class_scores) == {"car", "sofa"}
        assert p.category == max(p.class_scores, key=p.class_scores.get)
        assert p.extra["pose_category"] == s.category and p.has_pose
        assert p.inmodal_mask.shape == s.load_image().shape[:2] and p.inmodal_mask.dtype == bool
    sha = model.save(tmp_path / "nemo.pth")
    loaded = build_model("nemo", {"steps": 4, "n_azimuth": 4, "n_elevation": 1, "n_theta": 1})
    loaded.load(tmp_path / "nemo.pth")
    assert loaded.checkpoint_sha256 == sha and loaded.backbone_depth == 18
    again = loaded.predict(samples)
    assert [p.azimuth for p in again] == pytest.approx([p.azimuth for p in preds], abs=1e-5)
    info = loaded.describe()
    assert info["capabilities"] == ["class", "pose"] and set(info["categories"]) == {"car", "sofa"}
    assert info["config"]["steps"] == 4 and info["categories"]["car"]["epochs"] == 1


def test_training_needs_the_cad_folder(tmp_path):
    from ntdmbench.datasets.base import InMemoryDataset

    with pytest.raises(ValueError, match="CAD"):
        build_model("nemo", TINY).fit(InMemoryDataset([]), categories=["car"], progress=False)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="mesh_mode"):
        build_model("nemo", {"mesh_mode": "triple"})
    with pytest.raises(ValueError, match="lr='fast'"):
        build_model("nemo", {"lr": "fast"})
    assert build_model("nemo", {"lr": "1e-3"}).lr == 1e-3  # YAML 1.1 reads 1e-3 as a string


def test_score_renderer_equals_the_dot_with_the_rendered_feature_map():
    model = smooth_model()
    r = renderer(model)
    feats = F.normalize(torch.randn(3, 32, *r.map_size), dim=1)
    poses = GT.T
    d = torch.full((3,), 5.0)
    similarity = torch.einsum("bchw,vc->bvhw", feats, model.banks[0].vertices)
    direct = rc.object_score(r(*poses, d), feats)
    assert torch.allclose(r.scorer(similarity)(*poses, d), direct, atol=1e-5)
    assert direct.abs().sum() > 0


def test_grid_scores_equal_best_start_on_rendered_maps():
    model = smooth_model()
    r = renderer(model)
    feats = target_features(model, GT)
    poses = rc.initial_poses(4, 2, 1)
    d = torch.full((len(poses),), 5.0)
    frags = r.fragments(poses[:, 0], poses[:, 1], poses[:, 2], d)
    similarity = torch.einsum("bchw,vc->bvhw", feats, model.banks[0].vertices)
    clutter = rc.clutter_score(feats, model.banks[0].clutter)
    index, losses = rc.best_start(r(poses[:, 0], poses[:, 1], poses[:, 2], d), feats, clutter)
    fast = rc.loss_fg_bg(r.grid_scores(frags, similarity), clutter[:, None])
    assert torch.allclose(fast, losses, atol=1e-5) and torch.equal(fast.argmin(1), index)


def test_per_category_checkpoints_merge_into_the_all_category_model(smoke, tmp_path):
    together = trained(smoke, categories=("car", "sofa"), epochs=1).state_dict()["categories"]
    for c in ("car", "sofa"):
        trained(smoke, categories=(c,), epochs=1).save(tmp_path / f"{c}.pth")
    merged = build_model("nemo", TINY)
    merged.merge([tmp_path / "car.pth", tmp_path / "sofa.pth"])
    assert set(merged.models) == {"car", "sofa"}
    for c in ("car", "sofa"):
        alone = merged.state_dict()["categories"][c]
        assert all(torch.equal(together[c]["net"][k], alone["net"][k]) for k in together[c]["net"])
    with pytest.raises(ValueError, match="already in another"):
        merged.merge([tmp_path / "car.pth", tmp_path / "car.pth"])
