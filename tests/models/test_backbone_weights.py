"""ImageNet starting weights (``backbone_weights``): torchvision's weights API through the torch hub
cache, a local file in torchvision's layout, or none; read only when training starts. No test here
touches the network: the hub cache is a temporary ``TORCH_HOME`` and downloads are made to fail."""

import urllib.error

import pytest
import torch
import torchvision
from toy_data import make_samples

from ntdmbench.baselines.mt_maskrcnn import MultiTaskMaskRCNNPredictor
from ntdmbench.baselines.resnet import ResNetPosePredictor
from ntdmbench.datasets.base import InMemoryDataset
from ntdmbench.datasets.records import CATEGORIES, DataError
from ntdmbench.models.backbone import FeatureNet, load_resnet_weights, resnet_state_dict
from ntdmbench.models.registry import build_model

ENCODER = {"conv1": "extractor.0", "bn1": "extractor.1", "layer1": "extractor.4", "layer2": "extractor.5",
           "layer3": "extractor1", "layer4": "extractor2"}


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub under ``TORCH_HOME``; a download attempt fails as on a machine without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)  # what load_state_dict_from_url calls
    return tmp_path / "torch" / "hub" / "checkpoints"


def torchvision_state(depth=18, seed=0):
    torch.manual_seed(seed)
    return getattr(torchvision.models, f"resnet{depth}")(weights=None).state_dict()


def test_imagenet_weights_come_from_the_hub_cache_through_the_weights_api(offline_hub):
    state = torchvision_state(18)
    offline_hub.mkdir(parents=True)
    torch.save(state, offline_hub / "resnet18-f37072fd.pth")  # ResNet18_Weights.IMAGENET1K_V1's file name
    loaded = resnet_state_dict("imagenet", 18)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    net = FeatureNet(18, 16)
    load_resnet_weights(net.net, loaded)
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in ENCODER:
            assert torch.equal(net.net.state_dict()[f"{ENCODER[head]}.{rest}"], value)


def test_a_failed_download_says_which_file_to_place_where(offline_hub):
    with pytest.raises(DataError) as err:
        resnet_state_dict("imagenet", 50)
    message = str(err.value)
    assert "\n" not in message and "resnet50-0676ba61.pth" in message
    assert str(offline_hub / "resnet50-0676ba61.pth") in message and "backbone_weights=PATH" in message


def test_local_files_none_and_bad_input(tmp_path):
    state = torchvision_state(18)
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "r18.pth")
    loaded = resnet_state_dict(str(tmp_path / "r18.pth"), 18)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    for spec in (None, "none", "None", ""):
        assert resnet_state_dict(spec, 50) is None
    with pytest.raises(DataError, match="missing.pth: backbone weights not found"):
        resnet_state_dict(str(tmp_path / "missing.pth"), 18)
    with pytest.raises(DataError, match="not a torchvision ResNet state dict"):
        load_resnet_weights(FeatureNet(50, 16).net, state, "r18.pth")  # depth 18 weights, depth 50 network


def test_paper_defaults_are_imagenet_and_building_or_loading_never_reads_them(offline_hub, tmp_path):
    for name in ("nemo", "ntdm", "resnet50-pose", "resnet50-class", "mt-maskrcnn"):
        model = build_model(name)
        assert model.backbone_weights == "imagenet", name
    pose = ResNetPosePredictor(depth=18, backbone_weights=None)
    pose.categories = tuple(CATEGORIES[:2])
    pose.save(tmp_path / "pose.pth")
    loaded = ResNetPosePredictor()  # paper default: ImageNet, but loading a checkpoint needs no download
    loaded.load(tmp_path / "pose.pth")
    assert loaded.depth == 18
    assert not offline_hub.exists()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return InMemoryDataset(make_samples(tmp_path_factory.mktemp("toy"), n=8), name="toy/train")


def test_resnet_and_mask_rcnn_training_start_from_a_torchvision_state_dict(toy, tmp_path):
    state = torchvision_state(18, seed=7)
    torch.save(state, tmp_path / "r18.pth")
    pose = ResNetPosePredictor(depth=18, image_size=32, epochs=1, batch_size=8, lr=1e-12,
                               backbone_weights=str(tmp_path / "r18.pth"))
    pose.fit(toy, categories=list(CATEGORIES[:4]), device="cpu", seed=0, progress=False)
    torch.testing.assert_close(pose.net.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(pose.net.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])

    mrcnn = MultiTaskMaskRCNNPredictor(depth=18, min_size=48, max_size=64, proposals_train=20, proposals_test=10,
                                       rois_per_image=16, fpn_channels=16, box_representation=32, mask_channels=8,
                                       epochs=1, batch_size=4, lr=1e-12, warmup_iters=2,
                                       backbone_weights=str(tmp_path / "r18.pth"))
    mrcnn.fit(toy, categories=list(CATEGORIES[:4]), device="cpu", seed=0, progress=False)
    body = mrcnn.net.detector.backbone.body
    torch.testing.assert_close(body.conv1.weight, state["conv1.weight"])  # frozen stem
    torch.testing.assert_close(body.bn1.running_mean, state["bn1.running_mean"])  # frozen batch norm
    torch.testing.assert_close(body.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    assert not body.conv1.weight.requires_grad and body.layer2[0].conv1.weight.requires_grad
    mrcnn.save(tmp_path / "mrcnn.pth")
    again = MultiTaskMaskRCNNPredictor(proposals_test=10)  # frozen batch norm comes back from the checkpoint
    again.load(tmp_path / "mrcnn.pth")
    torch.testing.assert_close(again.net.detector.backbone.body.bn1.running_var, state["bn1.running_var"])


def test_nemo_training_starts_from_the_local_weights(smoke, tmp_path):
    from ntdmbench.datasets.catalog import load_dataset

    state = torchvision_state(18, seed=3)
    torch.save(state, tmp_path / "r18.pth")
    model = build_model("nemo", {"backbone_weights": str(tmp_path / "r18.pth"), "backbone_depth": 18, "epochs": 1,
                                 "batch_size": 4, "lr": 1e-12, "accumulate": 1, "max_group": 4, "mesh_vertices": 100})
    model.fit(load_dataset("pascal3d/train", smoke), categories=["car"], seed=0, progress=False)
    net = model.models["car"].net.net
    torch.testing.assert_close(net.extractor[0].weight, state["conv1.weight"])
    torch.testing.assert_close(net.extractor2[1].conv2.weight, state["layer4.1.conv2.weight"])
