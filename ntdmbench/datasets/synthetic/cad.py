"""Procedural CAD models for the 12 PASCAL3D+ categories, in the PASCAL3D+ CAD frame.

Frame: z up, the object's length along y with its front towards -y (so azimuth 0 looks at the
front), so the object's own right is -x and its left +x; units as PASCAL3D+ CAD (a car is about 0.8 long). Every category is
assembled from closed, outward-facing primitives (boxes, hexahedra, lathes, tubes) whose proportions
are drawn per subtype, so subtypes of a category differ the way PASCAL3D+'s do (sedan / SUV / van,
airliner / fighter, ...). Each primitive belongs to a named semantic part (tyres, windows, headlights,
cushions, ...) that ``textures.appearance`` gives a category-consistent material, and each model
carries PASCAL3D+'s semantic keypoints for its category, placed on those parts. The number of subtypes follows PASCAL3D+ (``MESH_LEN``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ntdmbench.datasets.crop import CROP_SIZES
from ntdmbench.datasets.keypoints import KEYPOINT_NAMES, write_cad_mat
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
# Each builder draws one subtype's proportions from ``rng`` and returns its named parts and its
# semantic keypoints (``KEYPOINT_NAMES``). The object's right is -x (it faces -y with z up), so
# ``left_*`` keypoints lie at +x.

T = 0.008  # thickness of decal parts (lights, windows, plates) standing proud of a surface


class Assembly:
    """Named parts and keypoints of one CAD model, in build order."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, Mesh]] = []
        self.keypoints: dict[str, np.ndarray] = {}

    def add(self, part: str, *meshes: Mesh) -> None:
        self.parts += [(part, m) for m in meshes]

    def points(self, **named) -> None:
        self.keypoints.update({k: np.asarray(v, dtype=np.float64) for k, v in named.items()})


def _lr(name: str, left, right, **more) -> dict:
    """``left_name``/``right_name`` (or ``name_left``/``name_right`` when ``name`` ends with '_')."""
    if name.endswith("_"):
        return {f"{name}left": left, f"{name}right": right, **more}
    return {f"left_{name}": left, f"right_{name}": right, **more}


def _car(rng) -> Assembly:
    a = Assembly()
    kind = rng.choice(["sedan", "hatch", "suv", "van", "pickup"])
    L = rng.uniform(0.72, 0.9)
    W = rng.uniform(0.33, 0.38)
    body_h = rng.uniform(0.12, 0.16) + (0.04 if kind in ("suv", "van") else 0.0)
    r = rng.uniform(0.06, 0.08)
    z0 = -0.16 + r * 0.6
    top = z0 + body_h
    a.add("body", box((0, 0, z0 + body_h / 2), (W, L, body_h)))
    cab_h = {"van": 0.16, "suv": 0.13}.get(kind, rng.uniform(0.1, 0.13))
    cab_l = {"van": 0.8, "suv": 0.62, "hatch": 0.55, "pickup": 0.3}.get(kind, rng.uniform(0.45, 0.52)) * L
    cab_y = {"van": 0.05, "pickup": -0.12, "hatch": 0.08}.get(kind, 0.02) * L
    rake = {"van": 0.1, "suv": 0.2}.get(kind, rng.uniform(0.25, 0.35)) * cab_l  # the windscreen leans back
    top_l = cab_l - rake - 0.1 * cab_l
    top_y = cab_y + (rake - 0.1 * cab_l) / 2
    a.add("windows", tapered_box((0, cab_y, top + cab_h / 2), (W * 0.92, cab_l, cab_h), (W * 0.8, top_l),
                                 (0, top_y - cab_y)))
    a.add("roof", box((0, top_y, top + cab_h + T / 2), (W * 0.8, top_l, T)))
    y_front, y_back = -L / 2 + 0.17 * L, L / 2 - 0.17 * L
    for sy in (y_front, y_back):
        for sx in (-1, 1):
            a.add("tyres", wheel((sx * (W / 2 - 0.02), sy, z0), r, 0.06))
            a.add("rims", cylinder((sx * (W / 2 + 0.012), sy, z0), r * 0.55, T, (1, 0, 0)))
    light_z = z0 + body_h * 0.7
    light_w = rng.uniform(0.06, 0.09)
    for sx in (-1, 1):
        a.add("headlights", box((sx * (W / 2 - light_w / 2 - 0.01), -L / 2 - T / 2, light_z), (light_w, T, 0.035)))
        a.add("tail_lights", box((sx * (W / 2 - 0.04), L / 2 + T / 2, light_z), (0.06, T, 0.04)))
    a.add("grille", box((0, -L / 2 - T / 2, light_z - 0.005), (W - 2 * light_w - 0.05, T, 0.04)))
    a.add("plates", box((0, -L / 2 - T, z0 + body_h * 0.3), (0.1, T, 0.025)),
          box((0, L / 2 + T, z0 + body_h * 0.35), (0.1, T, 0.025)))
    a.points(**_lr("front_wheel", (W / 2, y_front, z0), (-W / 2, y_front, z0)),
             **_lr("back_wheel", (W / 2, y_back, z0), (-W / 2, y_back, z0)),
             **_lr("front_light", (W / 2 - light_w / 2, -L / 2, light_z), (-W / 2 + light_w / 2, -L / 2, light_z)),
             **_lr("back_trunk", (W / 2, L / 2, top), (-W / 2, L / 2, top)))
    front_top, back_top = top_y - top_l / 2, top_y + top_l / 2
    a.points(upper_left_windshield=(W * 0.4, front_top, top + cab_h), upper_right_windshield=(-W * 0.4, front_top, top + cab_h),
             upper_left_rearwindow=(W * 0.4, back_top, top + cab_h), upper_right_rearwindow=(-W * 0.4, back_top, top + cab_h))
    return a


