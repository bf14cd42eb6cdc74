"""NeMo training as published: visibility labels by the official rule (depth test in the original image,
inside the annotated box), the learning-rate schedules and gradient accumulation across epochs.

``official_labels`` is Angtian/NeMo's ``MeshConverter.get_one`` + ``CalculateOcc.cal_occ_one_image``
written out here as the official code runs it, one triangle at a time.
"""

import math

import numpy as np
import pytest
import torch

from ntdmbench.baselines.nemo import training
from ntdmbench.baselines.nemo.training import TrainSettings
from ntdmbench.baselines.nemo.category import CategoryModel
from ntdmbench.baselines.nemo.labels import OriginalView, annotation_path, official_visibility, original_view
from ntdmbench.datasets.catalog import load_dataset
from ntdmbench.datasets.records import Pose, Sample
from ntdmbench.models.meshes import cuboid
from ntdmbench.models.predictor import InputSpec
from ntdmbench.models.registry import build_model
from ntdmbench.models.settings import settings_from


def pascal_project(x3d, a, e, th, d, principal, viewport=3000.0):
    """PASCAL3D+'s projection (docs/reference.md §Camera and rotation): pixels (x, y)."""
    C = d * np.array([math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a), math.sin(e)])
    az, el = -a, -(math.pi / 2 - e)
    Rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    Rx = np.array([[1, 0, 0], [0, math.cos(el), -math.sin(el)], [0, math.sin(el), math.cos(el)]])
    R = Rx @ Rz
    P = np.diag([viewport, viewport, -1.0]) @ np.hstack([R, -R @ C[:, None]])
    x = P @ np.vstack([x3d.T, np.ones(len(x3d))])
    xy = x[:2] / x[2]
    xy = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]]) @ xy
    xy = xy.T
    xy[:, 1] *= -1
    return xy + np.asarray(principal), C


def area(p0, p1, p2):
    return np.abs(p0[0] * (p1[1] - p2[1]) + p1[0] * (p2[1] - p0[1]) + p2[0] * (p0[1] - p1[1])) / 2


def official_labels(vertices, faces, pose, image_hw, box_ori):
    xy, C = pascal_project(vertices, pose.azimuth, pose.elevation, pose.theta, pose.distance, pose.principal)
    points = np.flip(xy.astype(np.int32), axis=1)  # (y, x)
    distance = np.sum((vertices - C) ** 2, axis=1) ** 0.5
    distance = (distance - distance.min()) / (distance.max() - distance.min())
    H, W = image_hw
    depth = np.full(image_hw, 1e10)
    clamped = np.minimum(np.maximum(points, 0), np.array([H - 1, W - 1]))
    for tri in faces:
        p = clamped[tri].astype(np.float64)
        lo, hi = p.min(0).astype(int), p.max(0).astype(int)
        h, w = hi - lo
        if h * w < 3 or area(*p) < 1e-2:
            continue
        p = p - lo
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        pos = np.stack([ys.ravel(), xs.ravel()], 1).astype(np.float64)
        inside = np.abs(area(*p) - (area(p[0], p[1], pos.T) + area(p[1], p[2], pos.T) + area(p[0], p[2], pos.T))) < 3
        plane = distance[tri] @ np.linalg.inv(np.vstack([p.T, np.ones(3)]))
        z = (pos @ plane[:2] + plane[2]).reshape(h, w)
        z = np.where(inside.reshape(h, w), z, 1e10)
        depth[lo[0]:hi[0], lo[1]:hi[1]] = np.minimum(depth[lo[0]:hi[0], lo[1]:hi[1]], z)
    depth[depth > 0.9e10] = 0
    visible = np.abs(distance - depth[clamped[:, 0], clamped[:, 1]]) < 1e-3
    y0, y1, x0, x1 = box_ori
    return visible & (y0 <= points[:, 0]) & (points[:, 0] < y1) & (x0 <= points[:, 1]) & (points[:, 1] < x1)


POSES = [(0.3, 0.2, 0.05, 7.0), (2.0, 0.5, -0.2, 9.5), (4.4, -0.1, 0.3, 6.0), (5.9, 0.9, 0.0, 12.0)]


