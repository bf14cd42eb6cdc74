"""Pose as classification: the published 41-bin encoding of (azimuth, elevation, theta) and its decoder.

The encoding is the one of Tulsiani & Malik's ViewpointsAndKeypoints as used by StarMap and NeMo's
``ResNetGeneral`` (``docs/reference.md`` §Pose as classification). With ``v = angle / pi`` and ``B`` bins:

- azimuth (wrapped into [0, 2pi)): ``floor(v * B/2)``; bin ``k`` covers ``[k, k+1) * 2pi/B``;
- elevation and theta (theta wrapped into (-pi, pi]): ``ceil(v * B/2 + B/2 - 1)``; bin ``k`` covers
  ``((k - B/2), (k - B/2 + 1)] * 2pi/B``, so zero sits in the middle of bin ``(B-1)/2``.

Decoding: azimuth goes to its bin centre ``(k + 0.5) * 2pi/B`` in both settings. For elevation and
theta the published decoder returns ``(k - B/2) * 2pi/B``, the bin's *lower edge* (a half-bin bias,
about 4.4 degrees at B=41); ``decoder="centre"`` (the default) returns the centre ``(k - B/2 + 0.5) *
2pi/B`` instead, so an exactly level, upright object decodes to elevation 0 and theta 0.
"""

from __future__ import annotations

import math

import torch

NUM_BINS = 41
DECODERS = ("centre", "published")


def check_decoder(decoder: str) -> str:
    if decoder not in DECODERS:
        raise ValueError(f"decoder {decoder!r}: choose one of {', '.join(DECODERS)}")
    return decoder


def encode(angles: torch.Tensor, num_bins: int = NUM_BINS) -> torch.Tensor:
    """``[..., 3]`` (azimuth, elevation, theta) in radians -> ``[..., 3]`` long bin indices in [0, B)."""
    angles = torch.as_tensor(angles, dtype=torch.float64)
    half = num_bins / 2.0
    azimuth = torch.remainder(angles[..., 0], 2 * math.pi) / math.pi
    elevation = angles[..., 1] / math.pi
    theta = -torch.remainder(-angles[..., 2] + math.pi, 2 * math.pi) / math.pi + 1.0  # into (-1, 1]
    bins = torch.stack([
        torch.floor(azimuth * half),
        torch.ceil(elevation * half + half - 1),
        torch.ceil(theta * half + half - 1),
    ], dim=-1)
    return bins.clamp_(0, num_bins - 1).long()


def decode(bins: torch.Tensor, num_bins: int = NUM_BINS, decoder: str = "centre") -> torch.Tensor:
    """``[..., 3]`` bin indices -> ``[..., 3]`` float64 angles in radians (see the module docstring)."""
    check_decoder(decoder)
    bins = torch.as_tensor(bins, dtype=torch.float64)
    width = math.pi / (num_bins / 2.0)
    offset = 0.5 if decoder == "centre" else 0.0
    azimuth = (bins[..., 0] + 0.5) * width
    rest = (bins[..., 1:] - num_bins / 2.0 + offset) * width
    return torch.cat([azimuth[..., None], rest], dim=-1)


def decode_logits(logits: torch.Tensor, num_bins: int = NUM_BINS, decoder: str = "centre") -> torch.Tensor:
    """``[N, 3*B]`` scores (azimuth, elevation, theta groups) -> ``[N, 3]`` angles from each group's argmax."""
    return decode(logits.reshape(-1, 3, num_bins).argmax(-1), num_bins, decoder)


def flip_logits(logits: torch.Tensor, num_bins: int = NUM_BINS) -> torch.Tensor:
    """Scores of a horizontally flipped image mapped back: azimuth and theta bins reversed, elevation kept.

    A mirror image has azimuth ``2pi - a`` and in-plane rotation ``-theta``; with the bins above both
    are bin ``B-1-k`` (test-time flip averaging of NeMo's ``ResNetGeneral.evaluate``).
    """
    groups = logits.reshape(-1, 3, num_bins)
    return torch.stack([groups[:, 0].flip(-1), groups[:, 1], groups[:, 2].flip(-1)], dim=1).reshape(logits.shape)
