"""Speed and memory of medidiff on this machine: issue 5's speed and memory targets.

Measures, in one run:

1. Seconds per network evaluation (one forward pass: a batch of 2 x 48^3 windows, as restoration runs it,
   and 1 x 96^3) for the architecture of ``configs/models/small.yaml`` (untrained weights: speed does not
   depend on them), for each backend (torch, OpenVINO) and precision (fp32; bf16 only where this CPU has
   native bf16 kernels: elsewhere it is not used by medidiff, and timing it would take minutes per pass).
2. Training throughput (voxels/s) of that architecture: AdamW steps of the denoising loss on 2 x 48^3
   patches (random data; the data pipeline is not timed), in the precision the trainer picks (auto).
3. Denoising a whole 1 mm head: the nilearn MNI152 2009 T1 (197 x 233 x 189) cropped/padded to
   190 x 256 x 190, with Gaussian noise at 5% of its 99.5th percentile, restored by ``medidiff restore
   --task denoise`` (sigma auto) with each backend, and by BM4D given the true sigma, each in a fresh process
   of the same run: seconds, their ratios, peak RSS. That template is in the default model's training set,
   so the PSNRs printed alongside are not a quality result (configs/bench/targets.yaml is).
3b. The tasks of ~48 network evaluations (inpainting: three 16^3 holes; bias-field restoration) on a
   128^3 crop of that head, with each backend in fresh processes.
4. Peak RSS for a 256^3 volume: each task in a fresh process (its own high-water mark, ``VmHWM``):
   denoise with its defaults; inpaint and bias restoration with 2 steps (memory does not grow with the
   number of steps).

Writes the ``speed`` section of docs/benchmarks.md::

    .venv/bin/python benchmarks/speed.py [--model default|PATH] [--threads 2] [--skip-bm4d] [--skip-rss]
                                         [--small]

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
TARGET_HEAD_SECONDS = 60.0  # AVX2-only CPUs (issue 25)
TARGET_HEAD_SECONDS_AVX512 = 20.0
TASK_SHAPE = (128, 128, 128)
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


def network_speed(shapes: list[tuple[int, ...]], repeats: int) -> list[dict[str, Any]]:
    """Seconds of one forward pass per input shape (B, I, J, K), backend and precision."""
    import torch

    from medidiff.inference.backends import openvino_available
    from medidiff.nets.model import DiffusionModel, bf16_is_fast

    bf16 = bf16_is_fast("cpu")
    rows = []
    for low in (False, True) if bf16 else (False,):
        # In the memory order restoration uses on a CPU (load_model: channels-last weights and inputs).
        model = DiffusionModel.from_config({**_architecture(), "bf16": low}).eval().use_channels_last()
        runners: list[tuple[str, Any]] = [("torch", model)]
        if openvino_available():
            from medidiff.inference.openvino_backend import OpenVINOModel

            runners.append(("openvino", OpenVINOModel(model, precision="bf16" if low else "f32")))
        for backend, runner in runners:
            forward = runner if backend == "torch" else runner.network_output
            for shape in shapes:
                x = torch.randn(shape[0], 1, *shape[1:])
                t = torch.full((shape[0],), 0.5)
                with torch.no_grad():
                    seconds = _median_seconds(lambda f=forward, x=x, t=t: f(x, t), repeats)
                rows.append(
                    {
                        "backend": backend,
                        "precision": "bf16" if low else "fp32",
                        "shape": list(shape),
                        "seconds": seconds,
                    }
                )
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


def _task_kwargs(task: str, shape: tuple[int, int, int], steps: int | None) -> dict[str, Any]:
    """restore() keywords of a timed task on a volume of ``shape``: three 16^3 holes, or a bias field."""
    import numpy as np

    if task == "inpaint":
        mask = np.zeros(shape, dtype=np.uint8)
        for fraction in (0.35, 0.5, 0.65):
            centre = [int(n * fraction) for n in shape]
            mask[tuple(slice(c - 8, c + 8) for c in centre)] = 1
        return {"task": "inpaint", "mask": mask, **({"steps": steps} if steps else {})}
    if task == "bias":
        return {"task": "restore", "degradation": "bias", **({"steps": steps} if steps else {})}
    return {"task": "denoise"}


def child(kind: str, model: str, threads: int, shape: tuple[int, int, int]) -> dict[str, Any]:
    """One measurement in this (fresh) process: ``head-<backend>``, ``head-bm4d``, ``task-<task>-<backend>``
    or ``rss-<task>``."""
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
            backend = kind.removeprefix("head-")
            get_model(model, resolve_device("cpu"), backend)  # loading and compiling are not timed
            start = time.perf_counter()
            restored = restore(
                noisy,
                task="denoise",
                model=model,
                device="cpu",
                backend=backend,
                progress=False,
                full_result=True,
            )
            result["seconds"] = time.perf_counter() - start
            result["backend"] = restored.info.get("backend")
            result["network_evaluations"] = restored.info.get("network_evaluations")
            out = restored.volume.data
        result["psnr_noisy"] = psnr(clean.data, noisy.data)
        result["psnr"] = psnr(clean.data, np.asarray(out, dtype=np.float64))
    elif kind.startswith("task-"):
        _, task, backend = kind.split("-")
        clean, noisy, _ = _noisy_head(shape)
        get_model(model, resolve_device("cpu"), backend)
        kwargs = _task_kwargs(task, shape, None)
        start = time.perf_counter()
        restored = restore(
            noisy, model=model, device="cpu", backend=backend, progress=False, full_result=True, **kwargs
        )
        result["seconds"] = time.perf_counter() - start
        result["backend"] = restored.info.get("backend")
        result["network_evaluations"] = restored.info.get("network_evaluations")
    else:
        task = kind.removeprefix("rss-")
        clean, noisy, _ = _noisy_head(shape)
        get_model(model, resolve_device("cpu"), "auto")
        kwargs = _task_kwargs(task, shape, steps=2)  # memory does not grow with the number of steps
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


def _head_target(features: tuple[str, ...]) -> float:
    """Issue 25's whole-head target: 20 s on a 2-core AVX-512 CPU, 60 s on an AVX2-only one."""
    return TARGET_HEAD_SECONDS_AVX512 if "avx512f" in features else TARGET_HEAD_SECONDS