def _bus(rng) -> Assembly:
    a = Assembly()
    L, W, H = rng.uniform(0.8, 1.0), rng.uniform(0.24, 0.28), rng.uniform(0.28, 0.36)
    r = 0.05
    z0 = -H / 2 + r * 0.5
    a.add("body", box((0, 0, z0 + H / 2), (W, L, H)))
    if rng.random() < 0.3:  # coach roof box
        a.add("roof", box((0, 0.02, z0 + H + 0.02), (W * 0.9, L * 0.8, 0.04)))
    a.add("windscreen", box((0, -L / 2 - T / 2, z0 + H * 0.62), (W * 0.9, T, H * 0.5)))
    a.add("windows", box((0, L / 2 + T / 2, z0 + H * 0.68), (W * 0.7, T, H * 0.3)))
    band_z, band_h = z0 + H * 0.66, H * 0.32
    for sx in (-1, 1):
        a.add("side_windows", box((sx * (W / 2 + T / 2), 0.06 * L, band_z), (T, L * 0.78, band_h)))
    a.add("doors", box((-(W / 2 + T), -L / 2 + 0.09, z0 + H * 0.45), (T, 0.08, H * 0.8)),  # the kerb side, front
          box((-(W / 2 + T), 0.05 * L, z0 + H * 0.45), (T, 0.08, H * 0.8)))
    light_z = z0 + 0.06
    for sx in (-1, 1):
        a.add("headlights", box((sx * (W / 2 - 0.04), -L / 2 - T / 2, light_z), (0.05, T, 0.03)))
        a.add("tail_lights", box((sx * (W / 2 - 0.03), L / 2 + T / 2, light_z + 0.02), (0.035, T, 0.06)))
    a.add("plates", box((0, -L / 2 - T / 2, z0 + 0.03), (0.08, T, 0.02)), box((0, L / 2 + T / 2, z0 + 0.03), (0.08, T, 0.02)))
    axles = [-0.33, 0.33] if rng.random() < 0.6 else [-0.35, 0.2, 0.33]
    for ay in axles:
        for sx in (-1, 1):
            a.add("tyres", wheel((sx * W / 2, ay * L, z0), r, 0.05))
            a.add("rims", cylinder((sx * (W / 2 + 0.027), ay * L, z0), r * 0.55, T, (1, 0, 0)))
    yf, yb = axles[0] * L, axles[-1] * L
    lower, upper = z0, z0 + H
    a.points(**_lr("front_wheel", (W / 2, yf, z0), (-W / 2, yf, z0)), **_lr("back_wheel", (W / 2, yb, z0), (-W / 2, yb, z0)))
    for end, y in (("front", -L / 2), ("back", L / 2)):
        for side, x in (("left", W / 2), ("right", -W / 2)):
            a.points(**{f"body_{end}_{side}_lower": (x, y, lower), f"body_{end}_{side}_upper": (x, y, upper)})
    return a


