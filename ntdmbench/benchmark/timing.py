"""``ntdmbench bench --model M``: an isolated timing report, never mixed with in-loop run times.

Modelled on timm's ``benchmark.py``: the model is built (and its checkpoint loaded) once, then

1. warm-up calls at batch 1 (lazy initialisation, cuDNN autotuning, allocator growth);
2. latency: ``--iters`` calls at batch 1, each timed with CUDA events on a GPU (``perf_counter``
   around a synchronised call on CPU); median, p90, mean per image; a per-stage breakdown from the
   stages the model marks (``features``, ``init_search``, ``optimisation``, ``scoring``; see
   ``ntdmbench.models.stages``) and peak memory (CUDA max allocated; CPU max RSS of the process);
3. throughput: batch sizes 1, 2, 4, ... up to ``--max-batch`` until one runs out of memory (caught, as
   timm's batch decay does) or one call exceeds ``--budget-s``; images per second at the largest batch
   that fits.

Inputs are real samples (``--dataset D --root R``) or synthetic images at a category's PASCAL3D+ crop
size (NeMo's, e.g. 256x672 for car) with the camera NeMo assumes; the report records which, the image
size, the device, versions and every scalar of the model's configuration (initial poses, steps,
feature size, ...). Output: ``OUT/MODEL_DEVICE[_TAG].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import re
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ntdmbench.datasets.records import Pose, Sample
from ntdmbench.errors import InputError, RunFailedError

STAGE_NAMES = ("features", "init_search", "optimisation", "scoring")


def synthetic_samples(category: str, n: int, size: tuple[int, int] | None = None, seed: int = 0) -> list[Sample]:
    """``n`` noise images at the category's NeMo crop size, principal point at the centre, distance 5."""
    from ntdmbench.datasets.crop import CROP_SIZES

    sizes = CROP_SIZES["refactor"]
    if category not in sizes:
        raise InputError(f"--category {category!r} (choose from {', '.join(sizes)})")
    h, w = size or sizes[category]
    rng = np.random.default_rng(seed)
    return [Sample(id=f"{category}/bench_{k:03d}", category=category,
                   image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                   pose=Pose(0.0, 0.0, 0.0, 5.0, (w / 2, h / 2)), tags={"dataset": "bench"})
            for k in range(n)]


def dataset_samples(name: str, root: str | None, n: int) -> list[Sample]:
    """The first ``n`` samples of a catalog dataset, images read into memory (no disk time in the timing)."""
    from ntdmbench.datasets.catalog import load_dataset

    dataset = load_dataset(name, root)
    out = []
    for sample_id in dataset.ids()[:n]:
        s = dataset.load(sample_id)
        out.append(dataclasses.replace(s, image=s.load_image()))
    if not out:
        raise InputError(f"--dataset {name}: no samples")
    return out


def make_batch(pool: Sequence[Sample], size: int, offset: int = 0) -> list[Sample]:
    """``size`` samples cycling through ``pool``, with distinct ids."""
    return [dataclasses.replace(pool[(offset + k) % len(pool)], id=f"{pool[(offset + k) % len(pool)].id}-{offset + k}")
            for k in range(size)]