def render(results: dict[str, Any], model: str, small: bool) -> str:
    """The docs section as Markdown."""
    from medidiff.benchmark.report import machine_line

    bf16 = results.get("bf16_fast", True)
    features = tuple(results.get("cpu_features", ()))
    lines = [
        "## Speed and memory",
        "",
        f"Measured by `benchmarks/speed.py` ({results['date']}). {machine_line(model)} "
        f"{results['threads']} threads. CPU features of every row: {', '.join(features) or 'unknown'}."
        + (" **Smoke run with reduced sizes (`--small`): not comparable.**" if small else ""),
        "",
        "Network forward pass (`configs/models/small.yaml` architecture), per backend and precision:"
        + (
            ""
            if bf16
            else " this CPU has no native bf16 kernels (`medidiff.nets.model.bf16_is_fast`), so medidiff "
            "runs in fp32 here and bf16 was not timed (scalar fallback, 25-35x slower than fp32)."
        ),
        "",
    ]
    shapes = sorted({tuple(r["shape"]) for r in results["network"]}, key=lambda sh: sh[1:])
    names = [f"{sh[0]} x {sh[1]}^3 (s)" if len(set(sh[1:])) == 1 else f"{sh} (s)" for sh in shapes]
    lines += ["| backend | precision | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(shapes)]
    table = {(r["backend"], r["precision"], tuple(r["shape"])): r["seconds"] for r in results["network"]}
    for backend, precision in dict.fromkeys((r["backend"], r["precision"]) for r in results["network"]):
        cells = [f"{table[(backend, precision, sh)]:.3f}" for sh in shapes]
        lines.append(f"| {backend} | {precision} | " + " | ".join(cells) + " |")
    train = results["training"]
    lines += [
        "",
        f"Training (torch; the trainer stays on torch): {train['voxels_per_second']:.3g} voxels/s "
        f"({train['seconds_per_step']:.2f} s per step of {train['batch']} x {train['patch']}^3 patches, "
        f"{'bf16 autocast' if bf16 else 'fp32'}, AdamW).",
        "",
        "Whole head (MNI152 T1 1 mm padded to {}; Gaussian noise 5%), each in a fresh process:".format(
            " x ".join(map(str, results["shape"]))
        ),
        "",
        "| method | backend | seconds | network evals | peak RSS (GiB) | PSNR noisy -> restored (dB) |",
        "|---|---|---:|---:|---:|---|",
    ]
    head = results["head"]
    for name, r in head.items():
        if "error" in r:
            lines.append(f"| {name} | | failed: {r['error']} | | | |")
            continue
        method = "BM4D" if name == "head-bm4d" else "medidiff"
        evals = r.get("network_evaluations", 0)
        lines.append(
            f"| {method} | {r.get('backend', '')} | {r['seconds']:.1f} | {evals} | {r['peak_rss_gib']:.2f} | "
            f"{r['psnr_noisy']:.2f} -> {r['psnr']:.2f} |"
        )
    lines += [
        "",
        "(The template is in the default model's training set: these PSNRs are not a quality result.)",
    ]
    tasks = results.get("tasks", {})
    if tasks:
        task_size = " x ".join(map(str, results["task_shape"]))
        lines += ["", f"Tasks of ~48 network evaluations on a {task_size} crop of that head:", ""]
        lines += ["| task | backend | seconds | network evals |", "|---|---|---:|---:|"]
        for name, r in tasks.items():
            if "error" in r:
                lines.append(f"| {name} | | failed: {r['error']} | |")
            else:
                lines.append(
                    f"| {name.split('-')[1]} | {r['backend']} | {r['seconds']:.1f} | "
                    f"{r['network_evaluations']} |"
                )
    rss_size = " x ".join(map(str, results["rss_shape"]))
    if not results["rss"]:
        lines += ["", f"Peak RSS for a {rss_size} volume: not measured in this run (`--skip-rss`)."]
    else:
        lines += ["", f"Peak RSS for a {rss_size} volume (a fresh process per task, default backend):", ""]
        lines += ["| task | steps | seconds | peak RSS (GiB) |", "|---|---:|---:|---:|"]
    for r in results["rss"]:
        if "error" in r:
            lines.append(f"| {r['kind'][4:]} | | failed: {r['error']} | |")
        else:
            lines.append(f"| {r['kind'][4:]} | {r['steps']} | {r['seconds']:.1f} | {r['peak_rss_gib']:.2f} |")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {_yes(ok)} |" for name, value, ok in _checks(results, features)]
    return "\n".join(lines) + "\n"


def _checks(results: dict[str, Any], features: tuple[str, ...]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) rows for the speed and memory targets."""
    head = results["head"]
    fast, slow, bm4d = head.get("head-openvino", {}), head.get("head-torch", {}), head.get("head-bm4d", {})
    ours = fast if "seconds" in fast else slow
    checks = []
    if "seconds" in ours:
        limit = _head_target(features)
        checks.append(
            (f"whole head in <= {limit:.0f} s", f"{ours['seconds']:.1f} s", ours["seconds"] <= limit)
        )
        if "seconds" in bm4d:
            ratio = ours["seconds"] / bm4d["seconds"]
            checks.append(("<= 1/4 of BM4D's time", f"{ratio:.3f} x BM4D", ratio <= TARGET_BM4D_RATIO))
    if "seconds" in fast and "seconds" in slow:
        speedup = slow["seconds"] / fast["seconds"]
        checks.append(("whole head >= 2x faster than torch", f"{speedup:.2f}x", speedup >= 2.0))
    tasks = results.get("tasks", {})
    for task in ("inpaint", "bias"):
        a, b = tasks.get(f"task-{task}-torch", {}), tasks.get(f"task-{task}-openvino", {})
        if "seconds" in a and "seconds" in b:
            speedup = a["seconds"] / b["seconds"]
            checks.append(
                (f"{task} (~48 evaluations) >= 2x faster than torch", f"{speedup:.2f}x", speedup >= 2)
            )
    rss = [r for r in results["rss"] if "peak_rss_gib" in r]
    if rss:
        worst = max(r["peak_rss_gib"] for r in rss)
        target = f"peak RSS <= {TARGET_RSS_GIB:.0f} GiB at {' x '.join(map(str, results['rss_shape']))}"
        checks.append((target, f"{worst:.2f} GiB", worst <= TARGET_RSS_GIB))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="medidiff model for the head and 256^3 runs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--skip-bm4d", action="store_true", help="do not time BM4D on the whole head")
    parser.add_argument("--skip-rss", action="store_true", help="do not measure peak RSS at 256^3")
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
    from medidiff.inference.backends import cpu_features, openvino_available
    from medidiff.nets.model import bf16_is_fast

    results["bf16_fast"] = bf16_is_fast("cpu")
    results["cpu_features"] = list(cpu_features())
    backends = ("torch", "openvino") if openvino_available() else ("torch",)
    print("network forward passes ...", flush=True)
    shapes = [(2, 32, 32, 32), (1, 48, 48, 48)] if args.small else [(2, 48, 48, 48), (1, 96, 96, 96)]
    results["network"] = network_speed(shapes, repeats=2 if args.small else 3)
    print("training steps ...", flush=True)
    results["training"] = training_speed(32 if args.small else 48, steps=2 if args.small else 4)
    results["head"] = {}
    for kind in (*(f"head-{b}" for b in backends), *(() if args.skip_bm4d else ("head-bm4d",))):
        print(f"{kind} ...", flush=True)
        results["head"][kind] = _run_child(kind, args.model, args.threads, head_shape)
    task_shape = (64, 64, 64) if args.small else TASK_SHAPE
    results["task_shape"] = task_shape
    results["tasks"] = {}
    for task in ("inpaint", "bias"):
        for backend in backends:
            print(f"{task} with {backend} ...", flush=True)
            kind = f"task-{task}-{backend}"
            results["tasks"][kind] = _run_child(kind, args.model, args.threads, task_shape)
    results["rss"] = []
    for task in () if args.skip_rss else ("denoise", "inpaint", "bias"):
        print(f"peak RSS {task} ...", flush=True)
        results["rss"].append(_run_child(f"rss-{task}", args.model, args.threads, rss_shape))
    text = render(results, args.model, args.small)
    print(json.dumps(results, default=str))
    print(text)
    replace_section(args.doc, "speed", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
