"""Where a whole-head denoising spends its time: ``python -m benchmarks.profile_head``.

Options ``--backend openvino|torch`` and ``--threads N``. Denoises the speed benchmark's head
(``benchmarks/speed.py``: the MNI T1 at 190 x 256 x 190, 5% Gaussian noise, sigma auto, default model) once
under cProfile, timing the network's forward pass on its own, and prints the total, the network's share and
the 30 most expensive calls. The model is loaded (and compiled) before the clock starts. Run it with nothing
else on the machine.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable
from typing import Any


def _timed(function: Callable[..., Any], total: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - start
            total[1] += 1

    return wrapper


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="openvino", choices=["openvino", "torch"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from benchmarks.speed import HEAD_SHAPE, _noisy_head
    from medidiff.inference.openvino_backend import OpenVINOModel
    from medidiff.inference.pipeline import get_model, resolve_device, restore
    from medidiff.nets.model import DiffusionModel

    _, noisy, _ = _noisy_head(HEAD_SHAPE)
    get_model("default", resolve_device("cpu"), args.backend)
    network = [0.0, 0]
    if args.backend == "openvino":
        OpenVINOModel.network_output = _timed(OpenVINOModel.network_output, network)  # type: ignore[method-assign]
    else:
        DiffusionModel.forward = _timed(DiffusionModel.forward, network)  # type: ignore[method-assign]
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    result = restore(noisy, device="cpu", backend=args.backend, progress=False, full_result=True)
    profile.disable()
    total = time.perf_counter() - start
    print(
        f"{result.info['backend']}, {args.threads} threads: {total:.1f} s in all, network {network[0]:.1f} s "
        f"in {network[1]} calls ({result.info['network_evaluations']} evaluations)"
    )
    pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
