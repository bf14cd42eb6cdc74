import dataclasses
import math

import numpy as np
import pytest
import torch

from ntdmbench.baselines import starmap as S
from ntdmbench.benchmark.metrics import pose_error
from ntdmbench.datasets.base import InMemoryDataset
from ntdmbench.datasets.catalog import load_dataset
from ntdmbench.datasets.keypoints import KEYPOINT_NAMES, write_cad_mat
from ntdmbench.datasets.records import DataError, Keypoints, Sample
from ntdmbench.models.camera import Camera, angles_from_rotation, rotation_matrix
from ntdmbench.models.meshes import Mesh, read_off

TINY = {"stacks": 2, "features": 16, "modules": 1, "hourglass_depth": 2, "input_size": 32, "keypoints": 8,
        "epochs": 1, "batch_size": 4, "optimizer": "adam", "lr": 1e-3}


def keypoint_batch(targets):
    return {"xy": torch.tensor(np.stack([t.xy for t in targets]), dtype=torch.float32),
            "depth": torch.tensor(np.stack([t.depth for t in targets]), dtype=torch.float32),
            "canonical": torch.tensor(np.stack([t.canonical for t in targets]), dtype=torch.float32),
            "visible": torch.tensor(np.stack([t.visible for t in targets]))}


def test_cad_keypoints_spread_over_the_shape_and_correspond_across_models():
    box = Mesh(np.array([[x, y, z] for x in (-1, 1) for y in (-2, 2) for z in (-0.5, 0.5)], dtype=float),
                 np.zeros((0, 3), dtype=np.int64))
    bigger = Mesh(box.vertices * 1.2, box.faces)
    first, second = S.cad_keypoints([box, bigger], 8)
    assert len({tuple(p) for p in first}) == 8  # the eight corners, each once
    assert np.allclose(second, first * 1.2)  # the same corners on the other model


def test_ground_truth_maps_decode_to_the_pose_under_crop_rotation_and_flip(smoke):
    """Projection, crop, target maps, lifting, Horn and the angle convention agree end to end."""
    ds = load_dataset("pascal3d/train", smoke)
    model = S.StarMapPredictor(**TINY)
    targets = model._targets(ds, ["car", "sofa"], ds.ids(), progress=False)
    ids = ds.ids()
    kps = keypoint_batch([targets[i][0] for i in ids])
    for rotation, flip in ((0.0, 1.0), (0.3, 1.0), (-0.2, -1.0)):
        window = torch.tensor([(*targets[i][1], rotation, flip) for i in ids], dtype=torch.float32)
        maps, _ = S.render_targets(kps, window, 64, 1.0, 0.1)
        angles, counts = S.viewpoint_from_maps(maps)
        assert (counts >= 3).all()
        for sample_id, got in zip(ids, angles):
            pose = ds.load(sample_id).pose
            # the crop turns the image by `rotation` (theta grows by it); a flip mirrors x
            R = rotation_matrix(*(torch.tensor(v, dtype=torch.float64) for v in (pose.azimuth, pose.elevation,
                                                                                    pose.theta + rotation)))
            D = torch.diag(torch.tensor([flip, 1.0, 1.0], dtype=torch.float64))
            expected = [float(v) for v in angles_from_rotation(D @ R @ D)]
            assert math.degrees(pose_error(got.tolist(), expected)) < 6.0, sample_id


def test_keypoints_hidden_behind_the_object_are_not_visible(smoke):
    ds = load_dataset("pascal3d/train", smoke)
    model = S.StarMapPredictor(**TINY)
    targets = model._targets(ds, ["car", "sofa"], ds.ids(), progress=False)
    visible = np.concatenate([t.visible for t, _ in targets.values()])
    assert 0.2 < visible.mean() < 0.95  # a solid object hides some of its corners from any view


