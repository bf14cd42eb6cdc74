"""Turn samples into a normalised image batch the way a model's ``InputSpec`` asks."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ntdmbench.datasets.records import Sample
from ntdmbench.models.predictor import InputSpec


def image_batch(samples: Sequence[Sample], spec: InputSpec, device: str | torch.device = "cpu"
                ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``[B,3,H,W]`` float images normalised with the spec's mean/std, and each sample's original (H, W).

    With ``spec.image_size`` every image is resized to it; otherwise images keep their size and are
    zero-padded (after normalisation) at the bottom and right to the largest in the batch, so pixel
    coordinates, and with them the camera's principal point, are unchanged.
    """
    mean = torch.tensor(spec.mean, device=device).view(3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(3, 1, 1)
    images, sizes = [], []
    for s in samples:
        arr = np.array(s.load_image(), dtype=np.uint8)  # a writable copy: decoded images may be read-only
        x = torch.from_numpy(arr).to(device).permute(2, 0, 1).float().div_(255)
        sizes.append(tuple(x.shape[-2:]))
        if spec.image_size is not None:
            x = F.interpolate(x[None], size=spec.image_size, mode="bilinear", align_corners=False)[0]
        images.append((x - mean) / std)
    h = max(x.shape[-2] for x in images)
    w = max(x.shape[-1] for x in images)
    batch = torch.stack([F.pad(x, [0, w - x.shape[-1], 0, h - x.shape[-2]]) for x in images])
    return batch, sizes
