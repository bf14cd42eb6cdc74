"""NTDM (Wang, Ma, Yuille, Kortylewski, WACV 2024) as a registered predictor: ``ntdm``.

One checkpoint holds one shared feature extractor (the paper trains a single extractor jointly with
every category's neural texture, so D_Class can contrast categories), and per category the fitted
deformable mesh and the neural texture, plus the background bank: everything inference needs (no CAD
folder at test time). ``predict`` runs every category model on every crop and reports

- ``category``: the model with the lowest reconstruction loss (``class_scores`` are ``1 - loss``);
- the pose (azimuth, elevation, theta, distance) of that model's fit: NTDM's tasks come from one
  consistent fit, so no ground-truth category is used;
- ``amodal_mask``: the rendered silhouette O; ``inmodal_mask``: its FG pixels;
- ``extra``: the fitted latent ``z`` and instance scale ``s'`` (the shape is ``Gamma(z, s')``, recomputed
  from the checkpoint), with ``export_dir`` set also the fig. 5 coloured ``.obj`` and an overlay PNG
  per sample.

The focal length is the crop's intrinsics (``focal_px``, else the sample's focal x viewport, else
3000: ``camera.crop_focal_px``) and the principal point the crop centre (NeMo's crops are centred on
the object).

Defaults are the paper's settings (ImageNet-pretrained ResNet50 ResNetExt, 2562-vertex template, b = 7 bins, q = 256,
800 epochs, 1000/2000 samples, 144 starts x one-hot latents, 300 Adam steps); those of a training
batch and of inference are written in ``training.TrainSettings`` and ``inference.InferenceSettings``,
which ``settings_from`` fills from the fields of the same names. Table 3's switches:
``use_background=false`` (w/o BG), ``single_alpha=true`` (one bin: trained with one, or the
normal-aligned bin of a 7-bin checkpoint), ``fix_shape=true``, ``latent_init=random|average``.
The ``quick`` preset (4 categories, 192 training images, 2 CPU cores) uses::

    --model-args backbone_weights=none,backbone_depth=18,template_level=3,mlp_hidden=64,fit_iters=40,fit_lr=0.01,fit_points=300,texture_size=32,epochs=24,batch_size=8,lr=0.001,n_pos=200,n_neg=400,n_class_neg=200,n_azimuth=12,n_elevation=4,n_theta=1,steps=30,class_topk=2
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ntdmbench.models.training import Resume, ids_by_category
from ntdmbench.datasets.records import DataError, Prediction, Sample
from ntdmbench.models.backbone import IMAGENET, FeatureNet, load_resnet_weights, resnet_state_dict
from ntdmbench.models.camera import Camera, crop_focal_px
from ntdmbench.models.inputs import image_batch
from ntdmbench.models.meshes import read_off
from ntdmbench.models.predictor import (
    BasePredictor,
    Capability,
    InputSpec,
    coerce_numbers,
)
from ntdmbench.models.render_compare import clutter_score
from ntdmbench.models.settings import settings_from
from ntdmbench.models.stages import stage
from ntdmbench.ntdm import export
from ntdmbench.ntdm.deformable import DeformableMesh, fit_deformable, relative_fit_error
from ntdmbench.ntdm.inference import (
    CategoryModel,
    InferenceSettings,
    fit_categories,
    masks,
    search_starts,
)
from ntdmbench.ntdm.textures import NeuralTexture, bin_rotations
from ntdmbench.ntdm.training import BackgroundBank, TrainSettings, train_batch

FORMAT = "ntdmbench-ntdm-1"
ARCHITECTURE = ("backbone_depth", "feature_dim", "template_level", "mlp_hidden", "mlp_layers", "pe_freqs",
                "texture_size", "bin_angle", "alpha_temperature")


@dataclass
class NTDMPredictor(BasePredictor):
    name = "ntdm"
    capabilities = frozenset({Capability.POSE, Capability.CLASS, Capability.AMODAL})
    input_spec = InputSpec()
    paper = "Neural Textured Deformable Meshes for Robust Analysis-by-Synthesis (WACV 2024)"

    # feature extractor
    backbone_depth: int = 50
    feature_dim: int = 128
    backbone_weights: str | None = IMAGENET  # "imagenet" (torchvision IMAGENET1K_V1), a local state dict, or None
    # deformable mesh (eq. 1-2)
    template_level: int = 4  # icosphere level: 2562 vertices
    mlp_hidden: int = 128
    mlp_layers: int = 4
    pe_freqs: int = 4
    fit_iters: int = 1000
    fit_lr: float = 1e-3
    fit_points: int = 2000
    w_normal: float = 0.01
    w_laplacian: float = 0.1
    fit_eval_points: int = 2000  # surface samples per side for the reported relative fit error
    # neural textures (eq. 5)
    n_bins: int = 7
    bin_angle: float = 60.0
    alpha_temperature: float = 5.0
    texture_size: int = 256
    # training (§3.3, §4.1.2)
    epochs: int = 800
    batch_size: int = 16
    lr: float = 1e-4
    lr_gamma: float = 0.997  # exponential decay per epoch
    texture_momentum: float = TrainSettings.texture_momentum
    n_pos: int = TrainSettings.n_pos
    n_neg: int = TrainSettings.n_neg
    n_class_neg: int = TrainSettings.n_class_neg
    tau: float = TrainSettings.tau
    w_con: float = TrainSettings.w_con
    w_class: float = TrainSettings.w_class
    w_bg: float = TrainSettings.w_bg
    temperature: float = TrainSettings.temperature
    n_bg: int = TrainSettings.n_bg
    bank_size: int = 2560
    uv_stride: int = TrainSettings.uv_stride
    # inference (§3.4, §4.1.2)
    n_azimuth: int = InferenceSettings.n_azimuth
    n_elevation: int = InferenceSettings.n_elevation
    n_theta: int = InferenceSettings.n_theta
    steps: int = InferenceSettings.steps
    pose_lr: float = InferenceSettings.pose_lr
    pose_beta1: float = InferenceSettings.pose_beta1
    pose_beta2: float = InferenceSettings.pose_beta2
    pose_gamma: float = InferenceSettings.pose_gamma
    init_distance: float = InferenceSettings.init_distance
    start_search: str = InferenceSettings.start_search
    latent_simplex: bool = InferenceSettings.latent_simplex
    scale_range: float = InferenceSettings.scale_range
    class_topk: int = 0  # 0: optimise every category model; k: only the k best after the init search
    focal_px: float | None = None  # None: the sample's focal x viewport, else 3000
    # Table 3 switches
    use_background: bool = InferenceSettings.use_background
    single_alpha: bool = InferenceSettings.single_alpha
    fix_shape: bool = InferenceSettings.fix_shape
    latent_init: str = InferenceSettings.latent_init
    # outputs
    export_dir: str | None = None  # fig. 5 coloured .obj and overlay .png per sample
    device: str = "cpu"

    def __post_init__(self) -> None:
        coerce_numbers(self)
        for key in ("epochs", "batch_size", "fit_points", "fit_eval_points", "n_pos", "n_neg", "n_bg", "bank_size", "uv_stride",
                    "texture_size", "n_azimuth", "n_elevation", "n_theta"):
            if getattr(self, key) < 1:
                raise ValueError(f"ntdm: {key} must be >= 1, got {getattr(self, key)}")
        if not 1 <= self.n_bins <= 7:
            raise ValueError(f"ntdm: n_bins must be between 1 and 7, got {self.n_bins}")
        settings_from(InferenceSettings, self)  # validates latent_init, start_search, steps and scale_range
        self.backbone: FeatureNet | None = None  # plain attributes, not config fields
        self.models: dict[str, CategoryModel] = {}
        self.bank: BackgroundBank | None = None
        self.cad_names: dict[str, list[str]] = {}
        self.fit_errors: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ building blocks
    def _category_model(self, mesh: DeformableMesh, texture: NeuralTexture) -> CategoryModel:
        return CategoryModel(mesh, texture, bin_rotations(7, self.bin_angle), self.alpha_temperature)

    def _fit_meshes(self, cad_root: Path, categories: Sequence[str], state: dict, resume: Resume | None,
                    seed: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        meshes = state.setdefault("meshes", {})
        for category in tqdm(categories, desc="ntdm meshes", unit="category", disable=not progress):
            if category in meshes:
                continue
            files = sorted((cad_root / category).glob("*.off"))
            if not files:
                raise DataError(f"{cad_root / category}: no CAD models (*.off) to fit the deformable mesh to")
            cads = [read_off(f) for f in files]
            mesh = fit_deformable(cads, template_level=self.template_level, hidden=self.mlp_hidden,
                                  layers=self.mlp_layers, pe_freqs=self.pe_freqs, iters=self.fit_iters,
                                  lr=self.fit_lr, surface_points=self.fit_points, w_normal=self.w_normal,
                                  w_laplacian=self.w_laplacian, seed=seed)
            meshes[category] = {"n_shapes": len(cads), "state": mesh.state_dict(), "cads": [f.stem for f in files],
                                "fit_error": relative_fit_error(mesh, cads, self.fit_eval_points)}
            if resume is not None:
                resume.save(state)

    def _mesh(self, saved: dict) -> DeformableMesh:
        mesh = DeformableMesh(saved["n_shapes"], self.template_level, self.mlp_hidden, self.mlp_layers, self.pe_freqs)
        mesh.load_state_dict(saved["state"])
        return mesh.eval()

    # ------------------------------------------------------------------ training
    def fit(self, dataset, *, categories: Sequence[str], resume: Resume | None = None, device: str = "cpu",
            seed: int = 0, progress: bool = True) -> None:
        """Fit each category's deformable mesh to ``{dataset.root}/CAD/{category}/*.off``, then train the
        shared extractor and the neural textures jointly (EM) on the samples of ``categories``."""
        from tqdm.auto import tqdm

        root = getattr(dataset, "root", None)
        cad_root = Path(root) / "CAD" if root is not None else None
        if cad_root is None or not cad_root.is_dir():
            raise DataError(f"{cad_root or dataset.name}: NTDM training needs the CAD folder {{root}}/CAD")
        fingerprint = {k: v for k, v in self.config().items() if k not in ("device", "export_dir")}
        fingerprint["categories"] = list(categories)
        state = resume.load() if resume is not None else None
        if state is not None and state.get("settings") != fingerprint:
            raise ValueError(f"{resume.path}: written with other settings; delete it or train with the same --model-args")
        state = state or {"settings": fingerprint}
        self._fit_meshes(cad_root, categories, state, resume, seed, progress)

        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        bins = 1 if self.single_alpha else self.n_bins
        self.backbone = FeatureNet(self.backbone_depth, self.feature_dim).to(device)
        if "epoch" not in state and (start_weights := resnet_state_dict(self.backbone_weights, self.backbone_depth)):
            load_resnet_weights(self.backbone.net, start_weights, str(self.backbone_weights))
        self.models = {c: self._category_model(self._mesh(state["meshes"][c]),
                                               NeuralTexture(bins, self.feature_dim, self.texture_size, gen))
                       for c in categories}
        self.bank = BackgroundBank(self.bank_size, self.feature_dim, gen)
        optimizer = torch.optim.Adam(self.backbone.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.lr_gamma)
        start = 0
        if "epoch" in state:
            start = state["epoch"]
            self.backbone.load_state_dict(state["backbone"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            for c, maps in state["textures"].items():
                self.models[c].texture.maps.copy_(maps)
            self.bank.load_state_dict(state["bank"])
            gen.set_state(state["generator"])
        ids = [i for c, group in ids_by_category(dataset, categories).items() for i in group]
        if not ids:
            raise DataError(f"{dataset.name}: no training samples of {', '.join(categories)}")
        settings = settings_from(TrainSettings, self)
        per_epoch = math.ceil(len(ids) / self.batch_size)
        with tqdm(total=(self.epochs - start) * per_epoch, desc="ntdm", unit="batch", disable=not progress) as bar:
            for epoch in range(start, self.epochs):
                self.backbone.train()
                order = torch.randperm(len(ids), generator=gen).tolist()
                total = 0.0
                for b in range(0, len(ids), self.batch_size):
                    samples = [dataset.load(ids[i]) for i in order[b:b + self.batch_size]]
                    images = image_batch(samples, self.input_spec, device)[0]
                    total += train_batch(self.backbone, images, samples, self.models, self.bank, optimizer,
                                         settings, gen)
                    bar.update(1)
                scheduler.step()
                bar.set_postfix(epoch=epoch + 1, loss=f"{total / per_epoch:.3f}")
                if resume is not None and epoch + 1 < self.epochs:
                    state.update(epoch=epoch + 1, backbone=self.backbone.state_dict(), optimizer=optimizer.state_dict(),
                                 scheduler=scheduler.state_dict(), bank=self.bank.state_dict(),
                                 textures={c: m.texture.maps.clone() for c, m in self.models.items()},
                                 generator=gen.get_state())
                    resume.save(state)
        self.backbone.cpu().eval()
        self.cad_names = {c: state["meshes"][c]["cads"] for c in categories}
        self.fit_errors = {c: state["meshes"][c]["fit_error"] for c in categories}

    # ------------------------------------------------------------------ inference
    def predict(self, batch: Sequence[Sample]) -> list[Prediction]:
        if self.backbone is None or not self.models:
            raise RuntimeError("ntdm: no trained model; train one or pass --checkpoint")
        for model in self.models.values():
            model.to(self.device)  # a checkpoint loads on CPU
        groups: dict[tuple, list[Sample]] = defaultdict(list)
        for s in batch:
            groups[(*s.load_image().shape[:2], crop_focal_px(s, self.focal_px))].append(s)
        out: dict[str, Prediction] = {}
        for (h, w, focal), samples in groups.items():
            out.update(self._predict_group(samples, (h, w), focal))
        return [out[s.id] for s in batch]

    @torch.no_grad()
    def _features(self, samples: Sequence[Sample]) -> torch.Tensor:
        with stage("features"):
            self.backbone.to(self.device).eval()
            return self.backbone(image_batch(samples, self.input_spec, self.device)[0])

    def _predict_group(self, samples: Sequence[Sample], size: tuple[int, int], focal: float) -> dict[str, Prediction]:
        """Predictions for samples of one crop size ``(H, W)`` and focal length (crop pixels): they share the
        rendered starts and need no padding.

        The fit runs on the feature map ``(B, d, h, w)``, one cell per ``stride`` (8) crop pixels, so the
        principal point (the crop centre, (x, y)) and the focal length are divided by the stride for it and
        multiplied back for the masks and the exported camera, which are at crop resolution.
        """
        settings = settings_from(InferenceSettings, self)
        features = self._features(samples)
        B, _, fh, fw = features.shape
        stride = self.backbone.stride
        valid = torch.ones(B, fh, fw, dtype=torch.bool, device=features.device)
        principal = torch.tensor([[size[1] / 2 / stride, size[0] / 2 / stride]] * B, device=features.device)
        focal_t = torch.full((B,), focal / stride, device=features.device)
        clut = clutter_score(features, self.bank.features.to(features)) if self.use_background else None
        names = list(self.models)
        rows_of = {c: list(range(B)) for c in names}
        starts = {}
        if self.class_topk and self.class_topk < len(self.models):
            with stage("init_search"):
                starts = {c: search_starts(m, features, clut, valid, principal, focal_t, settings)
                          for c, m in self.models.items()}
            start_losses = torch.stack([starts[c][2] for c in self.models], 1)
            keep = start_losses.topk(self.class_topk, dim=1, largest=False).indices.tolist()
            rows_of = {c: [b for b in range(B) if j in keep[b]] for j, c in enumerate(names)}
        fits, losses = {}, torch.full((B, len(self.models)), math.inf)
        fitted = [c for c in names if rows_of[c]]
        rows = {c: torch.tensor(rows_of[c], dtype=torch.long) for c in fitted}
        results = fit_categories([self.models[c] for c in fitted], features, clut, valid, principal, focal_t,
                                 settings, [rows[c] for c in fitted],
                                 [tuple(x[rows[c]] for x in starts[c]) if c in starts else None for c in fitted])
        for c, fit in zip(fitted, results):
            fits[c] = (rows[c], fit)
            losses[rows[c], names.index(c)] = fit.loss.cpu()
        predicted = [names[int(i)] for i in losses.argmin(1)]
        out = {}
        with stage("scoring"):
            for c in set(predicted):
                rows, fit = fits[c]
                mine = [i for i, b in enumerate(rows.tolist()) if predicted[b] == c]
                sel = torch.tensor(mine, dtype=torch.long)
                part = dataclasses.replace(fit, **{f.name: getattr(fit, f.name)[sel] for f in dataclasses.fields(fit)})
                batch_rows = rows[sel]
                amodal, visible, vertices = masks(self.models[c], part, features[batch_rows],
                                                  None if clut is None else clut[batch_rows], principal[batch_rows],
                                                  focal_t[batch_rows], stride, [size] * len(sel), self.single_alpha)
                for k, b in enumerate(batch_rows.tolist()):
                    s = samples[b]
                    scores = {n: float(1 - losses[b, j]) for j, n in enumerate(names) if math.isfinite(losses[b, j])}
                    out[s.id] = Prediction(
                        id=s.id, category=c, class_scores=scores,
                        azimuth=float(part.azimuth[k]), elevation=float(part.elevation[k]),
                        theta=float(part.theta[k]), distance=float(part.distance[k]),
                        amodal_mask=amodal[k].cpu().numpy(), inmodal_mask=visible[k].cpu().numpy(),
                        extra={"latent": [round(float(v), 4) for v in part.latent[k]],
                               "scale": [round(float(v), 4) for v in part.scale[k]]},
                    )
                    if self.export_dir:
                        camera = part.camera(principal[batch_rows] * stride, focal_t[batch_rows] * stride)
                        camera = Camera(*(getattr(camera, f.name)[k:k + 1] for f in dataclasses.fields(camera)))
                        export.export_prediction(Path(self.export_dir), s, vertices[k], self.models[c].mesh.faces,
                                                 camera, visible[k].cpu().numpy())
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        if self.backbone is None:
            raise RuntimeError("ntdm: nothing to save; train first")
        return {
            "format": FORMAT,
            "architecture": {k: getattr(self, k) for k in ARCHITECTURE},
            "backbone": self.backbone.state_dict(),
            "categories": {c: {"n_shapes": m.mesh.n_shapes, "mesh": m.mesh.state_dict(), "texture": m.texture.maps,
                               "cads": self.cad_names.get(c, []), "fit_error": self.fit_errors.get(c, [])}
                           for c, m in self.models.items()},
            "bank": self.bank.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != FORMAT:
            raise DataError(f"ntdm: checkpoint format {state.get('format')!r}, expected {FORMAT!r}")
        for key, value in state["architecture"].items():  # the checkpoint decides the architecture
            setattr(self, key, value)
        self.backbone = FeatureNet(self.backbone_depth, self.feature_dim)
        self.backbone.load_state_dict(state["backbone"])
        self.backbone.eval()
        self.models, self.cad_names, self.fit_errors = {}, {}, {}
        for c, saved in state["categories"].items():
            mesh = self._mesh({"n_shapes": saved["n_shapes"], "state": saved["mesh"]})
            maps = saved["texture"]
            texture = NeuralTexture(maps.shape[0], maps.shape[1], maps.shape[2])
            texture.maps.copy_(maps)
            self.models[c] = self._category_model(mesh, texture)
            self.cad_names[c], self.fit_errors[c] = list(saved["cads"]), list(saved["fit_error"])
        self.n_bins = next(iter(self.models.values())).texture.n_bins
        self.bank = BackgroundBank(1, self.feature_dim)
        self.bank.load_state_dict(state["bank"])

    def num_parameters(self) -> int:
        if self.backbone is None:
            return 0
        return sum(p.numel() for p in self.backbone.parameters()) + sum(
            p.numel() for m in self.models.values() for p in m.mesh.parameters())

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        # a model built without the deformable fit (bench's untrained timing checkpoints) has no errors: omitted,
        # not NaN (which is not JSON)
        errors = {c: float(np.mean(e)) for c, e in self.fit_errors.items() if len(e)}
        if errors:
            out["deformable_fit_error"] = errors
        return out