def test_too_few_peaks_give_nan_angles():
    maps = torch.zeros(2, 5, 16, 16)
    maps[0, 0, 3, 3] = maps[0, 0, 8, 8] = 1.0  # two peaks only
    angles, counts = S.viewpoint_from_maps(maps)
    assert counts.tolist() == [2, 0] and torch.isnan(angles).all()


def test_crop_window_is_starmaps_rule():
    sample = Sample(id="car/x", category="car", bbox=(10.0, 20.0, 50.0, 40.0))
    assert S.crop_window(sample, (100, 200), 1.5) == (30.0, 30.0, 60.0)
    assert S.crop_window(sample, (30, 50), 1.5) == (30.0, 30.0, 50.0)  # capped at the image's larger side
    assert S.crop_window(Sample(id="car/y", category="car"), (30, 50), 1.5) == (25.0, 15.0, 50.0)


def test_trains_deterministically_saves_loads_and_predicts_the_same(smoke, tmp_path):
    torch.set_num_threads(1)
    train = load_dataset("pascal3d/train", smoke)
    models = []
    for _ in range(2):
        model = S.StarMapPredictor(**TINY)
        model.fit(train, categories=["car", "sofa"], seed=3, progress=False)
        models.append(model)
    for a, b in zip(models[0].net.state_dict().values(), models[1].net.state_dict().values()):
        assert torch.equal(a, b)
    model = models[0]
    path = tmp_path / "starmap.pth"
    model.save(path)
    fresh = S.StarMapPredictor()  # paper defaults: the checkpoint restores the architecture
    fresh.load(path)
    assert (fresh.stacks, fresh.features, fresh.input_size) == (2, 16, 32)
    val = load_dataset("occluded-pascal3d/val/L1", smoke)
    samples = [val.load(i) for i in val.ids()]
    first, again = model.predict(samples), fresh.predict(samples)
    assert torch.allclose(model.maps(samples), fresh.maps(samples))
    for a, b in zip(first, again):
        assert a.id == b.id and a.extra == b.extra
        assert np.allclose([a.azimuth, a.elevation, a.theta], [b.azimuth, b.elevation, b.theta], equal_nan=True)
        assert math.isnan(a.distance) and a.category is None and a.amodal_mask is None


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="input_size=40"):
        S.StarMapPredictor(**{**TINY, "input_size": 40})
    with pytest.raises(ValueError, match="features=18"):
        S.StarMapPredictor(**{**TINY, "features": 18})
    with pytest.raises(ValueError, match="optimizer='sgd'"):
        S.StarMapPredictor(**{**TINY, "optimizer": "sgd"})


def with_semantic_keypoints(smoke, root):
    """The smoke training set as an in-memory dataset whose samples carry semantic keypoints: per category,
    farthest-point vertices of each CAD model stand in for its named keypoints (written to ``root/CAD/{cate}.mat``;
    model 1 lacks keypoint 1), projected with each sample's pose and annotated a quarter pixel off (so the
    annotation, not the projection, is seen to be the target); keypoint 0 is annotated hidden."""
    ds = load_dataset("pascal3d/train", smoke)
    cad = {}
    for category in ("car", "sofa"):
        names = KEYPOINT_NAMES[category]
        paths = sorted((smoke / "CAD" / category).glob("??.off"))
        meshes = [read_off(p) for p in paths]
        points = S.cad_keypoints(meshes, len(names))
        cad[category] = {i + 1: kp for i, kp in enumerate(points)}
        models = [(m, {n: p for j, (n, p) in enumerate(zip(names, kp)) if (i, j) != (0, 1)})
                  for i, (m, kp) in enumerate(zip(meshes, points))]
        (root / "CAD").mkdir(exist_ok=True)
        write_cad_mat(root / "CAD" / f"{category}.mat", models, names)
    samples = []
    for sample_id in ds.ids():
        s = ds.load(sample_id)
        canonical = cad[s.category][s.cad_index]
        xy = Camera.from_poses([s.pose]).transform(torch.as_tensor(canonical))[0, :, :2].numpy() + 0.25  # annotated
        visible = np.arange(len(xy)) != 0
        samples.append(dataclasses.replace(s, keypoints=Keypoints(KEYPOINT_NAMES[s.category], xy, visible)))
    dataset = InMemoryDataset(samples, name="semantic")
    dataset.root = root
    return dataset, cad