class Clock:
    """Wall time of one call: CUDA events on a GPU, ``perf_counter`` around a synchronised call on CPU."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.method = "cuda events (synchronised)" if self.cuda else "time.perf_counter"

    def time(self, fn) -> float:
        if self.cuda:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0
        begin = time.perf_counter()
        fn()
        return time.perf_counter() - begin


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def _peak_cuda_mb(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _stats(seconds: Sequence[float], per: int) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0 / per
    return {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90)), "mean": float(ms.mean()),
            "min": float(ms.min()), "max": float(ms.max()), "n": int(ms.size)}


def scalar_settings(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every scalar (and short tuple) of a model config, flattened: the settings a timing depends on."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalar_settings(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = value
        elif isinstance(value, (list, tuple)) and len(value) <= 4 and all(isinstance(v, (int, float)) for v in value):
            out[name] = list(value)
    return out


def bench(model_name: str, *, samples: Sequence[Sample], model=None, checkpoint: str | None = None,
          device: str = "cpu", model_args: dict[str, Any] | None = None, warmup: int = 2, iters: int = 10,
          max_batch: int = 64, budget_s: float = 60.0, progress: bool = True) -> dict[str, Any]:
    """Time ``predict`` as the module docstring says; returns the report as a dict."""
    import torch

    from ntdmbench.benchmark import provenance
    from ntdmbench.benchmark.device import check_device
    from ntdmbench.models.registry import build_model
    from ntdmbench.models.stages import StageTimer

    check_device(device)
    if warmup < 0 or iters < 1 or max_batch < 1:
        raise InputError(f"bench: need warmup >= 0, iters >= 1, max_batch >= 1 (got {warmup}, {iters}, {max_batch})")

    def say(message: str) -> None:
        if progress:
            print(f"[bench {model_name}] {message}", file=sys.stderr, flush=True)

    model = model or build_model(model_name, model_args, device=device, checkpoint=checkpoint)
    clock = Clock(device)
    offset = 0

    def call(size: int) -> None:
        nonlocal offset
        preds = model.predict(make_batch(samples, size, offset))
        offset += size
        failed = [p.failure for p in preds if p.failure]
        if failed:
            raise RunFailedError(f"model {model_name} failed on a bench input: {failed[0]}")

    say(f"warm-up: {warmup} call(s) at batch 1")
    for _ in range(warmup):
        call(1)
    _free(device)
    _reset_peak(device)
    say(f"latency: {iters} call(s) at batch 1")
    with StageTimer() as stages:
        latency = [clock.time(lambda: call(1)) for _ in range(iters)]
    peak_batch1 = _peak_cuda_mb(device)
    marked = [n for n in STAGE_NAMES if n in stages.totals] + [n for n in stages.totals if n not in STAGE_NAMES]
    stage_ms = {n: 1000.0 * stages.totals[n] / iters for n in marked}
    if stage_ms:
        stage_ms["other"] = max(0.0, 1000.0 * sum(latency) / iters - sum(stage_ms.values()))

    throughput = [{"batch": 1, "images_per_s": 1.0 / float(np.median(latency)), "peak_cuda_mb": peak_batch1}]
    oom_at, stop, size = None, f"--max-batch {max_batch} reached", 2
    repeats = max(2, min(iters, 5))
    while size <= max_batch:
        last = throughput[-1]
        if size / last["images_per_s"] * (repeats + 1) > budget_s * repeats:
            stop = f"batch {size} would take over --budget-s {budget_s:g} s per call"
            break
        _free(device)
        _reset_peak(device)
        try:
            call(size)  # warm-up at this size (allocations)
            seconds = [clock.time(functools.partial(call, size)) for _ in range(repeats)]
        except Exception as exc:  # out of memory ends the search; anything else is raised
            if not _is_oom(exc):
                raise
            oom_at, stop = size, f"out of memory at batch {size}"
            _free(device)
            break
        throughput.append({"batch": size, "images_per_s": size / float(np.median(seconds)),
                           "peak_cuda_mb": _peak_cuda_mb(device)})
        say(f"batch {size}: {throughput[-1]['images_per_s']:.4g} images/s")
        size *= 2
    say(stop)
    best = throughput[-1]
    describe = model.describe()
    return {
        "model": model_name,
        "describe": describe,
        "settings": scalar_settings(describe.get("config", {})),
        "input": {"image_size": list(samples[0].load_image().shape[:2]), "distinct_images": len(samples),
                  "source": samples[0].tags.get("dataset", "?"), "category": samples[0].category},
        "method": {"timer": clock.method, "warmup": warmup, "iters": iters, "throughput_repeats": repeats,
                   "precision": "fp32", "timed": "model.predict on in-memory images (its preprocessing included)",
                   "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)},
        "latency_ms_per_image": _stats(latency, 1),
        "stages_ms_per_image": stage_ms,
        "throughput": throughput,
        "max_batch_fit": best["batch"],
        "throughput_images_per_s": best["images_per_s"],
        "oom_at": oom_at,
        "search_stop": stop,
        "peak_memory_mb": {"cuda_batch1": peak_batch1, "cuda_largest_batch": best["peak_cuda_mb"],
                           "cpu_max_rss": _rss_mb()},
        "device": provenance.device_info(device),
        "versions": provenance.package_versions(),
        "git": provenance.git_state(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def to_markdown(report: dict[str, Any]) -> str:
    dev = report["device"]
    lat = report["latency_ms_per_image"]
    where = dev.get("gpu") or dev.get("cpu") or dev["device"]
    dirty = " (uncommitted changes)" if report["git"].get("dirty") else ""
    packages = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
    lines = [f"# Timing: {report['model']} on {where}", "",
             f"Created {report['created']}; code {report['git'].get('commit') or 'unknown'}{dirty}; {packages}.", "",
             "## Latency at batch 1", "",
             "| median ms/image | p90 | mean | min | max | calls |", "|---:|---:|---:|---:|---:|---:|",
             "| " + " | ".join(f"{lat[k]:.1f}" for k in ("median", "p90", "mean", "min", "max")) + f" | {lat['n']} |",
             ""]
    if report["stages_ms_per_image"]:
        lines += ["## Per-stage breakdown (batch 1, mean ms per image)", "", "| stage | ms | share |", "|---|---:|---:|"]
        total = sum(report["stages_ms_per_image"].values()) or 1.0
        lines += [f"| {k} | {v:.1f} | {100 * v / total:.0f} % |" for k, v in report["stages_ms_per_image"].items()]
        lines.append("")
    else:
        lines += ["The model marks no stages (`ntdmbench.models.stages.stage`): no breakdown.", ""]
    lines += ["## Throughput", "", "| batch | images/s | peak CUDA MiB |", "|---:|---:|---:|"]
    for t in report["throughput"]:
        peak = f"{t['peak_cuda_mb']:.0f}" if t["peak_cuda_mb"] is not None else "–"
        lines.append(f"| {t['batch']} | {t['images_per_s']:.4g} | {peak} |")
    mem = report["peak_memory_mb"]
    largest = (f"Largest batch that fits: **{report['max_batch_fit']}** ({report['throughput_images_per_s']:.4g} "
               f"images/s); search stopped: {report['search_stop']}.")
    cuda = (f"- peak CUDA allocated at batch 1: {_mb(mem['cuda_batch1'])}; at the largest batch: "
            f"{_mb(mem['cuda_largest_batch'])}")
    lines += ["", largest, "", "## Memory", "", cuda, f"- peak RSS of the process: {mem['cpu_max_rss']:.0f} MiB", "",
              "## Device, input and method", ""]
    lines += [f"- {k}: {v}" for k, v in dev.items()]
    lines += [f"- input {k}: {v}" for k, v in report["input"].items()]
    lines += [f"- {k}: {v}" for k, v in report["method"].items()]
    lines += ["", "## Model settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["settings"].items()]
    return "\n".join(lines) + "\n"


def _mb(value: float | None) -> str:
    return f"{value:.0f} MiB" if value is not None else "– (not on CUDA)"


def report_stem(report: dict[str, Any], tag: str | None = None) -> str:
    where = report["device"].get("gpu") or "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", where.lower()).strip("-")
    return f"{report['model']}_{slug}" + (f"_{tag}" if tag else "")


def write(report: dict[str, Any], out: str | Path, tag: str | None = None) -> tuple[Path, Path]:
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = report_stem(report, tag)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    md_path.write_text(to_markdown(report))
    return json_path, md_path


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise InputError(f"--image-size {text!r}: expected HxW, e.g. 256x672")
    return int(match.group(1)), int(match.group(2))


def _cmd_bench(args: argparse.Namespace) -> int:
    from ntdmbench.benchmark.cli import parse_model_args

    if args.dataset:
        samples = dataset_samples(args.dataset, args.root, args.images)
    else:
        samples = synthetic_samples(args.category, args.images, _parse_size(args.image_size))
    report = bench(args.model, samples=samples, checkpoint=args.checkpoint, device=args.device,
                   model_args=parse_model_args(args.model_args), warmup=args.warmup, iters=args.iters,
                   max_batch=args.max_batch, budget_s=args.budget_s, progress=not args.quiet)
    from ntdmbench.benchmark.store import writing_to

    with writing_to(Path(args.out)):
        json_path, md_path = write(report, args.out, args.tag)
    lat = report["latency_ms_per_image"]
    print(f"latency: median {lat['median']:.1f} ms/image, p90 {lat['p90']:.1f}; throughput "
          f"{report['throughput_images_per_s']:.4g} images/s at batch {report['max_batch_fit']}")
    print(f"report: {md_path}\njson: {json_path}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="timing report: latency, per-stage breakdown, throughput, memory")
    p.add_argument("--model", required=True, help="a registered model (ntdmbench ls models)")
    p.add_argument("--checkpoint", help="model checkpoint file (default: the model's untrained or built-in state)")
    p.add_argument("--model-args", help="constructor arguments, k=v,k2=v2 (e.g. the paper's poses and steps)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dataset", help="time on these samples (catalog name); default: synthetic images")
    p.add_argument("--root", help="dataset root (else the dataset's environment variable)")
    p.add_argument("--category", default="car", help="synthetic input: category and its NeMo crop size")
    p.add_argument("--image-size", help="synthetic input size HxW (default: the category's crop size)")
    p.add_argument("--images", type=int, default=8, help="distinct input images")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    p.add_argument("--iters", type=int, default=10, help="timed calls at batch 1")
    p.add_argument("--max-batch", type=int, default=64, help="largest batch of the throughput search (doubling)")
    p.add_argument("--budget-s", type=float, default=60.0, help="stop the batch search past this many s per call")
    p.add_argument("--out", default="reports/timing", help="folder for MODEL_DEVICE.{json,md}")
    p.add_argument("--tag", help="appended to the file names, e.g. paper-settings (default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_bench)