def _train(rng) -> Assembly:
    a = Assembly()
    L, W, H = rng.uniform(0.9, 1.1), rng.uniform(0.18, 0.22), rng.uniform(0.22, 0.28)
    a.add("body", box((0, 0.05, 0), (W, L - 0.1, H)))
    nose = rng.uniform(0.08, 0.18)
    a.add("body", tapered_box((0, -L / 2 + nose / 2, 0), (W, nose, H), (W * 0.9, nose * 0.3), (0, nose * 0.35)))
    a.add("roof", box((0, 0.05, H / 2 + T / 2), (W * 0.8, L - 0.12, T)))
    a.add("windscreen", tapered_box((0, -L / 2 + nose * 0.55, H * 0.3), (W * 0.92, nose * 0.4, H * 0.3),
                                    (W * 0.84, nose * 0.12), (0, nose * 0.12)))
    for sx in (-1, 1):
        a.add("side_windows", box((sx * (W / 2 + T / 2), 0.08, H * 0.15), (T, L * 0.75, H * 0.28)))
        a.add("headlights", box((sx * W * 0.3, -L / 2 - T / 2, -H * 0.3), (0.04, T, 0.03)))
        a.add("tail_lights", box((sx * W * 0.3, L / 2 + T / 2, -H * 0.3), (0.035, T, 0.03)))
    if rng.random() < 0.5:  # pantograph
        a.add("pantograph", tube((0, -L / 4, H / 2), (0, -L / 4 + 0.06, H / 2 + 0.08), 0.008),
              box((0, -L / 4 + 0.06, H / 2 + 0.085), (W * 0.6, 0.015, 0.01)))
    for ay in np.linspace(-0.4, 0.4, 4) * L:
        for sx in (-1, 1):
            a.add("wheels", wheel((sx * W * 0.45, ay, -H / 2 - 0.02), 0.035, 0.03, segments=10))
    yh, yt = -L / 2, L / 2
    a.points(head_top=(0, yh + nose * 0.5, H / 2),
             head_left_top=(W / 2, yh + nose, H / 2), head_right_top=(-W / 2, yh + nose, H / 2),
             head_left_bottom=(W / 2, yh, -H / 2), head_right_bottom=(-W / 2, yh, -H / 2))
    for name, y in (("mid1", -L / 6), ("mid2", L / 6), ("tail", yt)):
        for side, x in (("left", W / 2), ("right", -W / 2)):
            a.points(**{f"{name}_{side}_top": (x, y, H / 2), f"{name}_{side}_bottom": (x, y, -H / 2)})
    return a


