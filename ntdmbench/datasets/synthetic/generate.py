"""``ntdmbench data synth``: a synthetic PASCAL3D+ / Occluded PASCAL3D+ / OOD-CV benchmark in the real formats.

Output under ``--out``::

    pascal3d/   NeMo (refactored) layout: train/ and val/ with images, annotations (keypoints included),
                lists per category; val/ also holds the occluded levels {cate}FGLk_BGLk (occluders covering
                20-40 / 40-60 / 60-80 % of the object and 0-20 / 20-40 / 40-60 % of the background, as
                Occluded PASCAL3D+'s FGL and BGL levels); CAD/{cate}/NN.off and CAD/{cate}.mat (keypoints);
                manifest.json
    oodcv/      NeMo layout of OOD-CV: val/ with an npz ``nuisance`` per sample (shape, pose, texture,
                context, weather, iid); manifest.json
    contact_sheets/{split}.png   a look at every split
    synthetic.json               preset, seed, what each OOD split holds out, occlusion achieved per level

Read it with the catalog: ``--root OUT/pascal3d`` for ``pascal3d/*`` and ``occluded-pascal3d/*``, ``--root
OUT/oodcv`` for ``oodcv/test/*``. Every sample is drawn from its own seeded generator, so the same seed
gives byte-identical files whatever the order of generation.

Images are crops at NeMo's normalised distance 5 with the principal point at the crop centre; a preset's
``scale`` shrinks the crop sizes and the focal length together (``viewport = 3000 * scale``), so the
geometry is PASCAL3D+'s at a lower resolution.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from ntdmbench.datasets.crop import CROP_SIZES
from ntdmbench.datasets.oodcv import OODCV_CATEGORIES
from ntdmbench.datasets.prepare import NemoWriter, update_manifest
from ntdmbench.datasets.keypoints import KEYPOINT_NAMES
from ntdmbench.datasets.records import CATEGORIES, Keypoints, Pose, Sample
from ntdmbench.datasets.synthetic import textures
from ntdmbench.datasets.synthetic.cad import SUBTYPES, CadModel, build_cad, write_cad_library
from ntdmbench.datasets.synthetic.scenes import (Cutout, Rendered, object_cutout, occlude, random_light,
                                                 render_object, texture_cutout)
from ntdmbench.errors import InputError
from ntdmbench.models.meshes import Mesh

FORMAT = "ntdmbench-synthetic/2"  # bumped whenever the same preset and seed give other images
OCCLUSION_BANDS = {1: (0.2, 0.4), 2: (0.4, 0.6), 3: (0.6, 0.8)}  # FGLk: occluded fraction of the object
BACKGROUND_BANDS = {1: (0.0, 0.2), 2: (0.2, 0.4), 3: (0.4, 0.6)}  # BGLk: occluded fraction of the background
NUISANCES = ("shape", "pose", "texture", "context", "weather", "iid")  # the order keys each split's seeds
HELD_OUT_SHAPES = 3  # unseen subtypes per category for the OOD shape split


@dataclass(frozen=True)
class Preset:
    categories: tuple[str, ...]
    train: int  # images per category
    val: int  # images per category (each also at L1, L2, L3)
    ood: int  # images per category and nuisance
    scale: float  # of the NeMo crop sizes and of the focal length
    supersample: int = 2


PRESETS: dict[str, Preset] = {
    "smoke": Preset(("car", "sofa"), train=4, val=3, ood=1, scale=0.125, supersample=1),
    "quick": Preset(("bus", "car", "motorbike", "sofa"), train=48, val=32, ood=6, scale=0.3125),
    "full": Preset(CATEGORIES, train=500, val=400, ood=60, scale=0.5),
}


def crop_sizes(scale: float) -> dict[str, tuple[int, int]]:
    """NeMo's crop sizes scaled and rounded to multiples of 8 (the backbone stride)."""
    return {c: (max(8, round(h * scale / 8) * 8), max(8, round(w * scale / 8) * 8))
            for c, (h, w) in CROP_SIZES["refactor"].items()}


# --- what one sample looks like -------------------------------------------------------------------


def iid_pose(rng: np.random.Generator) -> tuple[float, float, float]:
    """PASCAL3D+-like: azimuth uniform, elevation mostly -10..40 degrees, small in-plane rotation."""
    azimuth = rng.uniform(0, 2 * math.pi)
    elevation = math.radians(float(np.clip(rng.normal(12, 10), -10, 40)))
    theta = math.radians(float(np.clip(rng.normal(0, 4), -15, 15)))
    return azimuth, elevation, theta