def test_semantic_keypoints_are_the_targets_when_the_samples_carry_them(smoke, tmp_path):
    ds, cad = with_semantic_keypoints(smoke, tmp_path)
    model = S.StarMapPredictor(**TINY)
    targets = model._targets(ds, ["car", "sofa"], ds.ids(), progress=False)
    assert model.keypoint_source == "semantic" and model.describe()["keypoints"] == "semantic"
    assert S.FARTHEST_POINT_DEVIATION not in model.describe()["deviations"]
    for sample_id, (t, _) in targets.items():
        s = ds.load(sample_id)
        k = len(KEYPOINT_NAMES[s.category])
        assert t.xy.shape == (12, 2) and not t.visible[k:].any()  # padded to car's 12 with non-targets
        expected = np.arange(k) != 0
        if s.cad_index == 1:
            expected[1] = False  # model 1 lacks keypoint 1 in CAD/{cate}.mat
        assert t.visible[:k].tolist() == expected.tolist(), sample_id
        np.testing.assert_allclose(t.xy[:k][expected], s.keypoints.xy[expected])
        np.testing.assert_allclose(t.canonical[:k][expected], cad[s.category][s.cad_index][expected])
        _, depth, _ = S.project(s, cad[s.category][s.cad_index])
        np.testing.assert_allclose(t.depth[:k][expected], depth[expected])
    # the semantic targets decode back to the pose, as the farthest-point ones do
    ids = ds.ids()
    kps = keypoint_batch([targets[i][0] for i in ids])
    window = torch.tensor([(*targets[i][1], 0.0, 1.0) for i in ids], dtype=torch.float32)
    angles, counts = S.viewpoint_from_maps(S.render_targets(kps, window, 64, 1.0, 0.1)[0])
    for sample_id, got in zip(ids, angles):
        assert math.degrees(pose_error(got.tolist(), ds.load(sample_id).pose.angles())) < 6.0, sample_id


def test_without_semantic_keypoints_the_farthest_point_ones_are_used_and_said(smoke, tmp_path):
    smoke_train = load_dataset("pascal3d/train", smoke)
    ds = InMemoryDataset([dataclasses.replace(smoke_train.load(i), keypoints=None) for i in smoke_train.ids()])
    ds.root = smoke  # as NeMo's 3D-stage data: no semantic keypoints
    model = S.StarMapPredictor(**TINY)
    targets = model._targets(ds, ["car", "sofa"], ds.ids(), progress=False)
    assert {t.xy.shape for t, _ in targets.values()} == {(TINY["keypoints"], 2)}
    assert model.describe()["keypoints"] == "farthest-point"
    assert S.FARTHEST_POINT_DEVIATION in model.describe()["deviations"]
    semantic, _ = with_semantic_keypoints(smoke, tmp_path)
    mixed = InMemoryDataset([semantic.load(i) for i in semantic.ids()[:-1]] + [ds.load(ds.ids()[-1])])
    mixed.root = tmp_path
    with pytest.raises(DataError, match="no semantic keypoints, unlike .*StarMap trains on one kind"):
        model._targets(mixed, ["car", "sofa"], mixed.ids(), progress=False)


def test_keypoint_source_travels_with_the_checkpoint(tmp_path):
    model = S.StarMapPredictor(**TINY)
    assert model.describe()["keypoints"] is None  # not trained yet
    model.keypoint_source = "semantic"
    model.save(tmp_path / "m.pth")
    fresh = S.StarMapPredictor()
    fresh.load(tmp_path / "m.pth")
    assert fresh.keypoint_source == "semantic"