def _aeroplane(rng) -> Assembly:
    a = Assembly()
    fighter = rng.random() < 0.35
    L = rng.uniform(0.85, 1.0)
    r = rng.uniform(0.04, 0.06) if fighter else rng.uniform(0.05, 0.08)
    prof_y = np.array([-0.5, -0.44, -0.35, 0.3, 0.5]) * L
    prof_r = np.array([0.05, 0.6, 1.0, 0.9, 0.25]) * r
    a.add("fuselage", lathe(prof_r, prof_y, axis=(0, 1, 0)))
    a.add("cockpit", ellipsoid((0, -0.38 * L, r * 0.55), (r * 0.55, 0.07, r * 0.45)))
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
        a.add("wings", hexahedron(np.array(corners)))
    tail_h = rng.uniform(0.12, 0.2)
    a.add("tail", tapered_box((0, 0.42 * L, r * 0.5 + tail_h / 2), (0.015, 0.14, tail_h), (0.015, 0.06), (0, 0.04)))
    elev_span = rng.uniform(0.2, 0.32)
    a.add("tail", box((0, 0.45 * L, r * 0.3), (elev_span, 0.07, 0.015)))
    if not fighter:
        for s in (-1, 1):
            a.add("engines", cylinder((s * span * 0.18, -0.04, wing_z - 0.04), 0.03, 0.12, (0, 1, 0), 10))
    tip_y = -chord / 2 + sweep + chord * 0.2
    a.points(**_lr("wing", (span / 2, tip_y, wing_z), (-span / 2, tip_y, wing_z)),
             **_lr("elevator", (elev_span / 2, 0.45 * L, r * 0.3), (-elev_span / 2, 0.45 * L, r * 0.3)))
    a.points(rudder_upper=(0, 0.42 * L + 0.06, r * 0.5 + tail_h), rudder_lower=(0, 0.42 * L + 0.05, r * 0.5),
             noselanding=(0, -0.5 * L, 0), tail=(0, 0.5 * L, 0))
    return a


def _bicycle(rng) -> Assembly:
    a = Assembly()
    R = rng.uniform(0.15, 0.18)
    base = rng.uniform(0.5, 0.6)
    z = -0.2
    front, back = np.array([0, -base / 2, z]), np.array([0, base / 2, z])
    seat = np.array([0, base * 0.15, z + rng.uniform(0.3, 0.36)])
    head = np.array([0, -base * 0.32, z + rng.uniform(0.3, 0.36)])
    crank = np.array([0, base * 0.05, z + 0.02])
    t = 0.012
    a.add("tyres", wheel(front, R, 0.03, 20), wheel(back, R, 0.03, 20))
    a.add("rims", cylinder(front, R * 0.8, 0.034, (1, 0, 0), 20), cylinder(back, R * 0.8, 0.034, (1, 0, 0), 20))
    a.add("frame", *[tube(p, q, t) for p, q in ((back, seat), (back, crank), (crank, seat), (crank, head),
                                                (seat, head), (head, front))])
    a.add("saddle", box(seat + [0, 0, 0.02], (0.06, 0.1, 0.025)))
    bar = head + [0, 0, 0.04]
    a.add("handlebar", tube(bar + [0.2, 0, 0], bar + [-0.2, 0, 0], t), tube(head, bar, t))
    a.add("chainring", cylinder(crank + [-0.03, 0, 0], 0.05, 0.01, (1, 0, 0)))
    pedal = 0.06
    a.points(**_lr("front_wheel", front + [0.015, 0, 0], front - [0.015, 0, 0]),
             **_lr("back_wheel", back + [0.015, 0, 0], back - [0.015, 0, 0]),
             **_lr("handle", bar + [0.2, 0, 0], bar - [0.2, 0, 0]),
             **_lr("pedal_center", crank + [pedal, 0, 0], crank - [pedal, 0, 0]),
             seat_front=seat + [0, -0.05, 0.03], seat_back=seat + [0, 0.05, 0.03], head_center=head)
    return a


