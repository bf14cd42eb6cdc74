"""Official NeMo checkpoint layouts load into the project's model and predict."""

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ntdmbench.baselines.nemo.official import backbone_depth
from ntdmbench.datasets.records import DataError, Pose, Sample
from ntdmbench.models.backbone import FeatureNet
from ntdmbench.models.meshes import cuboid, write_off
from ntdmbench.models.registry import build_model

FAST = {"steps": 3, "n_azimuth": 4, "n_elevation": 1, "n_theta": 1}


def write_meshes(root, category, boxes):
    folder = root / category
    folder.mkdir(parents=True)
    meshes = [cuboid(np.array(box), 60) for box in boxes]
    for k, mesh in enumerate(meshes, 1):
        write_off(folder / f"{k:02d}.off", mesh)
    return meshes


def official_payload(meshes, seed=0, n_clutter=20):
    torch.manual_seed(seed)
    net = FeatureNet(18, 128)
    state = {"module." + k: v for k, v in net.state_dict().items()}  # saved from DataParallel
    memory = [F.normalize(torch.randn(len(m.vertices) + n_clutter, 128), dim=1) for m in meshes]
    return net, memory, state


def sample(category="car"):
    image = np.random.default_rng(0).integers(0, 255, (32, 64, 3), dtype=np.uint8)
    return Sample(id=f"{category}/x", category=category, image=image,
                  pose=Pose(1.0, 0.2, 0.0, 5.0, (32.0, 16.0), 1.0, 375.0))


BOX = [[-0.2, 0.2], [-0.4, 0.4], [-0.15, 0.05]]


def test_original_layout_loads_and_predicts(tmp_path):
    meshes = write_meshes(tmp_path / "CAD_single", "car", [BOX])
    net, memory, state = official_payload(meshes)
    args = argparse.Namespace(type_="car", mesh_d="single", num_noise=5, max_group=4, d_feature=128)
    path = tmp_path / "saved_model_car_799.pth"
    torch.save({"state": state, "memory": memory, "timestamp": 1600000000, "args": args}, path)

    model = build_model("nemo", {"mesh_root": str(tmp_path / "CAD_single"), **FAST})
    model.load(path)
    car = model.models["car"]
    assert model.backbone_depth == 18 and model.checkpoint_sha256
    assert all(torch.equal(v, car.net.state_dict()[k]) for k, v in net.state_dict().items())
    assert torch.equal(car.banks[0].memory, memory[0]) and car.banks[0].n_clutter == 20
    pred = model.predict([sample()])[0]
    assert pred.has_pose and set(pred.class_scores) == {"car"} and pred.category == "car"
    assert pred.inmodal_mask.shape == (32, 64)


def test_refactor_layout_with_one_memory_tensor_and_a_folder_of_categories(tmp_path):
    car = write_meshes(tmp_path / "CAD_multi", "car", [BOX, [[-0.1, 0.1], [-0.3, 0.3], [-0.1, 0.1]]])
    sofa = write_meshes(tmp_path / "CAD_multi", "sofa", [BOX])
    folder = tmp_path / "ckpts"
    folder.mkdir()
    _, memory, state = official_payload(car, n_clutter=2560)
    torch.save({"state": state, "memory": memory, "timestamp": 0,
                "args": argparse.Namespace(type_="car", mesh_d="multi")}, folder / "saved_model_car_799.pth")
    _, memory, state = official_payload(sofa, seed=1, n_clutter=2560)  # refactor: one tensor, no args
    torch.save({"state": state, "memory": memory[0], "lr": 1e-5, "epoch": 800, "cfg": {}},
               folder / "saved_model_sofa_800.pth")

    model = build_model("nemo", {"mesh_root": str(tmp_path / "CAD_multi"), **FAST})
    model.load(folder)
    assert sorted(model.models) == ["car", "sofa"] and len(model.models["car"].banks) == 2
    assert model.mesh_mode == "multi"
    info = model.describe()
    assert info["categories"]["car"]["meshes"] == [len(m.vertices) for m in car]
    pred = model.predict([sample("sofa")])[0]
    assert set(pred.class_scores) == {"car", "sofa"} and pred.extra["pose_category"] == "sofa"


def test_mismatched_meshes_or_missing_category_are_clear_errors(tmp_path):
    meshes = write_meshes(tmp_path / "CAD_single", "car", [BOX])
    _, memory, state = official_payload(meshes)
    memory = [torch.cat([memory[0], memory[0][:7]])]  # 7 rows more than the mesh has vertices
    path = tmp_path / "model_800.pth"
    torch.save({"state": state, "memory": memory, "timestamp": 0, "args": argparse.Namespace(type_="car")}, path)
    with pytest.raises(DataError, match="CAD_single or CAD_multi"):
        build_model("nemo", {"mesh_root": str(tmp_path / "CAD_single")}).load(path)
    torch.save({"state": state, "memory": memory, "timestamp": 0, "args": None}, path)
    with pytest.raises(DataError, match="category=NAME"):
        build_model("nemo", {"mesh_root": str(tmp_path / "CAD_single")}).load(path)


def test_backbone_depth_from_state_keys():
    def keys(blocks, bottleneck):
        convs = ("conv1", "conv2", "conv3") if bottleneck else ("conv1", "conv2")
        return {f"net.extractor1.{i}.{c}.weight": None for i in range(blocks) for c in convs}

    assert backbone_depth(keys(6, True)) == 50
    assert backbone_depth(keys(6, False)) == 34
    assert backbone_depth(keys(23, True)) == 101
    with pytest.raises(DataError, match="3 layer3 blocks"):
        backbone_depth(keys(3, True))
