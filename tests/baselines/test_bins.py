"""The published 41-bin viewpoint encoding, its two decoders, and the flip mapping used at test time."""

import math

import numpy as np
import pytest
import torch

from ntdmbench.baselines import bins

B = bins.NUM_BINS
WIDTH = 2 * math.pi / B


def published_targets(azimuth, elevation, theta, num_bins=B):
    """NeMo's ``ResNetGeneral._get_targets``, transcribed (docs/reference.md §Pose as classification)."""
    azimuth, elevation, theta = (np.asarray(v, dtype=np.float64) / np.pi for v in (azimuth, elevation, theta))
    theta = np.where(theta < -1.0, theta + 2.0, np.where(theta > 1.0, theta - 2.0, theta))
    az = np.where(azimuth < 0.0, num_bins - 1 - np.floor(-azimuth * num_bins / 2.0), np.floor(azimuth * num_bins / 2.0))
    el = np.ceil(elevation * num_bins / 2.0 + num_bins / 2.0 - 1)
    th = np.ceil(theta * num_bins / 2.0 + num_bins / 2.0 - 1)
    return np.stack([az, el, th], axis=-1).astype(int)


def random_angles(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, 2 * np.pi, n), rng.uniform(-np.pi / 2, np.pi / 2, n),
                     rng.uniform(-np.pi + 1e-6, np.pi, n)], axis=1)


def circular(d):
    return (d + np.pi) % (2 * np.pi) - np.pi


def test_encoding_matches_the_published_formula():
    angles = random_angles(5000)
    assert np.array_equal(bins.encode(torch.from_numpy(angles)).numpy(), published_targets(*angles.T))


def test_landmark_bins():
    got = bins.encode(torch.tensor([[0.0, 0.0, 0.0], [2 * math.pi - 1e-9, -math.pi / 2, math.pi],
                                    [2 * math.pi, math.pi / 2, -math.pi], [-0.01, 0.0, 3 * math.pi]],
                                   dtype=torch.float64))
    assert got.tolist() == [[0, 20, 20], [40, 10, 40], [0, 30, 40], [40, 20, 40]]


@pytest.mark.parametrize("decoder", bins.DECODERS)
def test_every_bin_round_trips_through_its_decoded_angle(decoder):
    k = torch.arange(B)
    grid = torch.stack([k, k, k], dim=1)
    decoded = bins.decode(grid, decoder=decoder)
    if decoder == "centre":
        assert torch.equal(bins.encode(decoded), grid)
    else:  # the published value is the lower edge of elevation/theta bins: half a bin below the centre
        centre = bins.decode(grid, decoder="centre")
        assert torch.allclose(decoded[:, 0], centre[:, 0])
        assert torch.allclose(centre[:, 1:] - decoded[:, 1:], torch.full((B, 2), WIDTH / 2, dtype=torch.float64))
        assert torch.equal(bins.encode(decoded + torch.tensor([0, 1e-9, 1e-9]))[:, 1:], grid[:, 1:])


def test_decoding_an_encoded_angle_is_within_half_a_bin():
    angles = random_angles(2000, seed=1)
    decoded = bins.decode(bins.encode(torch.from_numpy(angles))).numpy()
    err = np.abs(circular(decoded - angles))
    assert err.max() <= WIDTH / 2 + 1e-9
    level = bins.decode(bins.encode(torch.zeros(1, 3)))[0]
    assert level[1:].abs().max() < 1e-12  # a level, upright object decodes to elevation 0, theta 0


def test_decode_logits_takes_each_group_argmax():
    logits = torch.zeros(2, 3 * B)
    logits[0, [5, B + 20, 2 * B + 40]] = 1.0
    logits[1, [40, B + 0, 2 * B + 13]] = 1.0
    assert torch.equal(bins.decode_logits(logits), bins.decode(torch.tensor([[5, 20, 40], [40, 0, 13]])))


def test_flip_maps_bins_to_the_mirrored_pose():
    angles = random_angles(500, seed=2)
    mirrored = np.stack([2 * np.pi - angles[:, 0], angles[:, 1], -angles[:, 2]], axis=1)
    one_hot = torch.nn.functional.one_hot(bins.encode(torch.from_numpy(angles)), B).float().reshape(-1, 3 * B)
    flipped = bins.flip_logits(one_hot).reshape(-1, 3, B).argmax(-1)
    expected = bins.encode(torch.from_numpy(mirrored))
    assert (flipped == expected).float().mean() > 0.99  # bins differ only on exact bin boundaries


def test_mirror_image_has_the_mirrored_pose():
    """The geometry behind flip averaging: a left-right symmetric object seen at (2pi - a, e, -theta)
    projects to the horizontal mirror of its image at (a, e, theta)."""
    from ntdmbench.models.camera import project

    rng = np.random.default_rng(3)
    half = rng.uniform(-0.5, 0.5, size=(50, 3))
    points = torch.from_numpy(np.concatenate([half, half * [-1, 1, 1]]))  # symmetric about x = 0
    a, e, t = 1.1, 0.4, 0.3
    seen = project(points, a, e, t, 5.0, (100.0, 50.0), 1.0, 750.0)
    mirror = project(points, 2 * math.pi - a, e, -t, 5.0, (100.0, 50.0), 1.0, 750.0)
    seen[:, 0] = 200.0 - seen[:, 0]
    assert torch.cdist(seen, mirror).min(1).values.max() < 1e-3  # pixels


def test_unknown_decoder_is_an_error():
    with pytest.raises(ValueError, match="decoder 'edge'"):
        bins.decode(torch.zeros(1, 3), decoder="edge")