def ood_pose(rng: np.random.Generator) -> tuple[float, float, float]:
    """Held-out ranges: elevation 50-75 degrees or in-plane rotation 25-45 degrees."""
    azimuth, elevation, theta = iid_pose(rng)
    if rng.random() < 0.5:
        elevation = math.radians(rng.uniform(50, 75))
    else:
        theta = math.radians(rng.uniform(25, 45)) * rng.choice([-1, 1])
    return azimuth, elevation, theta


@dataclass
class Scene:
    """The random choices behind one image."""

    category: str
    subtype: int  # 0-based; >= SUBTYPES[category] is a held-out shape
    background: str
    angles: tuple[float, float, float]
    ood_texture: bool = False
    weather: str | None = None


def draw_scene(category: str, nuisance: str, rng: np.random.Generator) -> Scene:
    subtype = int(rng.integers(SUBTYPES[category]))
    if nuisance == "shape":
        subtype = SUBTYPES[category] + int(rng.integers(HELD_OUT_SHAPES))
    scene = Scene(category, subtype, str(rng.choice(textures.BACKGROUNDS_IID)),
                  ood_pose(rng) if nuisance == "pose" else iid_pose(rng))
    if nuisance == "texture":
        scene.ood_texture = True
    elif nuisance == "context":
        scene.background = textures.BACKGROUND_OOD
    elif nuisance == "weather":
        scene.weather = str(rng.choice(textures.WEATHER))
    return scene


def nearest_cad(mesh: Mesh, library: list[Mesh]) -> int:
    """1-based index of the library CAD with the closest box: how an annotator labels an unseen shape."""
    extent = np.ptp(mesh.vertices, axis=0)
    return 1 + int(np.argmin([np.abs(np.ptp(m.vertices, axis=0) - extent).sum() for m in library]))


# --- the generator --------------------------------------------------------------------------------

CUTOUT_PX = 64  # objects and texture patches are cut out at this size, then scaled into a scene


