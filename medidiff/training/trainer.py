"""The denoising score-matching trainer (single process or DDP under ``torchrun``).

Loss: mean squared error between the network output and the target of its parameterisation
(``diffusion.predictions.training_target``) at x_t = alpha(t) x0 + sigma(t) eps. Times are drawn from a
mixture: a fraction uniformly on [t_min, 1], the rest log-uniformly in the noise ratio sigma/alpha over
``ratio_range``, which concentrates training where restoration needs precision (low noise levels).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from medidiff.diffusion.predictions import expand_like, training_target
from medidiff.diffusion.sde import SDE
from medidiff.errors import ConfigError, MedidiffError, ModelError
from medidiff.nets.checkpoint import save_model
from medidiff.nets.ema import make_ema
from medidiff.nets.model import DiffusionModel
from medidiff.training.checkpoint import apply_train_state, read_train_state, save_train_state, weights_digest
from medidiff.training.data import PatchDataConfig, PatchDataset

log = logging.getLogger("medidiff.train")


@dataclass
class OptimConfig:
    steps: int = 1000
    batch_size: int = 2
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    decay_steps: int = 0  # linear decay to 0 over the last decay_steps steps (0: constant after warm-up)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    uniform_t_fraction: float = 0.5
    ratio_range: tuple[float, float] = (0.01, 2.0)


@dataclass
class RunConfig:
    out_dir: str = "runs/default"
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 20
    num_workers: int = 1
    threads: int = 0  # 0: torch's default
    max_minutes: float = 0.0  # 0: no wall-clock limit; otherwise stop (with a checkpoint) after this long
    # Weights a new run starts from instead of a random init: "default" (the embedded model), a model
    # directory or .safetensors path (an exported model, e.g. another run's model.safetensors). "" : random.
    # Fine-tuning the default prior on a site's own scans; ignored on --resume (the run's state wins).
    init_from: str = ""
    # Keep a copy of the exported model every keep_every steps (snapshots/step_NNNNNNN.*), for learning
    # curves on development volumes. 0: keep only the latest model.safetensors.
    keep_every: int = 0


@dataclass
class TrainConfig:
    model: dict[str, Any] = field(default_factory=dict)
    data: PatchDataConfig = field(default_factory=PatchDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        def build(kind: type, section: str) -> Any:
            values = dict(raw.get(section) or {})
            known = {f.name for f in fields(kind)}
            unknown = set(values) - known
            if unknown:
                raise ConfigError(f"unknown key(s) in '{section}': {', '.join(sorted(unknown))}")
            for f in fields(kind):
                if f.name in values:
                    values[f.name] = _coerce(section, f.name, values[f.name], str(f.type))
            return kind(**values)

        unknown_sections = set(raw) - {"model", "data", "optim", "run", "provenance"}
        if unknown_sections:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown_sections))}")
        cfg = cls(
            model=dict(raw.get("model") or {}),
            data=build(PatchDataConfig, "data"),
            optim=build(OptimConfig, "optim"),
            run=build(RunConfig, "run"),
            provenance=dict(raw.get("provenance") or {}),
        )
        cfg.data.patch_size = tuple(cfg.model.get("patch_size", cfg.data.patch_size))  # type: ignore[assignment]
        cfg.model["patch_size"] = list(cfg.data.patch_size)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "model": self.model,
            "data": asdict(self.data),
            "optim": asdict(self.optim),
            "run": asdict(self.run),
            "provenance": self.provenance,
        }


def _coerce(section: str, name: str, value: Any, type_name: str) -> Any:
    """Check/convert one config value to its field's type (YAML reads ``1e-3`` as a string)."""
    try:
        if type_name == "float":
            return float(value)
        if type_name == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if type_name == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if "tuple" in type_name and isinstance(value, list):
            return tuple(float(v) if "float" in type_name else int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{section}.{name} must be of type {type_name}, got {value!r}") from None
    return value


def learning_rate(cfg: OptimConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, constant, then linear decay to 0 over the last ``decay_steps``.

    A resumed run can extend ``steps`` and set ``decay_steps`` to finish with a decay.
    """
    warmup = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    decay = min(1.0, max(0.0, (cfg.steps - step) / cfg.decay_steps)) if cfg.decay_steps > 0 else 1.0
    return cfg.lr * warmup * decay


def sample_times(sde: SDE, n: int, cfg: OptimConfig, generator: torch.Generator) -> Tensor:
    """Draw n training times (float64, (n,)) from the uniform / log-noise-ratio mixture."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    uniform = sde.t_min + (sde.T - sde.t_min) * u
    lo, hi = (math.log(r) for r in cfg.ratio_range)
    v = torch.rand(n, generator=generator, dtype=torch.float64)
    focused = sde.t_from_noise_ratio(torch.exp(lo + (hi - lo) * v)).clamp(sde.t_min, sde.T)
    pick = torch.rand(n, generator=generator, dtype=torch.float64) < cfg.uniform_t_fraction
    return torch.where(pick, uniform, focused)


def diffusion_loss(
    model: torch.nn.Module, core: DiffusionModel, x0: Tensor, t: Tensor, generator: torch.Generator
) -> Tensor:
    """Denoising score-matching loss for a batch x0 (B, 1, P, P, P) at times t (B,)."""
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    alpha, sigma = core.sde.coefficients(t)
    alpha, sigma = alpha.float().to(x0.device), sigma.float().to(x0.device)
    x_t = expand_like(alpha, x0) * x0 + expand_like(sigma, x0) * eps
    target = training_target(x0, eps, alpha, sigma, core.prediction_type)
    out = model(x_t, t.to(x0.device))
    return torch.mean((out - target) ** 2)


def _distributed(use_cuda: bool) -> tuple[int, int, int, bool]:
    """(rank, world_size, local_rank, created); initialises the process group under torchrun.

    ``created`` says whether this call created the group (and so should destroy it). The CUDA device is set
    before the group exists, so NCCL collectives (barrier, broadcast) use this rank's GPU, not GPU 0.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return 0, 1, 0, False
    created = not dist.is_initialized()
    if created:
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank, created


def _initial_step(
    out_dir: Path,
    resume: bool,
    rank: int,
    world: int,
    net: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> int:
    """The step to start from; on resume, every rank gets rank 0's weights, EMA and optimiser state.

    Only rank 0 touches the files: it sends what it read (or the error it met) to the other ranks, so all
    ranks resume the same state, or fail with the same message, and no shared file system is needed.
    """
    payload: list[Any] = [None]
    if rank == 0:
        try:
            if resume:
                payload[0] = read_train_state(out_dir)
            elif (out_dir / "train_state.json").exists():
                raise ConfigError(
                    f"{out_dir} already holds a training run; use --resume or another run.out_dir"
                )
        except MedidiffError as exc:
            payload[0] = exc
    if world > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(payload, src=0)
    if isinstance(payload[0], MedidiffError):
        raise payload[0]
    if payload[0] is None:
        return 0
    tensors, meta = payload[0]
    # The saved RNG state is rank 0's; the other ranks keep their own per-rank streams.
    apply_train_state(tensors, meta, net, ema, optimizer, restore_rng=rank == 0)
    return int(meta["step"])


def _init_weights(core: DiffusionModel, spec: str) -> None:
    """Copy the weights of model ``spec`` into ``core.net`` (every rank reads them: same init everywhere).

    The two must be the same network and diffusion: same tensors and shapes, SDE and prediction type.

    Raises:
        ModelError: an unreadable source model, or one whose network or diffusion differs from the config.
    """
    from medidiff.nets.checkpoint import load_model

    source = load_model(spec, device="cpu")
    try:  # strict: missing, unexpected or reshaped tensors all raise (as in apply_train_state)
        core.net.load_state_dict(source.net.state_dict())
    except RuntimeError:
        raise ModelError(
            f"run.init_from={spec}: its network differs from this config's model (tensors or shapes)"
        ) from None
    if source.prediction_type != core.prediction_type or source.config.get("sde") != core.config.get("sde"):
        raise ModelError(
            f"run.init_from={spec}: its diffusion (SDE or prediction type) differs from this config's"
        )


def _resumed_init_record(out_dir: Path) -> dict[str, Any]:
    """The start a resumed run recorded when it began (its ``model.json``), not what ``init_from`` names now.

    ``run.init_from: default`` names whatever model ships; once a snapshot of this very run has shipped, the
    default's step count is no longer the count the run started from.
    """
    path = Path(out_dir) / "model.json"
    if not path.is_file():
        return {}
    training = json.loads(path.read_text()).get("training", {})
    return {key: training[key] for key in ("init_from", "init_steps") if key in training}


def _init_record(spec: str) -> dict[str, Any]:
    """What a fine-tuned model records of its start: the source and the training steps it had."""
    from medidiff.nets.checkpoint import read_model_config

    steps = read_model_config(spec).get("training", {}).get("steps")
    return {"init_from": spec, **({"init_steps": steps} if isinstance(steps, int) else {})}


def _all_ranks(value: float, op: str, device: str, world: int) -> float:
    """``value`` reduced over ranks with ``op`` ("sum" or "max"); ``value`` itself in a single process."""
    if world <= 1:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return float(tensor.item())


def _replica_digests(net: torch.nn.Module, ema: torch.nn.Module, world: int) -> list[str]:
    """Each rank's :func:`weights_digest` (all equal when DDP keeps the replicas in sync)."""
    digest = weights_digest(net, ema)
    if world <= 1:
        return [digest]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, digest)
    return [str(d) for d in gathered]


def train(cfg: TrainConfig, resume: bool = False, device: str = "auto", quiet: bool = False) -> Path:
    """Train (or resume) a model as configured; returns the exported model path (EMA weights)."""
    from torch.nn.parallel import DistributedDataParallel

    from medidiff.progress import Progress

    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    rank, world, local_rank, owns_group = _distributed(use_cuda)
    if device == "auto":
        device = f"cuda:{local_rank}" if use_cuda else "cpu"
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    # The same initial weights (and EMA copy) on every rank, as in a single process; then per-rank streams.
    torch.manual_seed(cfg.run.seed)
    out_dir = Path(cfg.run.out_dir)
    core = DiffusionModel.from_config(cfg.model).to(device)
    if cfg.run.init_from and not resume:
        _init_weights(core, cfg.run.init_from)
    if torch.device(device).type == "cpu":
        core.use_channels_last()  # before the EMA copy, DDP and the optimiser take the weights
    ema = make_ema(core.net, cfg.optim.ema_decay)
    torch.manual_seed(cfg.run.seed + rank)
    model: torch.nn.Module = core
    if world > 1:
        model = DistributedDataParallel(core, device_ids=[local_rank] if device.startswith("cuda") else None)
    optimizer = torch.optim.AdamW(core.net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    step = _initial_step(out_dir, resume, rank, world, core.net, ema, optimizer)
    init_record = _resumed_init_record(out_dir) if resume else {}
    if not init_record and cfg.run.init_from:
        init_record = _init_record(cfg.run.init_from)

    def lr_at(s: int) -> float:
        return learning_rate(cfg.optim, s)

    dataset = PatchDataset(cfg.data, seed=cfg.run.seed + 7919 * step, rank=rank, world_size=world)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.optim.batch_size,
        num_workers=cfg.run.num_workers,
        persistent_workers=cfg.run.num_workers > 0,
    )
    generator = torch.Generator().manual_seed(cfg.run.seed * 1000 + rank + 104729 * step)
    voxels_per_step = cfg.optim.batch_size * math.prod(cfg.data.patch_size) * world
    start, window_start, window_steps, running = time.time(), time.time(), 0, 0.0
    history: list[dict[str, float]] = []
    is_main = rank == 0

    def checkpoint() -> None:
        digests = _replica_digests(core.net, ema, world)  # a collective: every rank takes part
        if is_main:
            extra = {"config": cfg.to_dict(), "world_size": world, "replica_digests": digests}
            save_train_state(out_dir, core.net, ema, optimizer, step, extra)
        if len(set(digests)) > 1:
            raise RuntimeError(f"DDP replicas diverged at step {step} (weight digests differ across ranks)")
        if not is_main:
            return
        export = DiffusionModel(
            ema.module,
            core.sde,
            core.prediction_type,
            core.time_scale,
            core.patch_size,
            config=core.config,
        )
        save_model(
            export,
            out_dir / "model.safetensors",
            extra={
                "normalization": {"lower_percentile": 0.5, "upper_percentile": 99.5, "smooth_sigma": 1.0},
                # provenance["files"], when the train CLI set it, names the config's entries (pkg:,
                # relative) and replaces the resolved paths, which are this machine's.
                "training": {"files": cfg.data.files, **cfg.provenance, "steps": step, **init_record},
            },
        )
        (out_dir / "history.jsonl").open("a").writelines(json.dumps(h) + "\n" for h in history)
        history.clear()
        if cfg.run.keep_every > 0 and step % cfg.run.keep_every == 0:
            import shutil

            snapshots = out_dir / "snapshots"
            snapshots.mkdir(exist_ok=True)
            for suffix in (".safetensors", ".json"):
                shutil.copyfile(out_dir / f"model{suffix}", snapshots / f"step_{step:07d}{suffix}")

    model.train()
    progress = Progress(cfg.optim.steps, "train", quiet=quiet or not is_main)
    progress.done = step
    for batch in loader:
        if step >= cfg.optim.steps:
            break
        x0 = batch.to(device)
        t = sample_times(core.sde, x0.shape[0], cfg.optim, generator)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        loss = diffusion_loss(model, core, x0, t, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(core.net.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        ema.update_parameters(core.net)
        step += 1
        window_steps += 1
        running += float(loss.detach())
        progress.update()
        if step % cfg.run.log_every == 0 or step == cfg.optim.steps:
            elapsed = time.time() - window_start
            record = {
                "step": step,
                "loss": _all_ranks(running, "sum", device, world) / (window_steps * world),
                "grad_norm": float(grad_norm),
                "voxels_per_s": voxels_per_step * window_steps / max(elapsed, 1e-9),
                "lr": lr_at(step),
                "minutes": (time.time() - start) / 60,
            }
            history.append(record)
            if is_main and not quiet:
                log.info("step %d loss %.4f voxels/s %.3g", step, record["loss"], record["voxels_per_s"])
            window_start, window_steps, running = time.time(), 0, 0.0
        out_of_time = cfg.run.max_minutes > 0 and (time.time() - start) / 60 >= cfg.run.max_minutes
        if cfg.run.max_minutes > 0:  # clocks differ: stop all ranks at the same step, or DDP would hang
            out_of_time = _all_ranks(float(out_of_time), "max", device, world) > 0
        if step % cfg.run.checkpoint_every == 0 or step == cfg.optim.steps or out_of_time:
            checkpoint()
        if out_of_time:
            break
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # rank 0's last checkpoint is on disk before any rank returns its path
        if owns_group:
            dist.destroy_process_group()
    return out_dir / "model.safetensors"
