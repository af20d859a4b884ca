"""The network compiled by OpenVINO for the CPU: the same Denoiser as the torch model, 2-3x faster in bf16.

:class:`OpenVINOModel` has what the pipeline uses of a :class:`~medidiff.nets.model.DiffusionModel`
(``predict``, ``sde``, ``patch_size``, ``config``); only the U-Net's forward pass runs in OpenVINO.

* **Export, once per model.** OpenVINO's PyTorch frontend traces the torch U-Net (float32) with a dynamic
  batch and window shape, and the IR is saved in the user cache (``$MEDIDIFF_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/medidiff`` or ``~/.cache/medidiff``) under a digest of the model's config and weights,
  so a new model never reuses an old model's IR. Tracing the default network takes ~25 s; later runs read
  the IR.
* **Compile, per window shape and precision.** The IR is reshaped to the window (batch left dynamic) and
  compiled for the CPU; OpenVINO's own ``CACHE_DIR`` keeps the compiled blob next to the IR.
* **Precision per CPU**: bf16 where the CPU has native bf16 kernels (OpenVINO's ``OPTIMIZATION_CAPABILITIES``
  lists ``BF16``: AVX-512 bf16 or AMX), else f32. No int8: NNCF's post-training quantization was measured
  on development volumes (docs/benchmarks.md, "int8") and cost up to 0.94 dB on denoising (0.81 dB with
  the full-resolution level left in f32), far over the 0.05 dB allowed; the network's input carries the
  noise that it must separate, below 8-bit resolution at small t.
* **Several processes at once** (a cohort run in parallel, the CLI tests) share the cache: export and
  compilation hold an exclusive file lock per model digest (``.lock`` next to the IR), so one process writes
  the IR and the blob and the others read them. OpenVINO writes its blob in place and does not expect a
  second writer; without the lock a parallel run failed with "cannot set permissions". Should the cache
  still be unwritable, the network is compiled without it (slower start, same result).
* **Determinism**: the same input gives the same output (the CPU plugin's kernels are deterministic for a
  given shape and thread count), so ``--seed`` reproduces a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medidiff.diffusion.predictions import Prediction
from medidiff.errors import ModelError
from medidiff.nets.model import DiffusionModel, predict_with

PRECISIONS = ("bf16", "f32")
_CORE: Any = None
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """The user cache folder for compiled networks."""
    if os.environ.get("MEDIDIFF_CACHE_DIR"):
        return Path(os.environ["MEDIDIFF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "medidiff"


@contextmanager
def cache_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.lock`` across processes (a no-op where fcntl is missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: OpenVINO's blob write is then unguarded across processes
        yield
        return
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def import_openvino() -> Any:
    """``import openvino`` without its usage reporting.

    Importing openvino sends an "import" event to Intel's analytics unless the user opted out (its
    ``openvino_telemetry`` package, which also writes a client id into ``~/intel``). A medical tool must
    send nothing, so, for this process only and unless something imported them first, the telemetry
    package is marked absent: openvino then uses its own built-in stub, which does nothing.
    """
    if "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import -> ImportError
    import openvino

    return openvino


def core() -> Any:
    """One OpenVINO runtime per process."""
    global _CORE
    with _LOCK:
        if _CORE is None:
            _CORE = import_openvino().Core()
    return _CORE


def native_precision() -> str:
    """``bf16`` where the CPU runs bf16 natively (OpenVINO says so), else ``f32``."""
    capabilities = core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in capabilities else "f32"


def model_digest(model: DiffusionModel) -> str:
    """sha256 (16 hex digits) of the network's architecture, diffusion settings and weights."""
    digest = hashlib.sha256()
    described = {k: model.config.get(k) for k in ("unet", "sde", "prediction_type", "time_scale")}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class _Network(torch.nn.Module):
    """The U-Net as a two-input module (x, scaled time) for tracing."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, timesteps: Tensor) -> Tensor:
        return self.net(x, timesteps)  # type: ignore[no-any-return]


def export_ir(model: DiffusionModel, target: Path, quiet: bool = True) -> Path:
    """Trace the model's U-Net (float32) into an OpenVINO IR at ``target`` (.xml + .bin), atomically."""
    import copy
    import tempfile

    ov = import_openvino()
    from openvino._offline_transformations import apply_moc_transformations
    from openvino.frontend import FrontEndManager
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    from medidiff.progress import Progress

    # About 25 s for the default network, once per model: a progress stage of its own ("compile").
    bar = Progress(1, "compile", quiet=True if quiet else None)
    net = copy.deepcopy(model.net).to("cpu", torch.float32)
    net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # torch stubs lack it
    net.eval()
    patch = tuple(model.patch_size)
    example = (torch.zeros(1, 1, *patch), torch.zeros(1))
    dynamic = [ov.PartialShape([-1, 1, -1, -1, -1]), ov.PartialShape([-1])]
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns that shape checks become constants; the IR is shape-dynamic and verified against
        # torch on several window shapes (tests/inference/test_openvino_backend.py).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The frontend directly, not openvino.convert_model (a tool that reports usage to Intel's analytics).
        decoder = TorchScriptPythonDecoder(_Network(net), example_input=example, shared_memory=False)
    frontend = FrontEndManager().load_by_framework("pytorch")
    graph = frontend.load(decoder)
    for place, shape in zip(graph.get_inputs(), dynamic, strict=True):
        graph.set_partial_shape(place, shape)
    ir = frontend.convert(graph)
    apply_moc_transformations(ir, cf=False, smart_reshape=True)  # what convert_model applies
    bar.update()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        ov.save_model(ir, str(Path(tmp) / target.name), compress_to_fp16=False)
        for suffix in (".bin", ".xml"):  # the .xml last: its presence means the pair is complete
            os.replace(Path(tmp) / target.with_suffix(suffix).name, target.with_suffix(suffix))
    return target