@pytest.mark.parametrize("angles", POSES)
def test_visibility_equals_the_official_algorithm(angles):
    mesh = cuboid(np.array([[-0.19, 0.19], [-0.41, 0.41], [-0.16, 0.14]]), 1000)
    pose = Pose(*angles, principal=(210.0, 150.0))
    xy, _ = pascal_project(mesh.vertices, *angles, pose.principal)
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    box = (y0 + 4, y1 - 9, x0 + 6, x1 - 3)  # an annotated box a little inside the projection
    view = OriginalView((300, 420), pose, box)
    ours = official_visibility(torch.as_tensor(mesh.vertices), torch.as_tensor(mesh.faces), view).numpy()
    expected = official_labels(mesh.vertices, mesh.faces, pose, (300, 420), box)
    assert 0.2 < expected.mean() < 0.6
    np.testing.assert_array_equal(ours, expected)


def test_original_view_from_the_nemo_annotation_or_the_crop(smoke, tmp_path):
    dataset = load_dataset("pascal3d/train", smoke)
    sample = dataset.load(dataset.ids()[0])
    path = annotation_path(sample)
    with np.load(path) as z:
        hw, rate, box = (int(z["height"]), int(z["width"])), float(z["resize_rate"]), z["box_ori"][:4]
    view = original_view(sample)
    assert view.image_hw == hw and view.pose.distance == pytest.approx(sample.pose.distance * rate)
    assert view.box == pytest.approx(tuple(box)) and view.pose.azimuth == sample.pose.azimuth
    image = np.zeros((40, 60, 3), np.uint8)
    loose = Sample("car/x", "car", Pose(0.1, 0.2, 0.0, 5.0, (30.0, 20.0)), image=image, bbox=(5, 6, 50, 30))
    assert original_view(loose) == OriginalView((40, 60), loose.pose, (6, 30, 5, 50))


def test_learning_rate_schedules():
    settings = settings_from(TrainSettings, build_model("nemo", {"lr": 1e-4}))
    assert settings.lr_schedule == "angtian"  # TrainNeMo.py, the paper's code
    assert [training.epoch_lr(settings, e) for e in (0, 1, 10, 11, 799)] == pytest.approx([1e-4] + [2e-5] * 4)
    wufeim = settings_from(TrainSettings, build_model("nemo", {"lr": 1e-4, "lr_schedule": "wufeim"}))
    assert [training.epoch_lr(wufeim, e) for e in (0, 399, 400, 599, 600, 799)] == pytest.approx(
        [1e-4, 1e-4, 2e-5, 2e-5, 4e-6, 4e-6])
    constant = settings_from(TrainSettings, build_model("nemo", {"lr": 1e-4, "lr_schedule": "constant"}))
    assert training.epoch_lr(constant, 700) == 1e-4
    with pytest.raises(ValueError, match="lr_schedule"):
        build_model("nemo", {"lr_schedule": "cosine"})


def test_accumulation_counts_batches_across_epochs(smoke, monkeypatch):
    dataset = load_dataset("pascal3d/train", smoke)
    ids = dataset.ids()[:6]
    assert len(ids) == 6
    settings = settings_from(TrainSettings, build_model("nemo", {"backbone_depth": 18, "epochs": 2, "batch_size": 2,
                                                             "accumulate": 2, "max_group": 4, "lr_schedule": "constant"}))
    model = CategoryModel([cuboid(np.array([[-0.2, 0.2], [-0.4, 0.4], [-0.15, 0.15]]), 100)], 18, 128, 20)
    items = [training.prepare(dataset.load(i), model, InputSpec(needs_category=True), settings) for i in ids]
    steps = []
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1))

    class Bar:
        def set_postfix(self, **kwargs):
            pass

        def update(self):
            pass

    training.train_category(model, items, settings, seed=0, category_index=5, start_state=None,
                            save_state=lambda get, last: None, bar=Bar())
    # 3 batches of 2 per epoch, 6 over 2 epochs, one counter: steps after batches 0, 2 and 4 (TrainNeMo.py's
    # iter_num % train_accumulate == 0); a per-epoch counter would step 4 times
    assert len(steps) == 3
