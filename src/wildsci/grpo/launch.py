"""What the launch really is (processes, sharding, device, precision) and the launches that would run wrong silently.

``accelerate launch`` turns a config file and flags into environment variables for each process; accelerate's
``PartialState`` then decides, inside the process, what actually runs. The two can disagree without a word
(accelerate 1.15, ``accelerate/commands/launch.py`` and ``accelerate/state.py``):

- ``--cpu --num_processes 2`` goes to the simple launcher, which starts ONE process (it sets ``MASTER_ADDR`` for
  the missing peers and nothing else);
- several processes without ``use_cpu`` on a machine without CUDA each train alone (``DistributedType.NO``);
- FSDP and DeepSpeed are taken only off the CPU: with ``use_cpu`` the state is ``MULTI_CPU``, i.e. plain DDP;
- a recipe meant for a GPU trains on the CPU when CUDA cannot be used, at a fraction of the speed.

Each is refused here in one line, before a model is loaded. :func:`launch_shape` is what the memory plan
(:mod:`wildsci.grpo.memory`) plans for.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wildsci.errors import UserError, first_line

SHARDINGS = ("none", "zero1", "zero2", "zero3", "fsdp")


@dataclass(frozen=True)
class LaunchShape:
    """Processes and how the training state is split across them (what decides memory per device)."""

    processes: int
    sharding: str  # one of SHARDINGS
    source: str  # where it was read: the environment of this launch, or an accelerate config file

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise UserError(f"{self.source}: {self.processes} processes -- give at least 1")
        if self.sharding not in SHARDINGS:
            raise UserError(f"{self.source}: sharding {self.sharding!r} unknown -- use one of {', '.join(SHARDINGS)}")


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def requested_sharding() -> str:
    """The sharding the accelerate launcher was asked for (its environment), whatever the state later makes of it."""
    if _truthy("ACCELERATE_USE_DEEPSPEED"):
        return f"zero{os.environ.get('ACCELERATE_DEEPSPEED_ZERO_STAGE', '2')}"
    if _truthy("ACCELERATE_USE_FSDP"):
        return "fsdp"
    return "none"


def launch_shape() -> LaunchShape:
    """This launch: ``WORLD_SIZE`` processes (1 without a launcher) and the requested sharding."""
    return LaunchShape(int(os.environ.get("WORLD_SIZE", "1")), requested_sharding(), "this launch")


def shape_from_config(path: str) -> LaunchShape:
    """The launch an accelerate config file describes (``--plan_launch recipes/accelerate/zero3.yaml``)."""
    from wildsci.recipes import load_yaml

    cfg = load_yaml(path)
    kind = str(cfg.get("distributed_type", "NO")).upper()
    if kind == "DEEPSPEED":
        sharding = f"zero{(cfg.get('deepspeed_config') or {}).get('zero_stage', 2)}"
    elif kind == "FSDP":
        sharding = "fsdp"
    else:
        sharding = "none"
    return LaunchShape(int(cfg.get("num_processes") or 1), sharding, path)


def cuda_problem() -> str | None:
    """Why CUDA cannot be used here, in words (None when it can): the reason decides the fix."""
    import torch

    if torch.version.cuda is None:
        return f"the installed torch {torch.__version__} is built without CUDA"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = torch.cuda.is_available()
    if ok:
        return None
    for w in caught:  # e.g. "The NVIDIA driver on your system is too old (found version 12040) ..."
        text = str(w.message)
        if "driver" in text.lower():
            cuda = f"torch {torch.__version__} (CUDA {torch.version.cuda})"
            return f"{cuda} cannot use the driver: {first_line(Exception(text))}"
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None and not os.environ["CUDA_VISIBLE_DEVICES"].strip():
        return "CUDA_VISIBLE_DEVICES is empty (no GPU visible to this process)"
    return f"no CUDA device found (torch {torch.__version__}, built for CUDA {torch.version.cuda})"


def wants_cpu(args: Any) -> bool:
    """The run asked for the CPU: ``use_cpu`` in the recipe or ``accelerate launch --cpu``."""
    return bool(args.use_cpu) or _truthy("ACCELERATE_USE_CPU")


def check_device(args: Any) -> None:
    """A recipe that does not ask for the CPU is meant for a GPU: refuse to train it on the CPU silently."""
    if wants_cpu(args):
        return
    problem = cuda_problem()
    if problem:
        raise UserError(
            f"this recipe trains on a GPU (use_cpu is false) but CUDA cannot be used: {problem} -- fix the "
            "GPU set-up (README, 'Reproducing the paper'), or set use_cpu: true to train on the CPU on purpose"
        )


def check_processes(args: Any) -> None:
    """The processes accelerate was asked for are the processes that train together (see the module doc)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    mpi = any(k in os.environ for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"))
    if (
        "MASTER_ADDR" in os.environ
        and "WORLD_SIZE" not in os.environ
        and not mpi
        and "ACCELERATE_USE_CPU" in os.environ
    ):
        raise UserError(
            "accelerate launch --cpu with --num_processes > 1 starts ONE process (accelerate's CPU launcher needs "
            "mpirun for more) -- for several CPU processes use `accelerate launch --multi_gpu --num_processes N` with "
            "use_cpu: true in the recipe (gloo), or --num_processes 1"
        )
    if world > 1 and args.world_size != world:
        raise UserError(
            f"{world} processes were launched but accelerate trains them as {args.world_size} (each alone): no "
            "CUDA and use_cpu is false -- set use_cpu: true to train them together on the CPU (gloo), or run on GPUs"
        )


def check_sharding(args: Any, config_hint: str = "") -> None:
    """FSDP or DeepSpeed asked of the launcher for a CPU run: accelerate 1.15 sets them up only off the CPU (its
    state takes DeepSpeed only ``not cpu`` and FSDP only from a MULTI_GPU-like state), so the run would be plain
    DDP under a sharded config's name."""
    want = requested_sharding()
    if want == "none" or not wants_cpu(args):
        return
    what = "DeepSpeed ZeRO" if want.startswith("zero") else "FSDP"
    raise UserError(
        f"the accelerate config asks for {what}{config_hint}, but this run is on the CPU (use_cpu): accelerate 1.15 "
        f"takes {what} only on a GPU and would run plain DDP -- on the CPU use recipes/accelerate/ddp.yaml with "
        "--num_processes N, or run on GPUs"
    )


def check_precision(args: Any, model_args: Any, allow: bool, where: str, sharding: str | None = None) -> None:
    """Half-precision weights train with a half-precision AdamW unless DeepSpeed or FSDP keeps an fp32 copy.

    AdamW's state takes the parameters' dtype; bf16 has 8 significant bits, so an lr-1e-6 update rounds away
    for almost every weight (docs/grpo.md, "Precision").
    """
    dtype = str(model_args.dtype or "auto")
    if allow or dtype not in ("bfloat16", "float16") or model_args.use_peft:
        return
    if (sharding or requested_sharding()) != "none" or args.deepspeed or args.fsdp:
        return
    raise UserError(
        f"{where}: dtype {dtype} without DeepSpeed or FSDP trains {dtype} weights with a {dtype} AdamW (no fp32 "
        "master copy: small updates round away) -- set dtype: float32 (bf16: true still runs the matmuls in bf16), "
        "launch with recipes/accelerate/zero3.yaml, zero2.yaml or fsdp.yaml, or set allow_half_precision_optimizer: "
        "true if you mean it"
    )


def rank_note(args: Any) -> str:
    """``rank 1/2`` for a log line, so each process's log shows that it ran."""
    return f"rank {args.process_index}/{args.world_size}"


def config_name() -> str:
    """The accelerate config file named on the launcher's command line, for the error lines (best effort)."""
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    args = [a.decode(errors="replace") for a in argv]
    return f" ({args[args.index('--config_file') + 1]})" if "--config_file" in args[:-1] else ""