class OpenVINOModel:
    """A :class:`DiffusionModel` whose network runs in OpenVINO on the CPU (see the module docstring).

    Args:
        model: the torch model (its SDE, parameterisation, patch size and config are used as they are).
        precision: ``bf16``, ``f32``, or None for :func:`native_precision`.
        threads: OpenVINO inference threads; None: torch's thread count (the same budget as torch).
        quiet: no progress line when the IR is built.
    """

    backend = "openvino"

    def __init__(
        self,
        model: DiffusionModel,
        precision: str | None = None,
        threads: int | None = None,
        quiet: bool = True,
    ) -> None:
        precision = precision or native_precision()
        if precision not in PRECISIONS:
            raise ModelError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.sde = model.sde
        self.prediction_type = model.prediction_type
        self.time_scale = model.time_scale
        self.patch_size = model.patch_size
        self.config = model.config
        self.precision = precision
        self.threads = int(threads or torch.get_num_threads())
        self.digest = model_digest(model)
        self.ir = cache_dir() / "openvino" / self.digest / "unet.xml"
        with cache_lock(self.ir.parent):
            if not self.ir.is_file():
                export_ir(model, self.ir, quiet=quiet)
        self._compiled: dict[tuple[int, ...], Any] = {}

    def _compiled_for(self, spatial: Sequence[int]) -> Any:
        key = tuple(int(s) for s in spatial)
        if key not in self._compiled:
            ov = import_openvino()
            runtime = core()
            ir = runtime.read_model(str(self.ir))
            ir.reshape({0: ov.PartialShape([-1, 1, *key]), 1: ov.PartialShape([-1])})
            settings = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": self.threads}
            try:
                with cache_lock(self.ir.parent):
                    cached = {**settings, "CACHE_DIR": str(self.ir.parent / "compiled")}
                    self._compiled[key] = runtime.compile_model(ir, "CPU", cached)
            except (RuntimeError, OSError):  # an unwritable or damaged cache: compile without it
                self._compiled[key] = runtime.compile_model(ir, "CPU", settings)
        return self._compiled[key]

    def network_output(self, x: Tensor, t: Tensor) -> Tensor:
        """Raw network output (float32, like x) for x_t (B, 1, I, J, K) on the CPU and t (B,)."""
        # The same float32 time the torch model feeds its network (DiffusionModel.forward).
        t = t.to(device=x.device, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        scaled = (t * self.time_scale).numpy()
        compiled = self._compiled_for(x.shape[2:])
        request = compiled.create_infer_request()
        request.infer([np.ascontiguousarray(x.detach().float().numpy()), np.ascontiguousarray(scaled)])
        return torch.from_numpy(np.array(request.get_output_tensor(0).data, dtype=np.float32))

    def predict(self, x: Tensor, t: Tensor) -> Prediction:
        """The Denoiser interface: eps and x0 estimates for x_t (B, 1, I, J, K) at t (B,)."""
        return predict_with(self.network_output, self.sde, self.prediction_type, x, t)