def _motorbike(rng) -> Assembly:
    a = Assembly()
    R = rng.uniform(0.13, 0.16)
    base = rng.uniform(0.55, 0.65)
    z = -0.2
    front, back = np.array([0, -base / 2, z]), np.array([0, base / 2, z])
    a.add("tyres", wheel(front, R, 0.07, 20), wheel(back, R, 0.08, 20))
    a.add("rims", cylinder(front, R * 0.6, 0.074, (1, 0, 0), 20), cylinder(back, R * 0.6, 0.084, (1, 0, 0), 20))
    body_h = rng.uniform(0.14, 0.2)
    a.add("tank", ellipsoid((0, -base * 0.05, z + R + 0.04), (0.09, base * 0.3, body_h / 2)))
    a.add("engine", box((0, 0.02, z + R * 0.55), (0.08, base * 0.28, R * 0.7)))
    seat_y, seat_z = base * 0.2, z + R + body_h / 2 + 0.04
    a.add("saddle", box((0, seat_y, seat_z), (0.1, base * 0.35, 0.04)))
    head = np.array([0, -base * 0.36, z + R + body_h])
    a.add("fork", tube(front, head, 0.018))
    a.add("handlebar", tube(head + [0.18, 0, 0], head + [-0.18, 0, 0], 0.014))
    if rng.random() < 0.5:
        a.add("fairing", tapered_box(head + [0, -0.02, -0.04], (0.14, 0.08, 0.12), (0.1, 0.04)))
    lamp = head + [0, -0.07, -0.05]
    a.add("headlights", cylinder(lamp, 0.035, 0.02, (0, 1, 0)))
    a.add("tail_lights", box((0, seat_y + base * 0.175 + 0.01, seat_z), (0.05, 0.02, 0.025)))
    a.add("exhaust", tube(back + [-0.05, 0, 0.05], back + [-0.05, -base * 0.3, 0.08], 0.02))
    half = 0.04
    a.points(**_lr("front_wheel", front + [half, 0, 0], front - [half, 0, 0]),
             **_lr("back_wheel", back + [half, 0, 0], back - [half, 0, 0]),
             **_lr("handle_center", head + [0.18, 0, 0], head - [0.18, 0, 0]),
             front_seat=(0, seat_y - base * 0.17, seat_z + 0.02), back_seat=(0, seat_y + base * 0.17, seat_z + 0.02),
             headlight_center=lamp - [0, 0.01, 0], head_center=head)
    return a


def _boat(rng) -> Assembly:
    a = Assembly()
    L, W, H = rng.uniform(0.8, 1.0), rng.uniform(0.22, 0.32), rng.uniform(0.1, 0.16)
    z0 = -0.1
    a.add("hull", tapered_box((0, 0, z0), (W * 0.55, L * 0.7, H), (W, L), (0, -0.05)))
    a.add("hull", tapered_box((0, -L / 2 - 0.02, z0), (0.02, 0.05, H), (W * 0.7, 0.18), (0, 0.08)))  # the bow
    a.add("deck", box((0, -0.05, z0 + H / 2 + T / 2), (W * 0.85, L * 0.85, T)))
    kind = rng.choice(["motor", "sail", "ferry"])
    if kind == "sail":
        a.add("mast", cylinder((0, -0.05, z0 + H / 2 + 0.3), 0.012, 0.6, segments=8))
        a.add("sail", tapered_box((0, 0.05, z0 + H / 2 + 0.28), (0.01, 0.3, 0.5), (0.01, 0.02), (0, -0.12)))
    else:
        cab = rng.uniform(0.25, 0.45) * L
        ch = 0.1 if kind == "motor" else 0.16
        a.add("cabin", box((0, 0.05, z0 + H / 2 + ch / 2), (W * 0.7, cab, ch)))
        a.add("windows", box((0, 0.05 - cab / 2 - T / 2, z0 + H / 2 + ch * 0.65), (W * 0.6, T, ch * 0.35)))
        if kind == "ferry":
            a.add("cabin", box((0, 0.05, z0 + H / 2 + ch + 0.04), (W * 0.6, cab * 0.6, 0.08)))
    top = z0 + H / 2
    a.points(head=(0, -L / 2 - 0.03, top), head_down=(0, -L / 2 - 0.02, z0 - H / 2), tail=(0, L / 2 - 0.05, top),
             **_lr("head_", (W * 0.35, -L / 2 + 0.03, top), (-W * 0.35, -L / 2 + 0.03, top)),
             **_lr("tail_", (W / 2, L / 2 - 0.05, top), (-W / 2, L / 2 - 0.05, top)))
    return a


