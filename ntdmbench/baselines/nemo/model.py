"""NeMo (Wang, Kortylewski, Yuille, ICLR 2021) as a registered predictor: ``nemo``.

One category model per trained category (network + cuboid meshes + feature banks), all in one
checkpoint. ``predict`` runs every category model on every crop (render-and-compare,
``docs/reference.md`` §NeMo inference) and reports:

- ``class_scores``: ``1 - final loss`` per category model; ``category`` is the best, i.e. NeMo's
  classification by the lowest final loss (``docs/reference.md`` §NeMo as classifier).
- the pose (``azimuth, elevation, theta, distance``) and ``inmodal_mask`` from the model of the
  sample's **ground-truth** category, because NeMo's protocol counts the pose under the true class
  (``input_spec.needs_category``); when the model has no such category (e.g. an unseen one) they come
  from the best-scoring model. ``extra["pose_category"]`` names the model used and
  ``extra["pose_of_predicted"]`` holds the predicted class's (azimuth, elevation, theta) when it differs.
- ``inmodal_mask``: foreground where the best vertex similarity ``max_v <f, bank_v>`` exceeds the clutter
  score, inside the fitted cuboid's silhouette, upsampled x8 nearest to the crop. NeMo's own IoU
  evaluation instead thresholds the similarity at 0.8 inside the *ground-truth* amodal mask, which a
  predictor cannot see; the clutter score is the model's own fg/bg decision, and the predicted
  silhouette stands in for the amodal mask.

Defaults are the paper's settings, those of Angtian/NeMo's ``TrainNeMo.py`` and ``MeshPoseSolveAll.py``
(ImageNet-pretrained ResNet50 ResNetExt, 800 epochs, batch 108 with 10-step gradient accumulation, lr
1e-4 then 2e-5 from the second epoch, official visibility labels, 144 starting poses, 300 steps at lr
0.05); ``DEVIATIONS`` lists what still differs. The ``quick`` preset (4 categories x 48 training crops,
2 CPU cores, about 3 minutes of training) uses::

    --model-args backbone_weights=none,backbone_depth=18,epochs=12,batch_size=16,lr=1e-3,accumulate=1,max_group=64,mesh_vertices=400,steps=40,pose_lr=0.1

i.e. ResNet18 from scratch, 12 epochs at a 10x higher lr without accumulation, a 320-row clutter FIFO,
~400-vertex cuboids (the crops are 4x smaller than NeMo's), the full 144-pose grid (cheap: pre-rendered)
and 40 steps at lr 0.1 (the decay stays every steps // 3, so the pose can still travel about 18 degrees).

Checkpoints: ``ntdmbench train`` writes this project's format (meshes included). ``load`` also accepts
NeMo's official per-category checkpoints (``official.py``), or a folder of them; those need
``mesh_root`` (NeMo's ``CAD_single``/``CAD_multi`` folder).
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ntdmbench.baselines.nemo import training
from ntdmbench.baselines.nemo.category import CategoryModel, category_cuboids
from ntdmbench.baselines.nemo.inference import (
    InferenceSettings,
    StartCache,
    fit_category,
)
from ntdmbench.baselines.nemo.official import is_official, load_official
from ntdmbench.models.training import Resume, ids_by_category
from ntdmbench.datasets.records import CATEGORIES, DataError, Prediction, Sample
from ntdmbench.models.backbone import IMAGENET, load_resnet_weights, resnet_state_dict
from ntdmbench.models.camera import crop_focal_px
from ntdmbench.models.inputs import image_batch
from ntdmbench.models.predictor import (
    BasePredictor,
    Capability,
    InputSpec,
    coerce_numbers,
    sha256_file,
)
from ntdmbench.models.settings import settings_from

FORMAT = "ntdmbench-nemo-1"
DEVIATIONS = (
    "training follows Angtian/NeMo TrainNeMo.py (batch 108, accumulate 10, bank momentum 0.9, clutter anywhere "
    "off the vertex cells, lr x0.2 after epoch 1); wufeim/NeMo's refactor differs (batch 48, momentum 0.96, "
    "clutter outside the box, MultiStepLR [400, 600]: lr_schedule=wufeim)",
    "batch norm statistics over the whole batch; the official DataParallel computes them per GPU (108 / 6 = 18 images)",
    "own-trained networks apply the head's bias at test time as in training; Angtian's forward_test drops it "
    "(wufeim's never uses it); official checkpoints load with it zeroed, so their features are the official ones",
    "training vertex positions are projected in the crop (distance 5); the official maps integer positions from "
    "the original image into the crop by the box map (a few pixels apart under perspective when distance != 5)",
    "visibility labels by the official rule need the sample's NeMo annotation (original size, principal point, "
    "box_ori, true distance); an in-memory sample without one is labelled in its own crop",
    "multi-cuboid training shuffles the batches of all meshes together; the official loop runs mesh by mesh",
    "a trailing batch of one image joins the previous batch (batch norm); crops are padded to a multiple of 8",
    "rendering: the project's rasteriser (PyTorch3D-equivalent, hard z-buffer) with the crop's focal length / 8 and "
    "the principal point at the crop centre (wufeim's PerspectiveCameras); Angtian renders a square "
    "max(H, W) / 8 image at fov 12 degrees and centre-crops it (focal max(H, W) / 2 / tan 6 deg, 3197 px for car)",
    "initial distance 5 for every category (wufeim's omni config); Angtian's distance_render is per category",
    "rebuilt cuboids: the official vertex order, but each grid cell split along the other diagonal and every "
    "face wound outwards (official CAD_single/CAD_multi files are used as they are, triangles included)",
    "inmodal_mask: best vertex similarity above the clutter score inside the fitted silhouette; NeMo's "
    "evaluation thresholds the similarity at 0.8 inside the ground-truth amodal mask",
)
"""Every remaining difference from the published NeMo code and paper (module docstring); in ``describe()``."""


@dataclass
class NeMoPredictor(BasePredictor):
    name = "nemo"
    capabilities = frozenset({Capability.POSE, Capability.CLASS})
    input_spec = InputSpec(needs_category=True)
    paper = "NeMo: Neural Mesh Models of Contrastive Features for Robust 3D Pose Estimation (ICLR 2021)"

    # network and meshes
    backbone_depth: int = 50
    feature_dim: int = 128
    backbone_weights: str | None = IMAGENET  # "imagenet" (torchvision IMAGENET1K_V1), a local state dict, or None
    mesh_mode: str = "single"  # "single" | "multi" cuboid(s)
    mesh_vertices: int = 1000
    # training (TrainNeMo.py)
    epochs: int = 800
    batch_size: int = 108
    lr: float = 1e-4
    lr_schedule: str = training.TrainSettings.lr_schedule  # "angtian" (TrainNeMo.py) | "wufeim" (MultiStepLR [400, 600] of 800) | "constant"
    weight_decay: float = 1e-4
    accumulate: int = 10
    bank_momentum: float = 0.9
    temperature: float = 0.07
    clutter_weight: float = 5e-3
    clutter_reg: float = 0.1
    near_px: float = 48.0  # exclusion radius in pixels at viewport 3000, scaled with the crop's focal length
    num_noise: int = 5
    max_group: int = 512  # clutter FIFO rows = num_noise * max_group
    noise_outside_box: bool = False  # TrainNeMo.py: noise_on_mask=False (the refactor draws outside the box)
    checkpoint_every_s: float = 60.0  # at most one resumable-state save per this many seconds (and per category end)
    # inference (MeshPoseSolveAll.py)
    n_azimuth: int = InferenceSettings.n_azimuth
    n_elevation: int = InferenceSettings.n_elevation
    n_theta: int = InferenceSettings.n_theta
    steps: int = InferenceSettings.steps
    pose_lr: float = InferenceSettings.pose_lr
    pose_beta1: float = InferenceSettings.pose_beta1
    pose_beta2: float = InferenceSettings.pose_beta2
    pose_gamma: float = InferenceSettings.pose_gamma
    init_distance: float = InferenceSettings.init_distance
    use_clutter: bool = InferenceSettings.use_clutter
    focal_px: float | None = None  # None: the sample's focal x viewport, else 3000
    # official checkpoints
    mesh_root: str | None = None
    category: str | None = None  # for an official checkpoint that does not name its category
    device: str = "cpu"

    def __post_init__(self) -> None:
        coerce_numbers(self)
        if self.mesh_mode not in ("single", "multi"):
            raise ValueError(f"mesh_mode must be 'single' or 'multi', got {self.mesh_mode!r}")
        if self.lr_schedule not in training.LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(training.LR_SCHEDULES)}, got {self.lr_schedule!r}")
        for key in ("epochs", "batch_size", "accumulate", "steps", "mesh_vertices", "num_noise", "max_group"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        self.models: dict[str, CategoryModel] = {}  # plain attributes, not config fields
        self.trained: dict[str, dict[str, Any]] = {}
        self._cache = StartCache()

    # ------------------------------------------------------------------ training
    def fit(self, dataset, *, categories: Sequence[str], resume: Resume | None = None, device: str = "cpu",
            seed: int = 0, progress: bool = True) -> None:
        """Train one category model per category on ``dataset`` (CAD models from ``{dataset.root}/CAD``)."""
        from tqdm.auto import tqdm

        root = getattr(dataset, "root", None)
        cad_root = Path(root) / "CAD" if root is not None else None
        if cad_root is None or not cad_root.is_dir():
            raise DataError(f"{cad_root or dataset.name}: NeMo training needs the CAD folder {{root}}/CAD")
        settings = settings_from(training.TrainSettings, self)
        fingerprint = {k: v for k, v in self.config().items() if k not in ("device", "checkpoint_every_s")}
        saved = [time.monotonic()]
        state = resume.load() if resume is not None else None
        if state is not None and state.get("settings") != fingerprint:
            raise ValueError(f"{resume.path}: written with other settings; delete it or train with the same --model-args")
        finished: dict[str, Any] = dict(state["finished"]) if state else {}
        current = state.get("current") if state else None
        ids = ids_by_category(dataset, categories)
        self.models, self.trained = {}, {}
        start_weights = None
        if any(c not in finished for c in categories):
            start_weights = resnet_state_dict(self.backbone_weights, self.backbone_depth)
        for category in categories:
            if category in finished:
                self.models[category] = CategoryModel.rebuild(finished[category]["model"])
                self.trained[category] = finished[category]["summary"]
                continue
            index = CATEGORIES.index(category) if category in CATEGORIES else len(CATEGORIES)
            seed_c = training.epoch_seed(seed, index, 0)
            torch.manual_seed(seed_c)
            model = CategoryModel(category_cuboids(cad_root, category, self.mesh_mode, self.mesh_vertices),
                                  self.backbone_depth, self.feature_dim, self.num_noise * self.max_group,
                                  self.bank_momentum, torch.Generator().manual_seed(seed_c))
            if start_weights is not None:
                load_resnet_weights(model.net.net, start_weights, str(self.backbone_weights))
            items = [training.prepare(dataset.load(i), model, self.input_spec, settings) for i in ids[category]]
            start = current["state"] if current and current["category"] == category else None

            def save(get_state: Callable[[], dict[str, Any]], last: bool, category: str = category) -> None:
                if resume is None or not (last or time.monotonic() - saved[0] >= self.checkpoint_every_s):
                    return
                resume.save({"settings": fingerprint, "finished": finished,
                             "current": {"category": category, "state": get_state()}})
                saved[0] = time.monotonic()

            per_epoch = len(training.epoch_batches(items, self.batch_size, torch.Generator().manual_seed(0)))
            done = start["epoch"] if start else 0
            with tqdm(total=(self.epochs - done) * per_epoch, desc=f"nemo {category}", unit="batch",
                      disable=not progress) as bar:
                summary = training.train_category(model, items, settings, seed=seed, category_index=index,
                                                  start_state=start, save_state=save, bar=bar, device=device)
            model.cpu()
            self.models[category], self.trained[category] = model, summary
            finished[category] = {"model": model.export(), "summary": summary}
        self._cache.clear()

    # ------------------------------------------------------------------ inference
    def _candidates(self, sample: Sample, category: str, n_meshes: int) -> list[int]:
        """Meshes to try: the GT subtype's under the GT category in multi mode (NeMo's protocol), else all."""
        if n_meshes > 1 and sample.category == category and sample.cad_index and 1 <= sample.cad_index <= n_meshes:
            return [sample.cad_index - 1]
        return list(range(n_meshes))

    def predict(self, batch: Sequence[Sample]) -> list[Prediction]:
        if not self.models:
            raise RuntimeError("nemo: no category model; train one or pass --checkpoint")
        settings = settings_from(InferenceSettings, self)
        groups: dict[tuple, list[Sample]] = defaultdict(list)
        for s in batch:
            groups[(*s.load_image().shape[:2], crop_focal_px(s, self.focal_px))].append(s)
        out: dict[str, Prediction] = {}
        for (_, _, focal), samples in groups.items():
            images = image_batch(samples, self.input_spec, self.device)[0]
            fits = {}
            for category, model in self.models.items():
                model.to(self.device).eval()
                candidates = [self._candidates(s, category, len(model.meshes)) for s in samples]
                fits[category] = fit_category(model, images, candidates, focal, settings, self._cache, category)
            for b, s in enumerate(samples):
                scores = {c: float(1 - f.loss[b]) for c, f in fits.items()}
                predicted = max(scores, key=scores.get)
                pose_category = s.category if s.category in fits else predicted
                f = fits[pose_category]
                extra: dict[str, Any] = {"pose_category": pose_category, "mesh": int(f.mesh[b])}
                if predicted != pose_category:
                    p = fits[predicted]
                    extra["pose_of_predicted"] = [float(p.azimuth[b]), float(p.elevation[b]), float(p.theta[b])]
                out[s.id] = Prediction(
                    id=s.id, category=predicted, class_scores=scores,
                    azimuth=float(f.azimuth[b]), elevation=float(f.elevation[b]), theta=float(f.theta[b]),
                    distance=float(f.distance[b]), inmodal_mask=f.inmodal[b].cpu().numpy(), extra=extra,
                )
        return [out[s.id] for s in batch]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "categories": {c: m.export() for c, m in self.models.items()},
                "trained": self.trained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != FORMAT:
            raise DataError(f"nemo: checkpoint format {state.get('format')!r}, expected {FORMAT!r}")
        self.models = {c: CategoryModel.rebuild(s).eval() for c, s in state["categories"].items()}
        self.trained = dict(state.get("trained", {}))
        self._adopt_architecture()

    def _adopt_architecture(self) -> None:
        """The loaded networks decide depth, feature size and mesh mode (so ``describe`` tells the truth)."""
        first = next(iter(self.models.values()))
        self.backbone_depth, self.feature_dim = first.depth, first.net.feature_dim
        self.mesh_mode = "multi" if len(first.meshes) > 1 else "single"
        self._cache.clear()

    def merge(self, paths: Sequence[str | Path]) -> None:
        """Join checkpoints trained on disjoint categories (a suite row with ``per_category: true`` trains
        each category on its own rank). Category seeds come from the fixed category list, so the result
        equals training all categories in one process."""
        categories: dict[str, Any] = {}
        trained: dict[str, Any] = {}
        for path in paths:
            payload = torch.load(path, map_location="cpu", weights_only=False)
            if not (isinstance(payload, dict) and payload.get("model") == self.name):
                raise DataError(f"{path}: not an ntdmbench nemo checkpoint")
            state = payload["state"]
            if state.get("format") != FORMAT:
                raise DataError(f"{path}: checkpoint format {state.get('format')!r}, expected {FORMAT!r}")
            if twice := sorted(set(state["categories"]) & set(categories)):
                raise DataError(f"{path}: categories {', '.join(twice)} are already in another of the merged checkpoints")
            categories.update(state["categories"])
            trained.update(state.get("trained", {}))
        if not categories:
            raise DataError("nemo: nothing to merge")
        self.load_state_dict({"format": FORMAT, "categories": categories, "trained": trained})

    def load(self, path: str | Path) -> None:
        """This project's checkpoint, an official NeMo checkpoint, or a folder of official ones (one per category)."""
        path = Path(path)
        files = sorted(path.glob("*.pth")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise FileNotFoundError(f"{path}: checkpoint not found")
        models = {}
        for f in files:
            payload = torch.load(f, map_location="cpu", weights_only=False)
            if is_official(payload):
                category, model = load_official(payload, f, self.mesh_root, self.category, self.mesh_vertices,
                                                self.bank_momentum)
                models[category] = model
            elif len(files) == 1 and isinstance(payload, dict) and payload.get("model") == self.name:
                self.load_state_dict(payload["state"])
                self.checkpoint_sha256 = sha256_file(f)
                return
            else:
                raise DataError(f"{f}: neither an ntdmbench nemo checkpoint nor an official NeMo one")
        self.models, self.trained = models, {}
        self._adopt_architecture()
        digests = [sha256_file(f) for f in files]
        self.checkpoint_sha256 = digests[0] if len(files) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()

    def num_parameters(self) -> int:
        return sum(p.numel() for m in self.models.values() for p in m.net.parameters())

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "deviations": list(DEVIATIONS)}
        out["categories"] = {c: {"meshes": [len(mesh.vertices) for mesh in m.meshes], **self.trained.get(c, {})}
                             for c, m in self.models.items()}
        return out