class Generator:
    def __init__(self, out: Path, preset: Preset, seed: int):
        self.out, self.preset, self.seed = Path(out), preset, seed
        self.sizes = crop_sizes(preset.scale)
        self.viewport = 3000.0 * preset.scale
        self._models: dict[tuple[str, int], CadModel] = {}
        self._cutouts: dict[str, list[Cutout]] = {}
        self.counts: dict[str, dict[str, int]] = {"pascal3d": {}, "oodcv": {}}
        self.occlusion: dict[int, list[tuple[float, float]]] = {}  # level -> (object, background) fractions
        self.sheets: dict[str, list[tuple[str, np.ndarray]]] = {}

    def model(self, category: str, subtype: int) -> CadModel:
        key = (category, subtype)
        if key not in self._models:
            self._models[key] = build_cad(category, subtype, self.seed)
        return self._models[key]

    def rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *keys])

    def object_cutouts(self, category: str) -> list[Cutout]:
        """Renders of objects of every other category (all 12, not only the preset's), for occluders and
        distractors: a fixed pool per seed, like Occluded PASCAL3D+'s occluder library."""
        if category not in self._cutouts:
            pool = []
            for k, other in enumerate(c for c in CATEGORIES if c != category):
                for i in range(3):
                    rng = self.rng(3, CATEGORIES.index(category), k, i)
                    model = self.model(other, int(rng.integers(SUBTYPES[other])))
                    crop_h, crop_w = CROP_SIZES["refactor"][other]
                    side = 2 * CUTOUT_PX
                    pose = Pose(*iid_pose(rng), distance=5.0, principal=(side / 2, side / 2), focal=1.0,
                                viewport=3000.0 * side / max(crop_h, crop_w))
                    look = textures.appearance(other, model.part_names, rng)
                    pool.append(object_cutout(render_object(model, look, pose, (side, side), np.zeros(3),
                                                            random_light(rng), 1)))
            self._cutouts[category] = pool
        return self._cutouts[category]

    def render(self, scene: Scene, rng: np.random.Generator, distractors: int) -> tuple[Rendered, Pose, int]:
        h, w = self.sizes[scene.category]
        pose = Pose(*scene.angles, distance=5.0, principal=(w / 2, h / 2), focal=1.0, viewport=self.viewport)
        model = self.model(scene.category, scene.subtype)
        back = textures.background(scene.background, rng, (h, w))
        pool = self.object_cutouts(scene.category)
        for _ in range(distractors):  # smaller objects further away, behind the target
            cutout = pool[int(rng.integers(len(pool)))]
            scale = rng.uniform(0.2, 0.45) * h / max(cutout.alpha.shape)
            cutout.paste(back, None, (rng.uniform(0, w), rng.uniform(0.3, 0.9) * h), scale)
        look = textures.appearance(scene.category, model.part_names, rng, scene.ood_texture)
        rendered = render_object(model, look, pose, (h, w), back, random_light(rng), self.preset.supersample)
        if scene.weather:
            rendered.image = textures.apply_weather(rendered.image, scene.weather, rng)
        library = [self.model(scene.category, k).mesh for k in range(SUBTYPES[scene.category])]
        cad_index = scene.subtype + 1 if scene.subtype < len(library) else nearest_cad(model.mesh, library)
        return rendered, pose, cad_index

    def sample(self, scene: Scene, name: str, image: np.ndarray, rendered: Rendered, pose: Pose, cad_index: int,
               occluder: np.ndarray, tags: dict[str, str]) -> Sample:
        amodal = rendered.amodal
        ys, xs = np.nonzero(amodal)
        h, w = amodal.shape
        col = np.floor(rendered.keypoints[:, 0]).astype(int).clip(0, w - 1)
        row = np.floor(rendered.keypoints[:, 1]).astype(int).clip(0, h - 1)
        keypoints = Keypoints(KEYPOINT_NAMES[scene.category], rendered.keypoints,
                              rendered.keypoints_visible & ~occluder[row, col])
        return Sample(
            id=f"{scene.category}/{name}_00", category=scene.category, pose=pose,
            image=np.round(np.clip(image, 0, 1) * 255).astype(np.uint8),
            amodal_mask=amodal, inmodal_mask=amodal & ~occluder, occluder_mask=occluder,
            bbox=(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)),
            cad_index=cad_index, keypoints=keypoints, tags=tags,
        )

    def pascal3d_split(self, split: str) -> None:
        writer = NemoWriter(self.out / "pascal3d" / split, self.sizes)
        n = self.preset.train if split == "train" else self.preset.val
        split_code = 0 if split == "train" else 1
        for c in self.preset.categories:
            for i in range(n):
                rng = self.rng(split_code, CATEGORIES.index(c), i)
                scene = draw_scene(c, "iid", rng)
                rendered, pose, cad = self.render(scene, rng, distractors=int(rng.integers(1, 3)))
                name = f"syn_{split}_{i:05d}"
                none = np.zeros_like(rendered.amodal)
                clean = self.sample(scene, name, rendered.image, rendered, pose, cad, none,
                                    {"dataset": "pascal3d", "split": split, "level": "L0"})
                writer.write(clean, "")
                self._keep(f"pascal3d/{split}", clean)
                if split != "val":
                    continue
                for level, band in OCCLUSION_BANDS.items():
                    occ_rng = self.rng(split_code, CATEGORIES.index(c), i, level)
                    pool = self.object_cutouts(c) + [texture_cutout(occ_rng, CUTOUT_PX) for _ in range(4)]
                    occ = occlude(rendered.image, rendered.amodal, band, BACKGROUND_BANDS[level], pool, occ_rng)
                    self.occlusion.setdefault(level, []).append((occ.foreground, occ.background))
                    occluded = self.sample(scene, name, occ.image, rendered, pose, cad, occ.mask,
                                           {"dataset": "occluded-pascal3d", "split": split, "level": f"L{level}"})
                    writer.write(occluded, f"FGL{level}_BGL{level}")
                    self._keep(f"occluded-pascal3d/val/L{level}", occluded)
        writer.finish()
        self.counts["pascal3d"][f"pascal3d/{split}"] = n * len(self.preset.categories)
        if split == "val":
            for level in OCCLUSION_BANDS:
                self.counts["pascal3d"][f"occluded-pascal3d/val/L{level}"] = n * len(self.preset.categories)

    def oodcv(self) -> None:
        writer = NemoWriter(self.out / "oodcv" / "val", self.sizes)
        categories = [c for c in self.preset.categories if c in OODCV_CATEGORIES]
        for k, nuisance in enumerate(NUISANCES):
            for c in categories:
                for i in range(self.preset.ood):
                    rng = self.rng(2, k, CATEGORIES.index(c), i)
                    scene = draw_scene(c, nuisance, rng)
                    rendered, pose, cad = self.render(scene, rng, distractors=int(rng.integers(0, 3)))
                    sample = self.sample(scene, f"syn_{nuisance}_{i:05d}", rendered.image, rendered, pose, cad,
                                         np.zeros_like(rendered.amodal),
                                         {"dataset": "oodcv", "split": "test", "nuisance": nuisance})
                    writer.write(sample, "")
                    self._keep(f"oodcv/test/{nuisance}", sample)
            self.counts["oodcv"][f"oodcv/test/{nuisance}"] = self.preset.ood * len(categories)
        writer.finish()

    def _keep(self, split: str, sample: Sample, per_category: int = 6) -> None:
        kept = self.sheets.setdefault(split, [])
        if sum(1 for c, _ in kept if c == sample.category) < per_category:
            kept.append((sample.category, sample.image))

    def contact_sheets(self) -> list[Path]:
        folder = self.out / "contact_sheets"
        folder.mkdir(parents=True, exist_ok=True)
        return [write_contact_sheet(folder / f"{split.replace('/', '_')}.png", split, tiles)
                for split, tiles in self.sheets.items()]

    def occlusion_summary(self) -> dict[str, dict[str, float]]:
        """Per level: the mean occluded fractions (FGL: object, BGL: background) and how many images have
        their background fraction inside the BGL band."""
        out = {}
        for level, pairs in sorted(self.occlusion.items()):
            fg, bg = np.array(pairs).T
            lo, hi = BACKGROUND_BANDS[level]
            out[f"L{level}"] = {"foreground_mean": round(float(fg.mean()), 3),
                                "background_mean": round(float(bg.mean()), 3),
                                "background_in_band": round(float(((bg >= lo) & (bg <= hi)).mean()), 3)}
        return out

    def run(self) -> dict[str, dict[str, int]]:
        write_cad_library(self.out / "pascal3d", self.preset.categories, self.seed)
        for split in ("train", "val"):
            self.pascal3d_split(split)
        self.oodcv()
        for family, counts in self.counts.items():
            update_manifest(self.out / family, counts)
        self.contact_sheets()
        meta = {"format": FORMAT, "preset": asdict(self.preset), "seed": self.seed,
                "crop_sizes": self.sizes, "viewport": self.viewport,
                "held_out": {"shape": f"{HELD_OUT_SHAPES} unseen subtypes per category (cad_index = nearest CAD)",
                             "pose": "elevation 50-75 deg or |theta| 25-45 deg",
                             "texture": f"large panels in {textures.PANEL_FAMILY_OOD}",
                             "context": textures.BACKGROUND_OOD, "weather": list(textures.WEATHER)},
                "occlusion_bands": {"foreground": OCCLUSION_BANDS, "background": BACKGROUND_BANDS},
                "occlusion_achieved": self.occlusion_summary(), "counts": self.counts}
        (self.out / "synthetic.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return self.counts


def write_contact_sheet(path: Path, title: str, tiles: list[tuple[str, np.ndarray]], tile: int = 128) -> Path:
    columns = 6
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * tile, 16 + rows * (tile + 12)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), title, fill="black")
    for k, (category, image) in enumerate(tiles):
        im = Image.fromarray(image)
        im.thumbnail((tile - 4, tile - 4))
        x, y = (k % columns) * tile, 16 + (k // columns) * (tile + 12)
        sheet.paste(im, (x + 2, y + 2))
        draw.text((x + 2, y + tile - 2), category, fill="black")
    sheet.save(path)
    return path


def generate(out: str | Path, preset: str = "quick", seed: int = 0) -> dict[str, dict[str, int]]:
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    return Generator(Path(out), PRESETS[preset], seed).run()


def iter_split_names(counts: dict[str, dict[str, int]]) -> Iterator[tuple[str, int]]:
    for family in counts.values():
        yield from family.items()


def synth_command(args) -> int:
    start = time.perf_counter()
    counts = generate(args.out, args.preset, args.seed)
    elapsed = time.perf_counter() - start
    total = sum(n for _, n in iter_split_names(counts))
    for name, n in iter_split_names(counts):
        print(f"{name}: {n} images")
    print(f"wrote {total} images in {elapsed:.1f} s ({total / elapsed:.1f} images/s) under {args.out}")
    print(f"use --root {Path(args.out) / 'pascal3d'} for pascal3d/* and occluded-pascal3d/*, "
          f"--root {Path(args.out) / 'oodcv'} for oodcv/test/*")
    return 0
