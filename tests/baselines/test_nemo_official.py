"""Official NeMo checkpoints (Angtian/NeMo and wufeim/NeMo layouts) load into the project's model,
give the official test-time features and predict.

The checkpoints here are written with the official key names and shapes, read off the official model
definition (``KeypointRepresentationNet.py`` / ``keypoint_representation_net.py`` and
``UpsamplingLayer.py``): ``NetE2E`` wrapped in ``nn.DataParallel`` holds ``net`` (``ResNetExt``:
``extractor`` = conv1, bn1, relu, maxpool, layer1, layer2; ``extractor1`` = layer3; ``extractor2`` =
layer4; ``upsample0 = DoubleConv(2048, 1024)``; ``upsample1 = Up(2048, 1024, 512)``; ``upsample2 =
Up(1024, 512, 256)``, where ``DoubleConv.doubleconv`` is conv3x3(bias)-BN-ReLU-conv3x3(bias)-BN-ReLU and
``Up`` holds its ``DoubleConv(in, out, mid)`` as ``doubleconv``) and ``out_layer = Linear(256, 128)``.
``official_forward`` is ``NetE2E.forward_test`` written out with functional ops.
"""

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ntdmbench.baselines.nemo.official import backbone_depth, convert_state
from ntdmbench.datasets.records import DataError, Pose, Sample
from ntdmbench.models.meshes import cuboid, write_off
from ntdmbench.models.registry import build_model

FAST = {"steps": 3, "n_azimuth": 4, "n_elevation": 1, "n_theta": 1}
BOX = [[-0.2, 0.2], [-0.4, 0.4], [-0.15, 0.05]]
WIDTHS = {50: (512, 1024, 2048), 18: (128, 256, 512)}  # layer2, layer3, layer4 channels


