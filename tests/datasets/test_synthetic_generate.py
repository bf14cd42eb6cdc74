import hashlib
import json

import numpy as np
import pytest

from ntdmbench.datasets.catalog import load_dataset
from ntdmbench.datasets.synthetic.generate import OCCLUSION_BANDS, PRESETS, generate
from ntdmbench.datasets.validate import validate

PASCAL = ["pascal3d/train", "pascal3d/val", "occluded-pascal3d/val/L1", "occluded-pascal3d/val/L2",
          "occluded-pascal3d/val/L3"]
OODCV = [f"oodcv/test/{n}" for n in ("shape", "pose", "texture", "context", "weather", "iid")]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, "smoke", seed=0)
    return out


def root_for(out, name):
    return out / ("oodcv" if name.startswith("oodcv") else "pascal3d")


@pytest.mark.parametrize("name", PASCAL + OODCV)
def test_every_split_passes_validate_and_reads_back(smoke, name):
    report = validate(name, root_for(smoke, name))
    assert not report.problems, report.problems
    ds = load_dataset(name, root_for(smoke, name))
    preset = PRESETS["smoke"]
    expected = preset.train if name.endswith("train") else preset.ood if name.startswith("oodcv") else preset.val
    assert len(ds) == expected * len(preset.categories)
    sample = ds.load(ds.ids()[0])
    assert sample.load_image().shape[:2] == sample.amodal_mask.shape
    assert sample.pose.distance == 5.0 and sample.pose.viewport == 3000.0 * preset.scale
    h, w = sample.amodal_mask.shape
    assert sample.pose.principal == (w / 2, h / 2)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_measured_occluded_fraction_lies_in_its_band(smoke, level):
    ds = load_dataset(f"occluded-pascal3d/val/L{level}", smoke / "pascal3d")
    lo, hi = OCCLUSION_BANDS[level]
    for sample_id in ds.ids():
        s = ds.load(sample_id)
        fraction = (s.amodal_mask & s.occluder_mask).sum() / s.amodal_mask.sum()
        assert lo < fraction < hi, (sample_id, fraction)
        assert np.array_equal(s.inmodal_mask, s.amodal_mask & ~s.occluder_mask)


def test_background_occlusion_follows_the_bgl_bands(smoke):
    """FGLk_BGLk: besides the object band, occluders cover a band of the background (Occluded PASCAL3D+)."""
    achieved = json.loads((smoke / "synthetic.json").read_text())["occlusion_achieved"]
    means = [achieved[f"L{k}"]["background_mean"] for k in (1, 2, 3)]
    assert means == sorted(means) and means[2] > 0.3
    assert all(achieved[f"L{k}"]["background_in_band"] >= 0.5 for k in (1, 2, 3))


def test_occluded_levels_share_ids_and_poses_with_clean(smoke):
    clean = load_dataset("pascal3d/val", smoke / "pascal3d")
    occluded = load_dataset("occluded-pascal3d/val/L3", smoke / "pascal3d")
    assert clean.ids() == occluded.ids()
    a, b = clean.load(clean.ids()[0]), occluded.load(clean.ids()[0])
    assert a.pose == b.pose and np.array_equal(a.amodal_mask, b.amodal_mask)
    assert not np.array_equal(a.load_image(), b.load_image())


def test_ood_nuisances_differ_from_iid(smoke):
    meta = json.loads((smoke / "synthetic.json").read_text())
    assert "marble" in meta["held_out"]["texture"] and meta["held_out"]["context"] == "bricks"
    pose = load_dataset("oodcv/test/pose", smoke / "oodcv")
    for sample_id in pose.ids():
        p = pose.load(sample_id).pose
        assert np.degrees(p.elevation) > 45 or abs(np.degrees(p.theta)) > 20


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_identical_files_another_seed_differs(smoke, tmp_path):
    generate(tmp_path / "again", "smoke", seed=0)
    generate(tmp_path / "other", "smoke", seed=1)
    assert digest(tmp_path / "again") == digest(smoke)
    assert digest(tmp_path / "other") != digest(smoke)


def test_contact_sheet_per_split(smoke):
    sheets = {p.stem for p in (smoke / "contact_sheets").glob("*.png")}
    assert {n.replace("/", "_") for n in PASCAL + OODCV} <= sheets


def test_unknown_preset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        generate(tmp_path, "huge")
