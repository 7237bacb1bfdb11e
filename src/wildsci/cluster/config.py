"""``executor:``: where a recipe's work runs -- in this process, in a local pool of processes, or on Slurm.

It lives apart from the launcher code so that a data recipe (and the pipeline recipe) can carry the section without
importing datatrove. Every key is also a flag: ``--executor.kind slurm --executor.tasks 64``. The section never
changes what is built (it is not part of the recipe hash).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KINDS = ("inprocess", "local", "slurm")
#: Slurm's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


@dataclass
class ServerConfig:
    """A model server that each task starts for itself (see :mod:`wildsci.cluster.server`)."""

    command: list[str] = field(
        default_factory=list,
        metadata={
            "help": "The server command with {model} {host} {port} {python} placeholders; empty = "
            "`vllm serve {model} --host {host} --port {port}`."
        },
    )
    python: str | None = field(default=None, metadata={"help": "Interpreter for {python} (e.g. a vLLM venv)."})
    env: dict[str, str] = field(default_factory=dict, metadata={"help": "Extra environment for the server."})
    startup_timeout: float = field(default=900.0, metadata={"help": "Seconds to wait for the server's /health."})

    def __post_init__(self) -> None:
        if self.startup_timeout <= 0:
            raise ValueError(f"executor.server.startup_timeout must be > 0 seconds, got {self.startup_timeout}")


@dataclass
class ExecutorConfig:
    """How a stage's tasks are launched (docs/scale_out.md)."""

    kind: str = field(
        default="inprocess",
        metadata={
            "help": "inprocess (one process, the default), local (a pool of processes on this machine, via "
            "datatrove) or slurm (a Slurm array job, via datatrove)."
        },
    )
    tasks: int = field(
        default=1, metadata={"help": "How many tasks (builder shards) the papers are split into (local, slurm)."}
    )
    workers: int = field(
        default=-1, metadata={"help": "How many tasks run at the same time; -1 = all (local: one process each)."}
    )
    logging_dir: str | None = field(
        default=None,
        metadata={
            "help": "Completions, per-task logs and sbatch scripts; default <output_dir>/.wildsci_build/executor."
        },
    )
    partition: str | None = field(default=None, metadata={"help": "Slurm partition (null = the cluster's default)."})
    time: str = field(default="24:00:00", metadata={"help": "Slurm time limit per task, e.g. 4:00:00 or 1-00:00:00."})
    cpus_per_task: int = field(default=1, metadata={"help": "Slurm CPUs per task."})
    mem_per_cpu_gb: float = field(default=2, metadata={"help": "Slurm memory per CPU, in GB."})
    gpus_per_task: int = field(default=0, metadata={"help": "Slurm GPUs per task (a per-task vLLM server needs 1+)."})
    qos: str | None = field(default=None, metadata={"help": "Slurm QOS (null = none given)."})
    env_command: str | None = field(
        default=None,
        metadata={
            "help": "Shell line that activates the kit's environment in each job; default: `source <this venv>/"
            "bin/activate` when wildsci runs from a venv."
        },
    )
    sbatch_args: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "Extra #SBATCH lines as key: value, e.g. {account: my-proj, constraint: h100}."},
    )
    job_name: str | None = field(default=None, metadata={"help": "Slurm job name; default wildsci-<stage>-<name>."})
    server: ServerConfig | None = field(
        default=None,
        metadata={
            "help": "Each task starts its own model server for the generator (and the voters/labeler on the same "
            "model); null = use the recipe's base_url (a shared endpoint)."
        },
    )

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"executor.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.tasks, int) or self.tasks < 1:
            raise ValueError(f"executor.tasks must be a whole number >= 1, got {self.tasks!r}")
        if self.tasks > 100_000:
            raise ValueError(f"executor.tasks {self.tasks:,} is above the bound of 100,000 -- use fewer, larger tasks")
        if not isinstance(self.workers, int) or (self.workers < 1 and self.workers != -1):
            raise ValueError(f"executor.workers must be >= 1, or -1 for all tasks at once, got {self.workers!r}")
        if self.kind == "inprocess" and self.tasks != 1:
            raise ValueError(
                f"executor.tasks is {self.tasks} but executor.kind is inprocess (one task) -- "
                "set --executor.kind local or slurm to split the work"
            )
        if not _SLURM_TIME.match(str(self.time)):
            raise ValueError(f"executor.time {self.time!r} is not a Slurm time (e.g. 30, 4:00:00, 1-00:00:00)")
        for key in ("cpus_per_task", "gpus_per_task"):
            v = getattr(self, key)
            if not isinstance(v, int) or v < (0 if key == "gpus_per_task" else 1):
                raise ValueError(f"executor.{key} must be a whole number >= {0 if key == 'gpus_per_task' else 1}")
        if self.server is not None and self.kind == "inprocess":
            raise ValueError("executor.server starts one server per task -- set executor.kind local or slurm")
        if not self.mem_per_cpu_gb or self.mem_per_cpu_gb <= 0:
            raise ValueError(f"executor.mem_per_cpu_gb must be > 0, got {self.mem_per_cpu_gb!r}")

    @property
    def concurrent(self) -> int:
        """Tasks that run at the same time."""
        return self.tasks if self.workers == -1 else min(self.workers, self.tasks)
