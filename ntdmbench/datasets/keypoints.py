"""PASCAL3D+'s semantic keypoints: the names per category, in the order NeMo's ``kp_list_dict`` lists
them (the order ``cropped_kp_list`` uses), and their 3D locations on the CAD models, stored as PASCAL3D+
stores them (``CAD/{category}.mat``). See docs/reference.md §Keypoints."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ntdmbench.datasets.records import DataError

if TYPE_CHECKING:
    from ntdmbench.models.meshes import Mesh

MAT_HEADER = b"MATLAB 5.0 MAT-file, written by ntdmbench"
MAT_HEADER_BYTES = 116  # the MAT 5 header's descriptive text; scipy writes the current date into it

KEYPOINT_NAMES: dict[str, tuple[str, ...]] = {
    "aeroplane": ("left_wing", "right_wing", "rudder_upper", "noselanding", "left_elevator", "rudder_lower",
                  "right_elevator", "tail"),
    "bicycle": ("seat_front", "right_back_wheel", "right_pedal_center", "right_front_wheel", "left_front_wheel",
                "left_handle", "seat_back", "head_center", "left_back_wheel", "left_pedal_center", "right_handle"),
    "boat": ("head_down", "head", "tail_right", "tail_left", "head_right", "tail", "head_left"),
    "bottle": ("body", "bottom_left", "bottom", "mouth", "body_right", "body_left", "bottom_right"),
    "bus": ("body_front_left_lower", "body_front_right_upper", "body_back_right_lower", "right_back_wheel",
            "body_back_left_upper", "right_front_wheel", "left_front_wheel", "body_front_left_upper",
            "body_back_left_lower", "body_back_right_upper", "body_front_right_lower", "left_back_wheel"),
    "car": ("left_front_wheel", "left_back_wheel", "right_front_wheel", "right_back_wheel", "upper_left_windshield",
            "upper_right_windshield", "upper_left_rearwindow", "upper_right_rearwindow", "left_front_light",
            "right_front_light", "left_back_trunk", "right_back_trunk"),
    "chair": ("seat_upper_right", "back_upper_left", "seat_lower_right", "leg_lower_left", "back_upper_right",
              "leg_upper_right", "seat_lower_left", "leg_upper_left", "seat_upper_left", "leg_lower_right"),
    "diningtable": ("top_lower_left", "top_up", "top_lower_right", "leg_lower_left", "leg_upper_right", "top_right",
                    "top_left", "leg_upper_left", "top_upper_left", "top_upper_right", "top_down", "leg_lower_right"),
    "motorbike": ("front_seat", "right_back_wheel", "back_seat", "right_front_wheel", "left_front_wheel",
                  "headlight_center", "right_handle_center", "left_handle_center", "head_center", "left_back_wheel"),
    "sofa": ("top_right_corner", "seat_bottom_right", "left_bottom_back", "seat_bottom_left", "front_bottom_right",
             "top_left_corner", "right_bottom_back", "seat_top_left", "front_bottom_left", "seat_top_right"),
    "train": ("head_top", "mid1_left_bottom", "head_left_top", "mid1_left_top", "mid2_right_bottom",
              "head_right_bottom", "mid1_right_bottom", "head_left_bottom", "mid2_left_top", "mid2_left_bottom",
              "head_right_top", "tail_right_top", "tail_left_top", "tail_right_bottom", "tail_left_bottom",
              "mid2_right_top", "mid1_right_top"),
    "tvmonitor": ("back_top_left", "back_bottom_right", "front_bottom_right", "front_top_right", "front_top_left",
                  "back_bottom_left", "back_top_right", "front_bottom_left"),
}


def write_cad_mat(path: Path, models: list[tuple[Mesh, dict[str, np.ndarray]]], names: tuple[str, ...]) -> Path:
    """Write ``CAD/{category}.mat`` as PASCAL3D+ ships it: a ``1 x N`` struct array named after the category
    (the file stem), one entry per CAD model in ``NN.off`` order, with ``vertices``, ``faces`` (1-based) and
    one ``(1, 3)`` field per keypoint name (an empty array where the model lacks that keypoint).

    The header's creation date is fixed, so the same models give a byte-identical file.
    """
    import scipy.io

    path = Path(path)
    dtype = [("vertices", object), ("faces", object)] + [(name, object) for name in names]
    table = np.empty((1, len(models)), dtype=dtype)
    for i, (mesh, keypoints) in enumerate(models):
        table[0, i]["vertices"] = np.asarray(mesh.vertices, dtype=np.float64)
        table[0, i]["faces"] = np.asarray(mesh.faces, dtype=np.float64) + 1
        for name in names:
            point = keypoints.get(name)
            table[0, i][name] = np.zeros((0, 0)) if point is None else np.asarray(point, dtype=np.float64).reshape(1, 3)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {path.stem: table}, do_compression=False, oned_as="row")
    data = buffer.getvalue()
    path.write_bytes(MAT_HEADER.ljust(MAT_HEADER_BYTES) + data[MAT_HEADER_BYTES:])
    return path


def read_cad_keypoints(root: Path, category: str) -> dict[int, np.ndarray]:
    """``{cad_index (1-based): (K, 3)}`` keypoint locations of ``{root}/CAD/{category}.mat`` in
    ``KEYPOINT_NAMES[category]`` order, a NaN row where the model lacks the keypoint (an empty field or none)."""
    import scipy.io

    path = Path(root) / "CAD" / f"{category}.mat"
    if not path.is_file():
        raise DataError(f"{path}: CAD keypoint file not found")
    try:
        mat = scipy.io.loadmat(path, simplify_cells=True)
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError or zlib errors on bad files
        raise DataError(f"{path}: cannot read .mat ({type(exc).__name__}: {exc})") from None
    models = mat.get(category)
    models = [models] if isinstance(models, dict) else list(np.atleast_1d(np.asarray(models, dtype=object)))
    if not models or not all(isinstance(m, dict) for m in models):  # a single model is squeezed to one struct
        raise DataError(f"{path}: no struct array named '{category}' (one entry per CAD model)")
    out = {}
    for index, model in enumerate(models, start=1):
        rows = []
        for name in KEYPOINT_NAMES[category]:
            point = np.asarray(model.get(name, []), dtype=float).ravel()
            if point.size not in (0, 3):
                raise DataError(f"{path}: model {index} keypoint {name} has {point.size} values, not 3")
            rows.append(point if point.size else np.full(3, np.nan))
        out[index] = np.stack(rows)
    return out