def _bottle(rng) -> Assembly:
    a = Assembly()
    H = rng.uniform(0.55, 0.8)
    r = rng.uniform(0.08, 0.13)
    neck = rng.uniform(0.25, 0.4) * r
    shoulder = rng.uniform(0.55, 0.7)
    z = np.array([0.0, 0.02, shoulder, shoulder + 0.12, 0.9]) * H - H / 2
    rad = np.array([0.85 * r, r, r, neck * 1.1, neck])
    a.add("glass", lathe(rad, z, segments=20))
    a.add("cap", cylinder((0, 0, 0.935 * H - H / 2), neck * 1.15, 0.07 * H, segments=20))
    band = (0.2 + rng.uniform(0, 0.1)) * H
    a.add("label", cylinder((0, 0, 0.3 * shoulder * H - H / 2 + band / 2 + 0.02 * H), r * 1.02, band, segments=20))
    mid = z[1] + (z[2] - z[1]) / 2
    a.points(mouth=(0, 0, H / 2), body=(0, -r, mid), **_lr("body_", (r, 0, mid), (-r, 0, mid)),
             bottom=(0, -0.85 * r, -H / 2), **_lr("bottom_", (0.85 * r, 0, -H / 2), (-0.85 * r, 0, -H / 2)))
    return a


def _chair(rng) -> Assembly:
    a = Assembly()
    W, D = rng.uniform(0.38, 0.48), rng.uniform(0.38, 0.48)
    seat_z = rng.uniform(-0.05, 0.02)
    back_h = rng.uniform(0.35, 0.5)
    leg = rng.uniform(0.015, 0.03)
    a.add("seat", box((0, 0, seat_z), (W, D, 0.04)))
    a.add("back", box((0, D / 2 - 0.02, seat_z + back_h / 2), (W, 0.035, back_h)))
    if rng.random() < 0.5:  # upholstered
        a.add("cushions", box((0, -0.01, seat_z + 0.03), (W * 0.92, D * 0.88, 0.025)))
    bottom = -0.45
    for sx in (-1, 1):
        for sy in (-1, 1):
            a.add("legs", box((sx * (W / 2 - leg), sy * (D / 2 - leg), (seat_z + bottom) / 2),
                              (2 * leg, 2 * leg, seat_z - bottom)))
    if rng.random() < 0.4:  # armrests
        for sx in (-1, 1):
            a.add("arms", box((sx * W / 2, 0, seat_z + 0.12), (0.04, D * 0.9, 0.03)))
    s = seat_z + 0.02
    # seat corners: "upper" is the back edge, "lower" the front edge, as the annotators saw a frontal chair
    a.points(seat_upper_left=(W / 2, D / 2, s), seat_upper_right=(-W / 2, D / 2, s),
             seat_lower_left=(W / 2, -D / 2, s), seat_lower_right=(-W / 2, -D / 2, s),
             back_upper_left=(W / 2, D / 2, seat_z + back_h), back_upper_right=(-W / 2, D / 2, seat_z + back_h),
             leg_upper_left=(W / 2, D / 2, bottom), leg_upper_right=(-W / 2, D / 2, bottom),
             leg_lower_left=(W / 2, -D / 2, bottom), leg_lower_right=(-W / 2, -D / 2, bottom))
    return a


def _diningtable(rng) -> Assembly:
    a = Assembly()
    W, L = rng.uniform(0.5, 0.8), rng.uniform(0.8, 1.1)
    top_z, H = 0.15, 0.4
    a.add("top", box((0, 0, top_z), (W, L, 0.04)))
    bottom = top_z - H
    if rng.random() < 0.25:  # pedestal
        a.add("legs", cylinder((0, 0, top_z - H / 2), 0.05, H), cylinder((0, 0, top_z - H), 0.2, 0.03))
        feet = {"leg_upper_left": (0.2, 0.0), "leg_upper_right": (0.0, 0.2), "leg_lower_left": (0.0, -0.2),
                "leg_lower_right": (-0.2, 0.0)}
    else:
        leg = rng.uniform(0.02, 0.035)
        for sx in (-1, 1):
            for sy in (-1, 1):
                a.add("legs", box((sx * (W / 2 - 0.05), sy * (L / 2 - 0.06), top_z - H / 2), (2 * leg, 2 * leg, H)))
        fx, fy = W / 2 - 0.05, L / 2 - 0.06
        feet = {"leg_upper_left": (fx, fy), "leg_upper_right": (-fx, fy), "leg_lower_left": (fx, -fy),
                "leg_lower_right": (-fx, -fy)}
    a.points(**{k: (x, y, bottom) for k, (x, y) in feet.items()})
    t = top_z + 0.02
    a.points(top_upper_left=(W / 2, L / 2, t), top_upper_right=(-W / 2, L / 2, t), top_lower_left=(W / 2, -L / 2, t),
             top_lower_right=(-W / 2, -L / 2, t), top_up=(0, L / 2, t), top_down=(0, -L / 2, t),
             top_left=(W / 2, 0, t), top_right=(-W / 2, 0, t))
    return a


