"""Speed and memory of medidiff on this machine: issue 5's speed and memory targets.

Measures, in one run:

1. Seconds per network evaluation (one forward pass, batch 1) at 64^3 and 96^3, fp32 vs bf16, for the
   architecture of ``configs/models/small.yaml`` (untrained weights: speed does not depend on them). bf16
   only where this CPU has native bf16 kernels (``medidiff.nets.model.bf16_is_fast``); elsewhere it is
   not used by medidiff, and timing it would take minutes per pass.
2. Training throughput (voxels/s) of that architecture: AdamW steps of the denoising loss on 2 x 48^3
   patches (random data; the data pipeline is not timed), in the precision the trainer picks (auto).
3. Denoising a whole 1 mm head: the nilearn MNI152 2009 T1 (197 x 233 x 189) cropped/padded to
   190 x 256 x 190, with Gaussian noise at 5% of its 99.5th percentile, restored by ``medidiff restore
   --task denoise`` (sigma auto) and by BM4D given the true sigma, each in a fresh process of the same run:
   seconds, their ratio, peak RSS. That template is in the default model's training set, so the PSNRs
   printed alongside are not a quality result (configs/bench/targets.yaml is).
4. Peak RSS for a 256^3 volume: each task in a fresh process (its own high-water mark, ``VmHWM``):
   denoise with its defaults; inpaint and bias restoration with 2 steps (memory does not grow with the
   number of steps).

Writes the ``speed`` section of docs/benchmarks.md::

    .venv/bin/python benchmarks/speed.py [--model default|PATH] [--threads 2] [--skip-bm4d] [--small]

``--small`` shrinks every size (for a smoke run); its numbers are not comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SMALL_YAML = ROOT / "configs" / "models" / "small.yaml"
HEAD = "pkg:nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
HEAD_SHAPE = (190, 256, 190)
TARGET_HEAD_SECONDS = 60.0
TARGET_BM4D_RATIO = 0.25
TARGET_RSS_GIB = 4.0


def _architecture() -> dict[str, Any]:
    import yaml

    config: dict[str, Any] = yaml.safe_load(SMALL_YAML.read_text())
    return config


def _median_seconds(function: Any, repeats: int) -> float:
    function()  # warm-up: oneDNN picks and caches its kernels on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def network_speed(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    """Seconds of one forward pass (batch 1) per size and precision."""
    import torch

    from medidiff.nets.model import DiffusionModel, bf16_is_fast

    rows = []
    for bf16 in (False, True) if bf16_is_fast("cpu") else (False,):
        # In the memory order restoration uses on a CPU (load_model: channels-last weights and inputs).
        model = DiffusionModel.from_config({**_architecture(), "bf16": bf16}).eval().use_channels_last()
        for size in sizes:
            x = torch.randn(1, 1, size, size, size)
            t = torch.full((1,), 0.5)
            with torch.no_grad():
                seconds = _median_seconds(lambda m=model, x=x, t=t: m(x, t), repeats)
            rows.append({"size": size, "precision": "bf16" if bf16 else "fp32", "seconds": seconds})
    return rows


def training_speed(patch: int, steps: int) -> dict[str, Any]:
    """Voxels per second of training steps (loss, backward, AdamW) on batches of 2 patches, with the weights
    channels-last as the trainer keeps them on CPUs."""
    import torch

    from medidiff.nets.model import DiffusionModel
    from medidiff.training.trainer import diffusion_loss

    model = DiffusionModel.from_config(_architecture()).use_channels_last().train()  # as the trainer on CPUs
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 1, patch, patch, patch) * 2 - 1

    def step() -> None:
        t = torch.rand(2, dtype=torch.float64) * 0.99 + 0.01
        loss = diffusion_loss(model, model, x0, t, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = _median_seconds(step, steps)
    return {
        "patch": patch,
        "batch": 2,
        "seconds_per_step": seconds,
        "voxels_per_second": 2 * patch**3 / seconds,
    }


# --- children: one measurement per fresh process, so the RSS high-water mark is that measurement's own ----


def _peak_rss_gib() -> float:
    from medidiff.benchmark.rss import peak_rss_mib  # VmHWM: ru_maxrss inherits the parent's peak

    return peak_rss_mib() / 1024.0


def _head_volume(shape: tuple[int, int, int]) -> Any:
    """The MNI T1 cropped (centred) or zero-padded to ``shape``, float32, with a matching affine."""
    import numpy as np

    from medidiff.datapaths import resolve_data_paths
    from medidiff.io import read_volume
    from medidiff.io.volume import Volume

    volume = read_volume(resolve_data_paths(HEAD, ROOT, what="speed benchmark head")[0])
    data = np.asarray(volume.data, dtype=np.float32)
    out = np.zeros(shape, dtype=np.float32)
    src, dst, offset = [], [], []
    for n, m in zip(data.shape, shape, strict=True):
        if n >= m:
            start = (n - m) // 2
            src.append(slice(start, start + m))
            dst.append(slice(0, m))
            offset.append(start)
        else:
            start = (m - n) // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
            offset.append(-start)
    out[tuple(dst)] = data[tuple(src)]
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, :3] @ np.asarray(offset, dtype=np.float64) + volume.affine[:3, 3]
    return Volume(out, affine, {}, "MNI152 T1 1 mm, padded")


def _noisy_head(shape: tuple[int, int, int]) -> tuple[Any, Any, float]:
    from medidiff.degrade import degrade

    clean = _head_volume(shape)
    noisy = degrade(clean, "gaussian", seed=5, sigma="5%")
    return clean, noisy.volume, float(noisy.record["params"]["sigma"])


def child(kind: str, model: str, threads: int, shape: tuple[int, int, int]) -> dict[str, Any]:
    """One measurement in this (fresh) process: ``head-medidiff``, ``head-bm4d`` or ``rss-<task>``."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from medidiff.inference.pipeline import get_model, resolve_device, restore
    from medidiff.metrics import psnr

    result: dict[str, Any] = {"kind": kind}
    if kind.startswith("head-"):
        clean, noisy, sigma = _noisy_head(shape)
        if kind == "head-bm4d":
            from medidiff.benchmark.baselines import bm4d_denoise

            start = time.perf_counter()
            out = bm4d_denoise(noisy.data, sigma)
            result["seconds"] = time.perf_counter() - start
        else:
            get_model(model, resolve_device("cpu"))
            start = time.perf_counter()
            restored = restore(
                noisy, task="denoise", model=model, device="cpu", progress=False, full_result=True
            )
            result["seconds"] = time.perf_counter() - start
            result["network_evaluations"] = restored.info.get("network_evaluations")
            out = restored.volume.data
        result["psnr_noisy"] = psnr(clean.data, noisy.data)
        result["psnr"] = psnr(clean.data, np.asarray(out, dtype=np.float64))
    else:
        task = kind.removeprefix("rss-")
        clean, noisy, _ = _noisy_head(shape)
        get_model(model, resolve_device("cpu"))
        kwargs: dict[str, Any] = {"task": "denoise"}
        if task == "inpaint":
            mask = np.zeros(shape, dtype=np.uint8)
            centre = [n // 2 for n in shape]
            mask[tuple(slice(c - 8, c + 8) for c in centre)] = 1
            kwargs = {"task": "inpaint", "mask": mask, "steps": 2}
        elif task == "bias":
            kwargs = {"task": "restore", "degradation": "bias", "steps": 2}
        start = time.perf_counter()
        restored = restore(noisy, model=model, device="cpu", progress=False, full_result=True, **kwargs)
        result["seconds"] = time.perf_counter() - start
        result["steps"] = kwargs.get("steps", "default")
        result["network_evaluations"] = restored.info.get("network_evaluations")
    result["peak_rss_gib"] = _peak_rss_gib()
    return result


def _run_child(kind: str, model: str, threads: int, shape: tuple[int, int, int]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads crawl on a shared machine
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--model", model]
        command += ["--threads", str(threads), "--shape", *map(str, shape), "--result", str(out)]
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            return {"kind": kind, "error": lines[-1] if lines else f"exit code {proc.returncode}"}
        return dict(json.loads(out.read_text()))


# --- report -------------------------------------------------------------------------------------------------


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def render(results: dict[str, Any], model: str, small: bool) -> str:
    """The docs section as Markdown."""
    from medidiff.benchmark.report import machine_line

    bf16 = results.get("bf16_fast", True)
    precision = "bf16 autocast" if bf16 else "fp32"
    lines = [
        "## Speed and memory",
        "",
        f"Measured by `benchmarks/speed.py` ({results['date']}). {machine_line(model)} "
        f"{results['threads']} torch threads."
        + (" **Smoke run with reduced sizes (`--small`): not comparable.**" if small else ""),
        "",
        "Network forward pass (batch 1, `configs/models/small.yaml` architecture):"
        + (
            ""
            if bf16
            else " this CPU has no native bf16 kernels (`medidiff.nets.model.bf16_is_fast`), so medidiff "
            "runs in fp32 here and bf16 was not timed (scalar fallback, 25-35x slower than fp32)."
        ),
        "",
        "| input | fp32 (s) | bf16 (s) |",
        "|---|---:|---:|",
    ]
    net = {(r["size"], r["precision"]): r["seconds"] for r in results["network"]}
    for size in sorted({r["size"] for r in results["network"]}):
        low = f"{net[(size, 'bf16')]:.3f}" if (size, "bf16") in net else "not used"
        lines.append(f"| {size}^3 | {net[(size, 'fp32')]:.3f} | {low} |")
    train = results["training"]
    lines += [
        "",
        f"Training: {train['voxels_per_second']:.3g} voxels/s ({train['seconds_per_step']:.2f} s per step of "
        f"{train['batch']} x {train['patch']}^3 patches, {precision}, AdamW).",
        "",
        "Whole head (MNI152 T1 1 mm padded to {}; Gaussian noise 5%):".format(
            " x ".join(map(str, results["shape"]))
        ),
        "",
        "| method | seconds | network evals | peak RSS (GiB) | PSNR noisy -> restored (dB) |",
        "|---|---:|---:|---:|---|",
    ]
    head = results["head"]
    for name in ("head-medidiff", "head-bm4d"):
        r = head.get(name)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {name[5:]} | failed: {r['error']} | | | |")
            continue
        evals = r.get("network_evaluations", 0) if name == "head-medidiff" else 0
        lines.append(
            f"| {name[5:]} | {r['seconds']:.1f} | {evals} | {r['peak_rss_gib']:.2f} | "
            f"{r['psnr_noisy']:.2f} -> {r['psnr']:.2f} |"
        )
    lines += [
        "",
        "(The template is in the default model's training set: these PSNRs are not a quality result.)",
    ]
    rss_size = " x ".join(map(str, results["rss_shape"]))
    lines += ["", f"Peak RSS for a {rss_size} volume (a fresh process per task):", ""]
    lines += ["| task | steps | seconds | peak RSS (GiB) |", "|---|---:|---:|---:|"]
    for r in results["rss"]:
        if "error" in r:
            lines.append(f"| {r['kind'][4:]} | | failed: {r['error']} | |")
        else:
            lines.append(f"| {r['kind'][4:]} | {r['steps']} | {r['seconds']:.1f} | {r['peak_rss_gib']:.2f} |")
    ours, bm4d = head.get("head-medidiff", {}), head.get("head-bm4d", {})
    checks = []
    if "seconds" in ours:
        checks.append(
            (
                f"whole head in <= {TARGET_HEAD_SECONDS:.0f} s",
                f"{ours['seconds']:.1f} s",
                ours["seconds"] <= 60,
            )
        )
        if "seconds" in bm4d:
            ratio = ours["seconds"] / bm4d["seconds"]
            checks.append(("<= 1/4 of BM4D's time", f"{ratio:.3f} x BM4D", ratio <= TARGET_BM4D_RATIO))
    rss = [r for r in results["rss"] if "peak_rss_gib" in r]
    if rss:
        worst = max(r["peak_rss_gib"] for r in rss)
        target = f"peak RSS <= {TARGET_RSS_GIB:.0f} GiB at {rss_size}"
        checks.append((target, f"{worst:.2f} GiB", worst <= TARGET_RSS_GIB))
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {_yes(ok)} |" for name, value, ok in checks]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="medidiff model for the head and 256^3 runs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--skip-bm4d", action="store_true", help="do not time BM4D on the whole head")
    parser.add_argument("--small", action="store_true", help="reduced sizes for a smoke run")
    parser.add_argument("--doc", type=Path, default=DOC, help="Markdown file whose speed section is replaced")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    # Before torch loads: OpenMP's default active wait makes multi-threaded calls crawl whenever other
    # processes share the cores (measured 20-50x on this project's 2-core machines); passive waiting does not.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.child:
        from medidiff.memory import retain_freed_memory

        retain_freed_memory()  # as the `medidiff` command does (medidiff.memory); BM4D's child gets it too
        record = child(args.child, args.model, args.threads, tuple(args.shape))
        args.result.write_text(json.dumps(record))
        return 0

    import torch

    from benchmarks.docs_sections import replace_section

    torch.set_num_threads(args.threads)
    head_shape = (64, 80, 64) if args.small else HEAD_SHAPE
    rss_shape = (64, 64, 64) if args.small else (256, 256, 256)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "threads": args.threads,
        "shape": head_shape,
        "rss_shape": rss_shape,
    }
    from medidiff.nets.model import bf16_is_fast

    results["bf16_fast"] = bf16_is_fast("cpu")
    print("network forward passes ...", flush=True)
    results["network"] = network_speed([32, 48] if args.small else [64, 96], repeats=2 if args.small else 3)
    print("training steps ...", flush=True)
    results["training"] = training_speed(32 if args.small else 48, steps=2 if args.small else 4)
    results["head"] = {}
    for kind in ("head-medidiff", *(() if args.skip_bm4d else ("head-bm4d",))):
        print(f"{kind} ...", flush=True)
        results["head"][kind] = _run_child(kind, args.model, args.threads, head_shape)
    results["rss"] = []
    for task in ("denoise", "inpaint", "bias"):
        print(f"peak RSS {task} ...", flush=True)
        results["rss"].append(_run_child(f"rss-{task}", args.model, args.threads, rss_shape))
    text = render(results, args.model, args.small)
    print(text)
    replace_section(args.doc, "speed", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
