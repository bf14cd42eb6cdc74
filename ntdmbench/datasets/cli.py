"""The dataset subcommands of ``ntdmbench``: ``data prepare``, ``data synth`` and ``validate``.

    ntdmbench data prepare pascal3d --raw-root PASCAL3D+_release1.1 --out PASCAL3D_NeMo
                                    [--split val|train] [--levels 0 1 2 3] [--occluded-root OccludedPASCAL3D]
                                    [--sizes refactor|original] [--categories car bus ...]
    ntdmbench data prepare oodcv --raw-root ood_cv --out OOD_CV_NeMo [--sizes ...] [--categories ...]
    ntdmbench data synth --preset smoke|quick|full --out DIR [--seed S]
    ntdmbench validate DATASET [--root DIR] [--manifest FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from ntdmbench.datasets.crop import CROP_SIZES

    data = subparsers.add_parser("data", help="prepare datasets")
    actions = data.add_subparsers(dest="data_command", required=True)
    prep = actions.add_parser("prepare", help="raw release -> NeMo layout (crop rule), writing manifest.json")
    prep.add_argument("source", choices=["pascal3d", "oodcv"])
    prep.add_argument("--raw-root", type=Path, required=True,
                      help="PASCAL3D+_release1.1 (pascal3d) or the OOD-CV pose folder (oodcv)")
    prep.add_argument("--out", type=Path, required=True, help="NeMo-layout root; {split}/ is created under it")
    prep.add_argument("--split", choices=["train", "val"], default="val", help="pascal3d only")
    prep.add_argument("--levels", type=int, nargs="+", choices=[0, 1, 2, 3], default=[0],
                      help="occlusion levels (pascal3d val): 0 = clean, k = FGLk_BGLk")
    prep.add_argument("--occluded-root", type=Path, help="OccludedPASCAL3D folder, for levels 1-3")
    prep.add_argument("--sizes", choices=sorted(CROP_SIZES), default="refactor",
                      help="crop sizes: wufeim/NeMo (refactor) or Angtian/NeMo (original)")
    prep.add_argument("--categories", nargs="+", help="default: all of the dataset's categories")
    prep.set_defaults(func=prepare_command)

    synth = actions.add_parser("synth", help="generate the synthetic PASCAL3D+ / Occluded / OOD-CV benchmark")
    synth.add_argument("--preset", choices=["smoke", "quick", "full"], default="quick")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_synth)

    check = subparsers.add_parser("validate", help="check a dataset's layout, keys and counts")
    check.add_argument("dataset", help="catalog name, e.g. pascal3d/val or occluded-pascal3d/val/L2")
    check.add_argument("--root", type=Path, help="dataset root (default: the dataset's environment variable)")
    check.add_argument("--manifest", type=Path, help="expected counts (default: ROOT/manifest.json if present)")
    check.set_defaults(func=validate_command)


def _synth(args: argparse.Namespace) -> int:
    from ntdmbench.datasets.synthetic.generate import synth_command

    return synth_command(args)


def prepare_command(args: argparse.Namespace) -> int:
    from ntdmbench.datasets.prepare import MANIFEST, prepare_oodcv, prepare_pascal3d
    from ntdmbench.datasets.records import CATEGORIES

    if args.source == "pascal3d":
        result = prepare_pascal3d(args.raw_root, args.out, split=args.split, levels=args.levels,
                                  occluded_root=args.occluded_root, sizes=args.sizes,
                                  categories=args.categories or CATEGORIES)
    else:
        result = prepare_oodcv(args.raw_root, args.out, sizes=args.sizes, categories=args.categories)
    print("\n".join(result.lines()))
    print(f"wrote {sum(result.counts.values())} samples under {args.out}; counts in {args.out / MANIFEST}")
    return 0


def validate_command(args: argparse.Namespace) -> int:
    from ntdmbench.datasets.validate import validate

    report = validate(args.dataset, args.root, args.manifest)
    print("\n".join(report.lines()))
    return 1 if report.problems else 0