def _sofa(rng) -> Assembly:
    a = Assembly()
    W, D = rng.uniform(0.45, 0.55), rng.uniform(0.9, 1.2)  # sofa length runs along x
    base_h, back_h = rng.uniform(0.16, 0.22), rng.uniform(0.2, 0.3)
    arm = rng.uniform(0.06, 0.12)
    z0 = -0.2
    a.add("base", box((0, 0, z0 + base_h / 2), (D, W, base_h)))
    a.add("back", box((0, W / 2 - 0.06, z0 + base_h + back_h / 2), (D, 0.12, back_h)))
    for sx in (-1, 1):
        a.add("arms", box((sx * (D / 2 - arm / 2), 0, z0 + base_h + 0.07), (arm, W, 0.14)))
    n = rng.integers(2, 4)
    cw = (D - 2 * arm) / n
    for i in range(n):
        a.add("cushions", box((-D / 2 + arm + cw * (i + 0.5), -0.03, z0 + base_h + 0.03), (cw * 0.96, W * 0.8, 0.06)))
        a.add("cushions", box((-D / 2 + arm + cw * (i + 0.5), W / 2 - 0.12 - 0.02, z0 + base_h + back_h * 0.55),
                              (cw * 0.94, 0.04, back_h * 0.75)))
    leg_h = 0.03
    for sx in (-1, 1):
        for sy in (-1, 1):
            a.add("legs", box((sx * (D / 2 - 0.04), sy * (W / 2 - 0.04), z0 - leg_h / 2), (0.03, 0.03, leg_h)))
    seat = z0 + base_h + 0.06
    top = z0 + base_h + back_h
    a.points(top_left_corner=(D / 2, W / 2, top), top_right_corner=(-D / 2, W / 2, top),
             seat_top_left=(D / 2 - arm, W / 2 - 0.12, seat), seat_top_right=(-D / 2 + arm, W / 2 - 0.12, seat),
             seat_bottom_left=(D / 2 - arm, -W / 2, seat), seat_bottom_right=(-D / 2 + arm, -W / 2, seat),
             front_bottom_left=(D / 2, -W / 2, z0), front_bottom_right=(-D / 2, -W / 2, z0),
             left_bottom_back=(D / 2, W / 2, z0), right_bottom_back=(-D / 2, W / 2, z0))
    return a


def _tvmonitor(rng) -> Assembly:
    a = Assembly()
    W, H = rng.uniform(0.6, 0.9), rng.uniform(0.4, 0.55)
    thick = rng.uniform(0.03, 0.1)
    zc = 0.08
    a.add("bezel", box((0, 0, zc), (W, thick, H)))
    a.add("screen", box((0, -thick / 2 - T / 2, zc + 0.01), (W * 0.9, T, H * 0.84)))
    back = thick / 2
    if thick > 0.07:  # old tube monitor: a deep back
        a.add("bezel", tapered_box((0, thick / 2 + 0.1, zc), (W * 0.7, 0.2, H * 0.7), (W * 0.5, 0.2)))
    a.add("stand", box((0, 0.02, zc - H / 2 - 0.06), (0.06, 0.03, 0.12)),
          box((0, 0.02, zc - H / 2 - 0.12), (W * 0.4, 0.18, 0.02)))
    for face, y in (("front", -thick / 2), ("back", back)):
        for v, z in (("top", zc + H / 2), ("bottom", zc - H / 2)):
            a.points(**{f"{face}_{v}_left": (W / 2, y, z), f"{face}_{v}_right": (-W / 2, y, z)})
    return a


