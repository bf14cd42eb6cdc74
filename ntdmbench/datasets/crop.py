"""The NeMo crop rule: rescale the image so the object appears at distance 5, then cut a fixed window
centred on the principal point (zero padding outside the image).

Integer rounding follows NeMo/BboxTools exactly (truncation of the resized size, of the scaled principal
point and of the scaled box), so ``box_obj`` matches what NeMo's preparation writes. Boxes use the
BboxTools layout ``[y0, y1, x0, x1, H_boundary, W_boundary]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

TARGET_DISTANCE = 5.0

CROP_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    # wufeim/NeMo config/datasets/pascal3d.yaml (the refactor; default)
    "refactor": {
        "aeroplane": (320, 672), "bicycle": (608, 608), "boat": (384, 672), "bottle": (480, 800),
        "bus": (320, 736), "car": (256, 672), "chair": (608, 384), "diningtable": (384, 800),
        "motorbike": (512, 512), "sofa": (352, 736), "train": (256, 608), "tvmonitor": (480, 448),
    },
    # Angtian/NeMo top_50_size_dict rounded up to multiples of 32 (the original ICLR code)
    "original": {
        "aeroplane": (320, 1024), "bicycle": (608, 608), "boat": (480, 1120), "bottle": (512, 736),
        "bus": (320, 800), "car": (256, 672), "chair": (544, 384), "diningtable": (320, 800),
        "motorbike": (512, 512), "sofa": (352, 736), "train": (256, 608), "tvmonitor": (480, 480),
    },
}
"""Crop (H, W) per category."""


def bbt_to_xyxy(box) -> tuple[float, float, float, float]:
    """A BboxTools ``[y0, y1, x0, x1, ...]`` box as ``(x0, y0, x1, y1)``."""
    y0, y1, x0, x1 = (float(v) for v in np.asarray(box, dtype=float).ravel()[:4])
    return (x0, y0, x1, y1)


@dataclass(frozen=True)
class Crop:
    """Where one object's window lies in the resized image, and how to apply it."""

    resize_rate: float
    resized_hw: tuple[int, int]
    origin: tuple[int, int]  # (y0, x0) of the window in resized-image pixels; negative means padding
    out_shape: tuple[int, int]

    @classmethod
    def around_principal(cls, principal: tuple[float, float], distance: float,
                         image_hw: tuple[int, int], out_shape: tuple[int, int]) -> "Crop":
        if not distance > 0:
            raise ValueError(f"crop needs a positive distance, got {distance}")
        rate = float(distance) / TARGET_DISTANCE
        (h, w), (out_h, out_w) = image_hw, out_shape
        cy, cx = int(principal[1] * rate), int(principal[0] * rate)
        return cls(rate, (int(h * rate), int(w * rate)), (cy - out_h // 2, cx - out_w // 2), tuple(out_shape))

    @property
    def padding(self) -> tuple[int, int, int, int, int, int]:
        """NeMo's ``padding_params``: top, bottom, left, right, 0, 0."""
        (y0, x0), (h, w), (out_h, out_w) = self.origin, self.resized_hw, self.out_shape
        return (max(-y0, 0), max(y0 + out_h - h, 0), max(-x0, 0), max(x0 + out_w - w, 0), 0, 0)

    @property
    def principal_in_crop(self) -> tuple[float, float]:
        """(px, py) NeMo writes for the crop: its centre."""
        return (float(self.out_shape[1] // 2), float(self.out_shape[0] // 2))

    def window_box(self) -> np.ndarray:
        """NeMo's ``box``: the window in the resized-and-padded image, boundary = that image's size."""
        top, bottom, left, right, _, _ = self.padding
        (y0, x0), (h, w), (out_h, out_w) = self.origin, self.resized_hw, self.out_shape
        return np.array([y0 + top, y0 + top + out_h, x0 + left, x0 + left + out_w,
                         h + top + bottom, w + left + right], dtype=np.float32)

    def box_obj(self, bbox_xyxy) -> np.ndarray:
        """NeMo's ``box_obj``: the object box inside the crop, clipped to it, boundary = crop size."""
        x0, y0, x1, y1 = np.trunc(np.asarray(bbox_xyxy, dtype=float)[:4])
        scaled = np.trunc(np.array([y0, y1, x0, x1]) * self.resize_rate)
        shifted = scaled - np.repeat(self.origin, 2)
        out_h, out_w = self.out_shape
        clipped = np.clip(shifted, 0, np.repeat(self.out_shape, 2))
        return np.concatenate([clipped, [out_h, out_w]]).astype(np.float32)

    def points(self, xy) -> np.ndarray:
        """Image pixels ``(N, 2)`` (x right, y down) to crop pixels: scaled by ``resize_rate``, shifted by the
        window origin (NeMo maps keypoints with the box-to-box projection, which is this map)."""
        y0, x0 = self.origin
        return np.asarray(xy, dtype=float) * self.resize_rate - np.array([x0, y0], dtype=float)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Resize (bilinear for images, nearest for boolean masks), then cut the window."""
        is_mask = array.dtype == bool
        image = Image.fromarray(array.astype(np.uint8) if is_mask else array)
        h, w = self.resized_hw
        resized = np.asarray(image.resize((w, h), Image.NEAREST if is_mask else Image.BILINEAR))
        return self._window(resized.astype(bool) if is_mask else resized)

    def _window(self, arr: np.ndarray) -> np.ndarray:
        (y0, x0), (out_h, out_w) = self.origin, self.out_shape
        out = np.zeros((out_h, out_w) + arr.shape[2:], dtype=arr.dtype)
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + out_h, arr.shape[0]), min(x0 + out_w, arr.shape[1])
        if ye > ys and xe > xs:
            out[ys - y0:ye - y0, xs - x0:xe - x0] = arr[ys:ye, xs:xe]
        return out
