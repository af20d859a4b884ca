"""Which runtime evaluates the network: torch, or OpenVINO on CPUs (``--backend auto|torch|openvino``).

Torch-free, so the CLI checks ``--backend`` before the heavy imports. The OpenVINO runtime itself is
:mod:`medidiff.inference.openvino_backend`.

``auto`` picks OpenVINO on the CPU whenever it is installed (it is a dependency) and torch on GPUs.
Measured (docs/benchmarks.md, "Backends"): on a 2-core AVX-512 CPU the default network on a 2 x 48^3
batch took 1.39 s in OpenVINO f32 against 1.55 s in torch fp32 channels-last, and 0.55 s in OpenVINO bf16
against 1.47 s in torch bf16; ``benchmarks/speed.py`` measures both backends side by side on the machine
it runs on.
"""

from __future__ import annotations

import functools
import importlib.util

from medidiff.errors import ConfigError

BACKENDS = ("auto", "torch", "openvino")
# The CPU features that decide the network's speed and precision, as Linux names them in /proc/cpuinfo.
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


@functools.cache
def cpu_features() -> tuple[str, ...]:
    """Which of :data:`CPU_FEATURES` this CPU has (empty where /proc/cpuinfo cannot be read)."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return ()
    return tuple(f for f in CPU_FEATURES if f in flags)


@functools.cache
def openvino_available() -> bool:
    """Whether the ``openvino`` package can be imported (found without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def choose_backend(backend: str, device_type: str) -> str:
    """The runtime for ``backend`` on a device of type ``device_type`` ("cpu" or "cuda").

    Raises:
        ConfigError: an unknown backend, OpenVINO asked for on a GPU, or OpenVINO not installed.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return "torch"
    if backend == "openvino":
        if device_type != "cpu":
            raise ConfigError("--backend openvino runs the network on the CPU; use --device cpu (or auto)")
        if not openvino_available():
            raise ConfigError("--backend openvino needs the openvino package (pip install openvino)")
        return "openvino"
    return "openvino" if device_type == "cpu" and openvino_available() else "torch"