BUILDERS: dict[str, Callable[[np.random.Generator], Assembly]] = {
    "aeroplane": _aeroplane, "bicycle": _bicycle, "boat": _boat, "bottle": _bottle, "bus": _bus, "car": _car,
    "chair": _chair, "diningtable": _diningtable, "motorbike": _motorbike, "sofa": _sofa, "train": _train,
    "tvmonitor": _tvmonitor,
}


PIXELS_PER_UNIT = 3000.0 / 5.0
"""Image pixels per CAD unit for an object at NeMo's normalised distance 5 with focal x viewport 3000."""


@dataclass(frozen=True)
class CadModel:
    """One CAD model: the mesh, which named part each face belongs to, and its semantic keypoints."""

    mesh: Mesh
    face_parts: np.ndarray  # (F,) index into part_names
    part_names: tuple[str, ...]
    keypoints: np.ndarray  # (K, 3) in KEYPOINT_NAMES[category] order


def assemble(assembly: Assembly, category: str) -> CadModel:
    names = tuple(dict.fromkeys(name for name, _ in assembly.parts))
    missing = set(KEYPOINT_NAMES[category]) ^ set(assembly.keypoints)
    if missing:
        raise ValueError(f"{category}: keypoints {sorted(missing)} do not match KEYPOINT_NAMES")
    face_parts = np.concatenate([np.full(len(m.faces), names.index(n)) for n, m in assembly.parts])
    keypoints = np.stack([assembly.keypoints[k] for k in KEYPOINT_NAMES[category]])
    return CadModel(merge([m for _, m in assembly.parts]), face_parts, names, keypoints)


def fit_to_crop(model: CadModel, category: str) -> CadModel:
    """Centre the model's box on the origin and shrink it so that it fits the category's NeMo crop.

    PASCAL3D+ crop sizes were chosen so that most objects at distance 5 fit: the footprint may fill
    80 % of the crop width and the height 70 % of its height (elevation adds to the projected height).
    """
    crop_h, crop_w = CROP_SIZES["refactor"][category]
    lo, hi = model.mesh.vertices.min(axis=0), model.mesh.vertices.max(axis=0)
    extent = hi - lo
    scale = min(1.0, 0.8 * crop_w / PIXELS_PER_UNIT / max(extent[0], extent[1]),
                0.7 * crop_h / PIXELS_PER_UNIT / extent[2])
    centre = (lo + hi) / 2
    return CadModel(Mesh((model.mesh.vertices - centre) * scale, model.mesh.faces), model.face_parts,
                    model.part_names, (model.keypoints - centre) * scale)


def build_cad(category: str, subtype: int, seed: int = 0) -> CadModel:
    """Subtype ``subtype`` (0-based) of ``category``: the same arguments give the same model."""
    rng = np.random.default_rng([seed, CATEGORIES.index(category), subtype])
    return fit_to_crop(assemble(BUILDERS[category](rng), category), category)


def write_cad_library(root: str | Path, categories=CATEGORIES, seed: int = 0) -> dict[str, list[Path]]:
    """Write ``CAD/{category}/NN.off`` (1-based) and ``CAD/{category}.mat`` with every model's keypoints,
    as PASCAL3D+ stores its CAD models and anchors."""
    written: dict[str, list[Path]] = {}
    for category in categories:
        folder = Path(root) / "CAD" / category
        folder.mkdir(parents=True, exist_ok=True)
        written[category] = []
        models = [build_cad(category, k, seed) for k in range(SUBTYPES[category])]
        for k, model in enumerate(models):
            path = folder / f"{k + 1:02d}.off"
            write_off(path, model.mesh)
            written[category].append(path)
        names = KEYPOINT_NAMES[category]
        write_cad_mat(folder.with_suffix(".mat"), [(m.mesh, dict(zip(names, m.keypoints))) for m in models], names)
    return written
