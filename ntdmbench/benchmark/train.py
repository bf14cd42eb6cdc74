"""``ntdmbench train``: fit a registered model on a dataset and write its checkpoint.

    ntdmbench train --model nemo --dataset pascal3d/train --root data/synth/pascal3d \\
                    --category all|car [--out CKPT] [--device cpu] [--seed 0] [--model-args k=v,...]

The model's ``fit`` gets the training contract of ``models/training.py`` (a ``Resume`` beside the
checkpoint, so a killed ``train`` continues when rerun with the same arguments); the command then
writes the final checkpoint with ``save`` and prints its SHA-256. The loss of every epoch the model
reports goes to ``CKPT.epochs.csv`` beside it (``epoch_log.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ntdmbench.benchmark.epoch_log import record_epochs
from ntdmbench.datasets.base import Dataset
from ntdmbench.datasets.records import CATEGORIES
from ntdmbench.errors import InputError
from ntdmbench.models.training import Resume


def resolve_categories(dataset: Dataset, category: str) -> list[str]:
    present = sorted({i.split("/", 1)[0] for i in dataset.ids()}, key=CATEGORIES.index)
    if category == "all":
        return present
    wanted = [c.strip() for c in category.split(",")]
    missing = [c for c in wanted if c not in present]
    if missing:
        raise InputError(f"--category {', '.join(missing)}: not in the dataset (it has {', '.join(present)})")
    return wanted


def default_checkpoint(model: str, dataset: str, category: str) -> Path:
    return Path("checkpoints") / f"{model}-{dataset.replace('/', '_')}-{category.replace(',', '+')}.pth"


def train(model_name: str, dataset_name: str, root: str | None = None, category: str = "all",
          out: str | Path | None = None, device: str = "cpu", seed: int = 0,
          model_args: dict[str, Any] | None = None, progress: bool = True) -> tuple[Path, str]:
    """Train and save; returns the checkpoint path and its SHA-256."""
    from ntdmbench.benchmark.device import check_device
    from ntdmbench.benchmark.runner import seed_everything
    from ntdmbench.benchmark.store import writing_to
    from ntdmbench.datasets.catalog import load_dataset
    from ntdmbench.models.registry import build_model

    check_device(device)
    dataset = load_dataset(dataset_name, root)
    categories = resolve_categories(dataset, category)
    out = Path(out) if out else default_checkpoint(model_name, dataset_name, category)
    model = build_model(model_name, model_args, device=device)
    seed_everything(seed)
    with writing_to(out.parent):
        resume = Resume.beside(out)
        try:
            with record_epochs(out):
                model.fit(dataset, categories=categories, resume=resume, device=device, seed=seed, progress=progress)
        except NotImplementedError as exc:
            raise InputError(f"--model {model_name}: {exc}") from None
        sha = model.save(out)
        resume.clear()
    return out, sha


def _cmd_train(args: argparse.Namespace) -> int:
    from ntdmbench.benchmark.cli import parse_model_args

    path, sha = train(args.model, args.dataset, args.root, args.category, args.out, args.device, args.seed,
                      parse_model_args(args.model_args), progress=not args.no_progress)
    print(f"checkpoint: {path}\nsha256: {sha}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model and write its checkpoint (resumable)")
    p.add_argument("--model", required=True, help="a registered model (ntdmbench ls models)")
    p.add_argument("--dataset", required=True, help="e.g. pascal3d/train")
    p.add_argument("--root", help="dataset root (else the dataset's environment variable)")
    p.add_argument("--category", default="all", help="all, one category, or a comma-separated list")
    p.add_argument("--out", help="checkpoint file (default: checkpoints/MODEL-DATASET-CATEGORY.pth); "
                                 "CKPT.epochs.csv beside it gets the loss of every epoch")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="training seed (order, augmentation, initialisation)")
    p.add_argument("--model-args",
                   help="constructor arguments, k=v,k2=v2: model and training settings (default: the paper's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)