def official_state(depth: int = 50, seed: int = 0) -> dict[str, torch.Tensor]:
    """A ``NetE2E`` state dict as the official training saves it (``module.`` keys, official names)."""
    import torchvision

    torch.manual_seed(seed)
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None).state_dict()
    stems = {"conv1": "net.extractor.0", "bn1": "net.extractor.1", "layer1": "net.extractor.4",
             "layer2": "net.extractor.5", "layer3": "net.extractor1", "layer4": "net.extractor2"}
    state = {}
    for key, value in resnet.items():
        head, _, rest = key.partition(".")
        if head in stems:
            state[f"{stems[head]}.{rest}"] = value
    c2, c3, c4 = WIDTHS[depth]
    blocks = {"net.upsample0.doubleconv.": (c4, c3, c3),  # (in, mid, out)
              "net.upsample1.doubleconv.doubleconv.": (c4, c3, c2),
              "net.upsample2.doubleconv.doubleconv.": (2 * c2, c2, c2 // 2)}
    g = torch.Generator().manual_seed(seed + 1)
    for prefix, (cin, mid, cout) in blocks.items():
        for conv, norm, a, b in (("0", "1", cin, mid), ("3", "4", mid, cout)):
            state[f"{prefix}{conv}.weight"] = torch.randn(b, a, 3, 3, generator=g) * (2 / (9 * a)) ** 0.5
            state[f"{prefix}{conv}.bias"] = torch.randn(b, generator=g) * 0.1
            state[f"{prefix}{norm}.weight"] = 0.5 + torch.rand(b, generator=g)
            state[f"{prefix}{norm}.bias"] = torch.randn(b, generator=g) * 0.1
            state[f"{prefix}{norm}.running_mean"] = torch.randn(b, generator=g) * 0.1
            state[f"{prefix}{norm}.running_var"] = 0.5 + 1.5 * torch.rand(b, generator=g)
            state[f"{prefix}{norm}.num_batches_tracked"] = torch.tensor(1000)
    state["out_layer.weight"] = torch.randn(128, c2 // 2, generator=g) / (c2 // 2) ** 0.5
    state["out_layer.bias"] = torch.randn(128, generator=g)
    return {"module." + k: v for k, v in state.items()}


def official_forward(state: dict[str, torch.Tensor], x: torch.Tensor, depth: int = 50) -> torch.Tensor:
    """``NetE2E.forward_test`` of the official code: ResNetExt, then the head's weight as a 1x1
    convolution **without** its bias, then L2 normalisation over channels."""
    import torchvision

    s = {k.removeprefix("module."): v for k, v in state.items()}
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    names = {"net.extractor.0": "conv1", "net.extractor.1": "bn1", "net.extractor.4": "layer1",
             "net.extractor.5": "layer2", "net.extractor1": "layer3", "net.extractor2": "layer4"}
    encoder = {}
    for key, value in s.items():
        for official, ours in names.items():
            if key.startswith(official + "."):
                encoder[ours + key[len(official):]] = value
    resnet.load_state_dict(encoder, strict=False)
    resnet.eval()

    def double_conv(prefix, t):
        for conv, norm in (("0", "1"), ("3", "4")):
            t = F.conv2d(t, s[prefix + conv + ".weight"], s[prefix + conv + ".bias"], padding=1)
            t = F.batch_norm(t, s[prefix + norm + ".running_mean"], s[prefix + norm + ".running_var"],
                             s[prefix + norm + ".weight"], s[prefix + norm + ".bias"], training=False, eps=1e-5)
            t = F.relu(t)
        return t

    def up(prefix, x1, x2):  # Up.forward(X1, X2): upsample X1, pad it to X2, cat([X2, X1])
        x1 = F.interpolate(x1, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = x2.shape[2] - x1.shape[2], x2.shape[3] - x1.shape[3]
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return double_conv(prefix + "doubleconv.doubleconv.", torch.cat([x2, x1], 1))

    with torch.no_grad():
        x1 = resnet.layer2(resnet.layer1(resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))))
        x2 = resnet.layer3(x1)
        x3 = resnet.layer4(x2)
        m = up("net.upsample2.", up("net.upsample1.", double_conv("net.upsample0.doubleconv.", x3), x2), x1)
        return F.normalize(F.conv2d(m, s["out_layer.weight"][:, :, None, None]), p=2, dim=1)


def write_meshes(root, category, boxes, vertices=60):
    folder = root / category
    folder.mkdir(parents=True)
    meshes = [cuboid(np.array(box), vertices) for box in boxes]
    for k, mesh in enumerate(meshes, 1):
        write_off(folder / f"{k:02d}.off", mesh)
    return meshes


def bank(mesh, n_clutter, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(len(mesh.vertices) + n_clutter, 128, generator=g), dim=1)


def sample(category="car", hw=(32, 64)):
    image = np.random.default_rng(0).integers(0, 255, (*hw, 3), dtype=np.uint8)
    return Sample(id=f"{category}/x", category=category, image=image,
                  pose=Pose(1.0, 0.2, 0.0, 5.0, (hw[1] / 2, hw[0] / 2), 1.0, 375.0))


@pytest.fixture(scope="module")
def resnet50_state():
    return official_state(50)


@pytest.mark.parametrize("layout", ["angtian", "wufeim"])
def test_real_official_checkpoint_loads_gives_the_official_features_and_predicts(layout, resnet50_state, tmp_path):
    meshes = write_meshes(tmp_path / "CAD_single", "car", [BOX])
    memory = bank(meshes[0], 5 * 512)
    if layout == "angtian":  # TrainNeMo.py: saved_model_{cate}_{epoch}.pth
        path = tmp_path / "saved_model_car_799.pth"
        args = argparse.Namespace(type_="car", mesh_d="single", num_noise=5, max_group=512, d_feature=128)
        torch.save({"state": resnet50_state, "memory": [memory], "timestamp": 1600000000, "args": args}, path)
    else:  # wufeim scripts/train.py: model_{epoch}.pth, cfg as a dict
        path = tmp_path / "model_800.pth"
        cfg = {"args": {"cate": "car"}, "model": {"num_noise": 5, "max_group": 512,
                                                  "mesh_path": "CAD_single/{:s}/01.off"}}
        torch.save({"state": resnet50_state, "memory": memory, "lr": 2e-6, "epoch": 800, "cfg": cfg}, path)

    model = build_model("nemo", {"mesh_root": str(tmp_path / "CAD_single"), **FAST})
    model.load(path)
    car = model.models["car"]
    assert model.backbone_depth == 50 and car.banks[0].n_clutter == 2560
    assert torch.equal(car.banks[0].memory, memory)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = car.net.eval()(x)
    diff = (ours - official_forward(resnet50_state, x)).abs().max().item()
    print(f"\n{layout}: max |features - official forward_test| = {diff:.2e}")
    assert diff < 1e-5
    pred = model.predict([sample("car", (64, 96))])[0]
    assert pred.has_pose and pred.category == "car" and pred.inmodal_mask.shape == (64, 96)


def test_conversion_folds_decoder_biases_drops_the_head_bias_and_covers_every_tensor():
    official = official_state(18)
    ours = convert_state(official, "x.pth")
    assert not any("doubleconv" in k for k in ours) and torch.equal(ours["out_layer.bias"], torch.zeros(128))
    assert not [k for k in ours if k.endswith(".0.bias") or k.endswith(".3.bias")]
    # 42 official decoder tensors (14 per DoubleConv) become 36 (12 per DoubleConv, no conv biases)
    assert sum("upsample" in k for k in official) == 42 and sum("upsample" in k for k in ours) == 36
    from ntdmbench.models.backbone import FeatureNet

    assert set(ours) == set(FeatureNet(18, 128).state_dict())
    x = torch.randn(1, 3, 72, 104)  # not a multiple of 32: the decoder pads / crops as the official one
    net = FeatureNet(18, 128).eval()
    net.load_state_dict(ours)
    with torch.no_grad():
        torch.testing.assert_close(net(x), official_forward(official, x, 18), atol=1e-5, rtol=0)


def test_multi_cuboid_checkpoints_and_a_folder_of_categories(tmp_path):
    car = write_meshes(tmp_path / "CAD_multi", "car", [BOX, [[-0.1, 0.1], [-0.3, 0.3], [-0.1, 0.1]]])
    sofa = write_meshes(tmp_path / "CAD_multi", "sofa", [BOX])
    folder = tmp_path / "ckpts"
    folder.mkdir()
    state = official_state(18)
    torch.save({"state": state, "memory": [bank(m, 20, k) for k, m in enumerate(car)], "timestamp": 0,
                "args": argparse.Namespace(type_="car", mesh_d="multi", num_noise=5, max_group=4)},
               folder / "saved_model_car_799.pth")
    torch.save({"state": state, "memory": bank(sofa[0], 2560), "lr": 1e-5, "epoch": 800, "cfg": {}},
               folder / "saved_model_sofa_800.pth")  # no category in cfg: the file name names it

    model = build_model("nemo", {"mesh_root": str(tmp_path / "CAD_multi"), **FAST})
    model.load(folder)
    assert sorted(model.models) == ["car", "sofa"] and len(model.models["car"].banks) == 2
    assert model.mesh_mode == "multi"
    assert model.describe()["categories"]["car"]["meshes"] == [len(m.vertices) for m in car]
    pred = model.predict([sample("sofa")])[0]
    assert set(pred.class_scores) == {"car", "sofa"} and pred.extra["pose_category"] == "sofa"


def test_mismatched_meshes_networks_or_missing_category_are_clear_errors(tmp_path):
    meshes = write_meshes(tmp_path / "CAD_single", "car", [BOX])
    state = official_state(18)
    memory = [torch.cat([bank(meshes[0], 2560), bank(meshes[0], 0)[:7]])]  # 7 rows more than the mesh has
    path = tmp_path / "model_800.pth"
    torch.save({"state": state, "memory": memory, "timestamp": 0, "args": argparse.Namespace(type_="car")}, path)
    with pytest.raises(DataError, match="CAD_single or CAD_multi"):
        build_model("nemo", {"mesh_root": str(tmp_path / "CAD_single")}).load(path)
    torch.save({"state": state, "memory": memory[0][:-7], "timestamp": 0, "args": None}, path)
    with pytest.raises(DataError, match="category=NAME"):
        build_model("nemo", {"mesh_root": str(tmp_path / "CAD_single")}).load(path)
    broken = {k: v for k, v in state.items() if "upsample2" not in k}
    torch.save({"state": broken, "memory": memory[0][:-7], "args": argparse.Namespace(type_="car")}, path)
    with pytest.raises(DataError, match="not a NeMo resnetext network"):
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
