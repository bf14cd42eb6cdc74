"""Procedural CAD models for the 12 PASCAL3D+ categories, in the PASCAL3D+ CAD frame.

Frame: z up, the object's length along y with its front towards -y (so azimuth 0 looks at the
front), x to the object's right; units as PASCAL3D+ CAD (a car is about 0.8 long). Every category is
assembled from closed, outward-facing primitives (boxes, hexahedra, lathes, tubes) whose proportions
are drawn per subtype, so subtypes of a category differ the way PASCAL3D+'s do (sedan / SUV / van,
airliner / fighter, ...). The number of subtypes follows PASCAL3D+ (``MESH_LEN``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ntdmbench.datasets.crop import CROP_SIZES
from ntdmbench.datasets.records import CATEGORIES
from ntdmbench.models.meshes import Mesh, write_off

SUBTYPES: dict[str, int] = {
    "aeroplane": 8, "bicycle": 6, "boat": 6, "bottle": 8, "bus": 6, "car": 10,
    "chair": 10, "diningtable": 6, "motorbike": 5, "sofa": 6, "train": 4, "tvmonitor": 4,
}
"""CAD models per category, as in PASCAL3D+ (NeMo's ``MESH_LEN``)."""

# --- primitives ---------------------------------------------------------------------------------

# corners of a unit hexahedron, bit k of the index selects the + side of axis k; faces outward
_HEX_FACES = np.array([
    [0, 2, 3], [0, 3, 1],  # z-
    [4, 5, 7], [4, 7, 6],  # z+
    [0, 1, 5], [0, 5, 4],  # y-
    [2, 6, 7], [2, 7, 3],  # y+
    [0, 4, 6], [0, 6, 2],  # x-
    [1, 3, 7], [1, 7, 5],  # x+
])


def hexahedron(corners: np.ndarray) -> Mesh:
    """A closed six-sided solid from 8 corners ordered like the unit cube's (x fastest, then y, z)."""
    return Mesh(np.asarray(corners, dtype=np.float64), _HEX_FACES.copy())


def box(center, size) -> Mesh:
    signs = np.array([[(i >> k) & 1 for k in range(3)] for i in range(8)], dtype=np.float64) - 0.5
    return hexahedron(np.asarray(center) + signs * np.asarray(size))


def tapered_box(center, bottom_size, top_size, top_shift=(0.0, 0.0)) -> Mesh:
    """A box whose top face has its own (x, y) size and offset: hulls, cabins, noses."""
    c = np.asarray(center, dtype=np.float64)
    corners = []
    for i in range(8):
        sx, sy, sz = ((i >> k) & 1 for k in range(3))
        w, l = (top_size if sz else bottom_size)[:2]
        shift = top_shift if sz else (0.0, 0.0)
        h = bottom_size[2]
        corners.append(c + [(sx - 0.5) * w + shift[0], (sy - 0.5) * l + shift[1], (sz - 0.5) * h])
    return hexahedron(np.array(corners))


def _frame(axis) -> np.ndarray:
    """A rotation taking +z to ``axis``."""
    z = np.asarray(axis, dtype=np.float64)
    z = z / np.linalg.norm(z)
    helper = np.array([1.0, 0, 0]) if abs(z[0]) < 0.9 else np.array([0, 1.0, 0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def lathe(radii, heights, center=(0, 0, 0), axis=(0, 0, 1), segments: int = 16) -> Mesh:
    """Revolve the profile ``r(h)`` about ``axis`` through ``center``; the ends are capped."""
    r = np.asarray(radii, dtype=np.float64)
    h = np.asarray(heights, dtype=np.float64)
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    rings = np.concatenate([np.column_stack([ring * ri, np.full(segments, hi)]) for ri, hi in zip(r, h)])
    n = len(r)
    bottom, top = n * segments, n * segments + 1
    verts = np.vstack([rings, [0, 0, h[0]], [0, 0, h[-1]]])
    faces = []
    j = np.arange(segments)
    k = (j + 1) % segments
    for i in range(n - 1):
        a, b = i * segments + j, (i + 1) * segments + j
        a2, b2 = i * segments + k, (i + 1) * segments + k
        faces += [np.stack([a, a2, b2], 1), np.stack([a, b2, b], 1)]
    faces += [np.stack([np.full(segments, bottom), k, j], 1),
              np.stack([np.full(segments, top), (n - 1) * segments + j, (n - 1) * segments + k], 1)]
    verts = verts @ _frame(axis).T + np.asarray(center, dtype=np.float64)
    return Mesh(verts, np.concatenate(faces).astype(np.int64))


def cylinder(center, radius, length, axis=(0, 0, 1), segments: int = 16) -> Mesh:
    return lathe([radius, radius], [-length / 2, length / 2], center, axis, segments)


def tube(p0, p1, radius, segments: int = 8) -> Mesh:
    """A thin cylinder from point ``p0`` to ``p1`` (frames, legs, handlebars)."""
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    return cylinder((p0 + p1) / 2, radius, np.linalg.norm(p1 - p0), p1 - p0, segments)


def ellipsoid(center, radii, segments: int = 16, rings: int = 8) -> Mesh:
    t = np.linspace(-np.pi / 2, np.pi / 2, rings + 2)[1:-1]
    mesh = lathe(np.cos(t), np.sin(t), segments=segments)
    return Mesh(mesh.vertices * np.asarray(radii) + np.asarray(center), mesh.faces)


def wheel(center, radius, width, segments: int = 16) -> Mesh:
    """A wheel turning about x, slightly rounded at the rim."""
    r = radius * np.array([0.7, 0.97, 1.0, 1.0, 0.97, 0.7])
    h = width * np.array([-0.5, -0.5, -0.3, 0.3, 0.5, 0.5])
    return lathe(r, h, center, (1, 0, 0), segments)


def merge(parts: list[Mesh]) -> Mesh:
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    return Mesh(np.vstack([p.vertices for p in parts]),
                np.vstack([p.faces + o for p, o in zip(parts, offsets)]).astype(np.int64))


# --- categories ---------------------------------------------------------------------------------
# Each builder draws one subtype's proportions from ``rng`` and returns its parts.


def _car(rng) -> list[Mesh]:
    kind = rng.choice(["sedan", "hatch", "suv", "van", "pickup"])
    L = rng.uniform(0.72, 0.9)
    W = rng.uniform(0.33, 0.38)
    body_h = rng.uniform(0.12, 0.16) + (0.04 if kind in ("suv", "van") else 0.0)
    r = rng.uniform(0.06, 0.08)
    z0 = -0.16 + r * 0.6
    parts = [box((0, 0, z0 + body_h / 2), (W, L, body_h))]
    cab_h = {"van": 0.16, "suv": 0.13}.get(kind, rng.uniform(0.1, 0.13))
    cab_l = {"van": 0.8, "suv": 0.62, "hatch": 0.55, "pickup": 0.3}.get(kind, rng.uniform(0.45, 0.52)) * L
    cab_y = {"van": 0.05, "pickup": -0.12, "hatch": 0.08}.get(kind, 0.02) * L
    parts.append(tapered_box((0, cab_y, z0 + body_h + cab_h / 2), (W * 0.92, cab_l, cab_h),
                             (W * 0.8, cab_l * 0.7)))
    for sy in (-1, 1):
        for sx in (-1, 1):
            parts.append(wheel((sx * (W / 2 - 0.02), sy * (L / 2 - 0.15 * L), z0), r, 0.06))
    return parts


def _bus(rng) -> list[Mesh]:
    L, W, H = rng.uniform(0.8, 1.0), rng.uniform(0.24, 0.28), rng.uniform(0.28, 0.36)
    r = 0.05
    z0 = -H / 2 + r * 0.5
    parts = [box((0, 0, z0 + H / 2), (W, L, H))]
    if rng.random() < 0.3:  # double decker / coach roof
        parts.append(box((0, 0.02, z0 + H + 0.04), (W * 0.96, L * 0.9, 0.08)))
    axles = [-0.33, 0.33] if rng.random() < 0.6 else [-0.35, 0.2, 0.33]
    for ay in axles:
        for sx in (-1, 1):
            parts.append(wheel((sx * W / 2, ay * L, z0), r, 0.05))
    return parts


def _train(rng) -> list[Mesh]:
    L, W, H = rng.uniform(0.9, 1.1), rng.uniform(0.18, 0.22), rng.uniform(0.22, 0.28)
    parts = [box((0, 0.05, 0), (W, L - 0.1, H))]
    nose = rng.uniform(0.08, 0.18)
    parts.append(tapered_box((0, -L / 2 + nose / 2 - 0.0, 0), (W, nose, H), (W * 0.9, nose * 0.3), (0, nose * 0.35)))
    if rng.random() < 0.5:  # pantograph or chimney
        parts.append(cylinder((0, -L / 4, H / 2 + 0.04), 0.025, 0.08))
    for ay in np.linspace(-0.4, 0.4, 4) * L:
        for sx in (-1, 1):
            parts.append(wheel((sx * W * 0.45, ay, -H / 2 - 0.02), 0.035, 0.03, segments=10))
    return parts


def _aeroplane(rng) -> list[Mesh]:
    fighter = rng.random() < 0.35
    L = rng.uniform(0.85, 1.0)
    r = rng.uniform(0.04, 0.06) if fighter else rng.uniform(0.05, 0.08)
    prof_y = np.array([-0.5, -0.44, -0.35, 0.3, 0.5]) * L
    prof_r = np.array([0.05, 0.6, 1.0, 0.9, 0.25]) * r
    parts = [lathe(prof_r, prof_y, axis=(0, 1, 0))]
    span = rng.uniform(0.5, 0.7) if fighter else rng.uniform(0.8, 1.0)
    chord = rng.uniform(0.18, 0.28) if fighter else rng.uniform(0.12, 0.18)
    sweep = rng.uniform(0.05, 0.2)
    wing_z = -r * 0.4 if rng.random() < 0.7 else r * 0.6
    for s in (-1, 1):
        xs = (0.03, span / 2) if s > 0 else (-span / 2, -0.03)  # keeps corner order, hence face orientation
        corners = []
        for i in range(8):
            sx, sy, sz = ((i >> k) & 1 for k in range(3))
            f = (abs(xs[sx]) - 0.03) / (span / 2 - 0.03)  # 0 at the root, 1 at the tip
            c = chord * (1 - 0.6 * f)
            corners.append([xs[sx], -chord / 2 + sweep * f + sy * c, wing_z + (sz - 0.5) * 0.02])
        parts.append(hexahedron(np.array(corners)))
    tail_h = rng.uniform(0.12, 0.2)
    parts.append(tapered_box((0, 0.42 * L, r * 0.5 + tail_h / 2), (0.015, 0.14, tail_h), (0.015, 0.06), (0, 0.04)))
    parts.append(box((0, 0.45 * L, r * 0.3), (rng.uniform(0.2, 0.32), 0.07, 0.015)))
    if not fighter:
        for s in (-1, 1):
            parts.append(cylinder((s * span * 0.18, -0.04, wing_z - 0.04), 0.03, 0.12, (0, 1, 0), 10))
    return parts


def _bicycle(rng) -> list[Mesh]:
    R = rng.uniform(0.15, 0.18)
    base = rng.uniform(0.5, 0.6)
    z = -0.2
    front, back = np.array([0, -base / 2, z]), np.array([0, base / 2, z])
    seat = np.array([0, base * 0.15, z + rng.uniform(0.3, 0.36)])
    head = np.array([0, -base * 0.32, z + rng.uniform(0.3, 0.36)])
    crank = np.array([0, base * 0.05, z + 0.02])
    t = 0.012
    parts = [wheel(front, R, 0.03, 20), wheel(back, R, 0.03, 20)]
    parts += [tube(a, b, t) for a, b in ((back, seat), (back, crank), (crank, seat), (crank, head),
                                        (seat, head), (head, front))]
    parts.append(box(seat + [0, 0, 0.02], (0.06, 0.1, 0.025)))
    parts.append(tube(head + [-0.2, 0, 0.04], head + [0.2, 0, 0.04], t))
    parts.append(tube(head, head + [0, 0, 0.04], t))
    return parts


def _motorbike(rng) -> list[Mesh]:
    R = rng.uniform(0.13, 0.16)
    base = rng.uniform(0.55, 0.65)
    z = -0.2
    front, back = np.array([0, -base / 2, z]), np.array([0, base / 2, z])
    parts = [wheel(front, R, 0.07, 20), wheel(back, R, 0.08, 20)]
    body_h = rng.uniform(0.14, 0.2)
    parts.append(ellipsoid((0, 0.0, z + R + 0.02), (0.09, base * 0.35, body_h / 2)))
    parts.append(box((0, base * 0.2, z + R + body_h / 2 + 0.02), (0.1, base * 0.35, 0.04)))
    head = np.array([0, -base * 0.36, z + R + body_h])
    parts.append(tube(front, head, 0.018))
    parts.append(tube(head + [-0.18, 0, 0], head + [0.18, 0, 0], 0.014))
    if rng.random() < 0.5:
        parts.append(tapered_box(head + [0, -0.02, -0.04], (0.14, 0.08, 0.12), (0.1, 0.04)))
    parts.append(tube(back + [0.05, 0, 0.05], back + [0.05, -base * 0.3, 0.08], 0.02))
    return parts


def _boat(rng) -> list[Mesh]:
    L, W, H = rng.uniform(0.8, 1.0), rng.uniform(0.22, 0.32), rng.uniform(0.1, 0.16)
    z0 = -0.1
    parts = [tapered_box((0, 0, z0), (W * 0.55, L * 0.7, H), (W, L), (0, -0.05))]
    # bow: a wedge closing the hull at the front
    parts.append(tapered_box((0, -L / 2 - 0.02, z0), (0.02, 0.05, H), (W * 0.7, 0.18), (0, 0.08)))
    kind = rng.choice(["motor", "sail", "ferry"])
    if kind == "sail":
        parts.append(cylinder((0, -0.05, z0 + H / 2 + 0.3), 0.012, 0.6, segments=8))
        parts.append(tapered_box((0, 0.05, z0 + H / 2 + 0.28), (0.01, 0.3, 0.5), (0.01, 0.02), (0, -0.12)))
    else:
        cab = rng.uniform(0.25, 0.45) * L
        ch = 0.1 if kind == "motor" else 0.16
        parts.append(box((0, 0.05, z0 + H / 2 + ch / 2), (W * 0.7, cab, ch)))
        if kind == "ferry":
            parts.append(box((0, 0.05, z0 + H / 2 + ch + 0.04), (W * 0.6, cab * 0.6, 0.08)))
    return parts


def _bottle(rng) -> list[Mesh]:
    H = rng.uniform(0.55, 0.8)
    r = rng.uniform(0.08, 0.13)
    neck = rng.uniform(0.25, 0.4) * r
    shoulder = rng.uniform(0.55, 0.7)
    z = np.array([0.0, 0.02, shoulder, shoulder + 0.12, 0.9, 0.97, 1.0]) * H - H / 2
    rad = np.array([0.85 * r, r, r, neck * 1.1, neck, neck * 1.15, neck * 1.1])
    return [lathe(rad, z, segments=20)]


def _chair(rng) -> list[Mesh]:
    W, D = rng.uniform(0.38, 0.48), rng.uniform(0.38, 0.48)
    seat_z = rng.uniform(-0.05, 0.02)
    back_h = rng.uniform(0.35, 0.5)
    leg = rng.uniform(0.015, 0.03)
    parts = [box((0, 0, seat_z), (W, D, 0.04))]
    parts.append(box((0, D / 2 - 0.02, seat_z + back_h / 2), (W, 0.035, back_h)))
    bottom = -0.45
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(box((sx * (W / 2 - leg), sy * (D / 2 - leg), (seat_z + bottom) / 2),
                             (2 * leg, 2 * leg, seat_z - bottom)))
    if rng.random() < 0.4:  # armrests
        for sx in (-1, 1):
            parts.append(box((sx * W / 2, 0, seat_z + 0.12), (0.04, D * 0.9, 0.03)))
    return parts


def _diningtable(rng) -> list[Mesh]:
    W, L = rng.uniform(0.5, 0.8), rng.uniform(0.8, 1.1)
    top_z, H = 0.15, 0.4
    parts = [box((0, 0, top_z), (W, L, 0.04))]
    if rng.random() < 0.25:  # pedestal
        parts.append(cylinder((0, 0, top_z - H / 2), 0.05, H))
        parts.append(cylinder((0, 0, top_z - H), 0.2, 0.03))
    else:
        leg = rng.uniform(0.02, 0.035)
        for sx in (-1, 1):
            for sy in (-1, 1):
                parts.append(box((sx * (W / 2 - 0.05), sy * (L / 2 - 0.06), top_z - H / 2), (2 * leg, 2 * leg, H)))
    return parts


def _sofa(rng) -> list[Mesh]:
    W, D = rng.uniform(0.45, 0.55), rng.uniform(0.9, 1.2)  # sofa length runs along x
    base_h, back_h = rng.uniform(0.16, 0.22), rng.uniform(0.2, 0.3)
    arm = rng.uniform(0.06, 0.12)
    z0 = -0.2
    parts = [box((0, 0, z0 + base_h / 2), (D, W, base_h))]
    parts.append(box((0, W / 2 - 0.06, z0 + base_h + back_h / 2), (D, 0.12, back_h)))
    for sx in (-1, 1):
        parts.append(box((sx * (D / 2 - arm / 2), 0, z0 + base_h + 0.07), (arm, W, 0.14)))
    n = rng.integers(2, 4)
    cw = (D - 2 * arm) / n
    for i in range(n):
        parts.append(box((-D / 2 + arm + cw * (i + 0.5), -0.03, z0 + base_h + 0.03), (cw * 0.96, W * 0.8, 0.06)))
    return parts


def _tvmonitor(rng) -> list[Mesh]:
    W, H = rng.uniform(0.6, 0.9), rng.uniform(0.4, 0.55)
    thick = rng.uniform(0.03, 0.1)
    parts = [box((0, 0, 0.08), (W, thick, H))]
    if thick > 0.07:  # old tube monitor: a deep back
        parts.append(tapered_box((0, thick / 2 + 0.1, 0.08), (W * 0.7, 0.2, H * 0.7), (W * 0.5, 0.2)))
    parts.append(box((0, 0.02, 0.08 - H / 2 - 0.06), (0.06, 0.03, 0.12)))
    parts.append(box((0, 0.02, 0.08 - H / 2 - 0.12), (W * 0.4, 0.18, 0.02)))
    return parts


BUILDERS: dict[str, Callable[[np.random.Generator], list[Mesh]]] = {
    "aeroplane": _aeroplane, "bicycle": _bicycle, "boat": _boat, "bottle": _bottle, "bus": _bus, "car": _car,
    "chair": _chair, "diningtable": _diningtable, "motorbike": _motorbike, "sofa": _sofa, "train": _train,
    "tvmonitor": _tvmonitor,
}


PIXELS_PER_UNIT = 3000.0 / 5.0
"""Image pixels per CAD unit for an object at NeMo's normalised distance 5 with focal x viewport 3000."""


def fit_to_crop(mesh: Mesh, category: str) -> Mesh:
    """Centre the model's box on the origin and shrink it so that it fits the category's NeMo crop.

    PASCAL3D+ crop sizes were chosen so that most objects at distance 5 fit: the footprint may fill
    80 % of the crop width and the height 70 % of its height (elevation adds to the projected height).
    """
    crop_h, crop_w = CROP_SIZES["refactor"][category]
    lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    extent = hi - lo
    scale = min(1.0, 0.8 * crop_w / PIXELS_PER_UNIT / max(extent[0], extent[1]),
                0.7 * crop_h / PIXELS_PER_UNIT / extent[2])
    return Mesh((mesh.vertices - (lo + hi) / 2) * scale, mesh.faces)


def build_cad(category: str, subtype: int, seed: int = 0) -> Mesh:
    """Subtype ``subtype`` (0-based) of ``category``: the same arguments give the same mesh."""
    rng = np.random.default_rng([seed, CATEGORIES.index(category), subtype])
    return fit_to_crop(merge(BUILDERS[category](rng)), category)


def write_cad_library(root: str | Path, categories=CATEGORIES, seed: int = 0) -> dict[str, list[Path]]:
    """Write ``CAD/{category}/NN.off`` (1-based, as PASCAL3D+) for every subtype."""
    written: dict[str, list[Path]] = {}
    for category in categories:
        folder = Path(root) / "CAD" / category
        folder.mkdir(parents=True, exist_ok=True)
        written[category] = []
        for k in range(SUBTYPES[category]):
            path = folder / f"{k + 1:02d}.off"
            write_off(path, build_cad(category, k, seed))
            written[category].append(path)
    return written
