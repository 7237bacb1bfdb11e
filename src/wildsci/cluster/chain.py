"""The whole paper as one chain of Slurm jobs: build -> GRPO -> eval -> report, each ``afterok`` on the one before.

Each stage is one sbatch script, written into ``<run_dir>/.wildsci_pipeline/`` before it is submitted (a person can
read and resubmit it), that runs the same public command ``wildsci demo`` runs in process (the commands come from
:func:`wildsci.demo.plan`), then writes the stage's done marker holding its fingerprint. A rerun submits only the
stages without a current marker, chained after each other, so a finished build or training is never redone. The GRPO
script runs ``srun`` + ``accelerate launch`` with the machine rank of each node, the first node of the allocation as
the main process, and resumes from the last checkpoint when one exists; with ``vllm_server_node`` the last node of
the allocation runs ``trl vllm-serve`` and the others train.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wildsci.cluster import slurm
from wildsci.errors import UserError

STATE_DIR = ".wildsci_pipeline"
STAGES = ("build", "grpo", "eval", "report")


def stage_dir(run: Path) -> Path:
    return run / STATE_DIR


def marker(run: Path, stage: str) -> Path:
    return stage_dir(run) / f"{stage}.done"


def is_done(run: Path, stage: Any) -> bool:
    """The stage's marker holds this stage's current fingerprint (command, recipe and every stage before it)."""
    m = marker(run, stage.name)
    return m.is_file() and m.read_text().strip() == stage.fingerprint


def sbatch_header(name: str, stage: str, res: Any, run: Path, cfg: Any) -> list[str]:
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=wildsci-{name}-{stage}",
        f"#SBATCH --output={stage_dir(run).resolve()}/logs/{stage}-%j.out",
        f"#SBATCH --nodes={res.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={res.cpus_per_task}",
        f"#SBATCH --mem={res.mem_gb}G",
        f"#SBATCH --time={res.time}",
        f"#SBATCH --chdir={Path.cwd()}",
    ]
    if res.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={res.gpus_per_node}")
    if res.partition or cfg.partition:
        lines.append(f"#SBATCH --partition={res.partition or cfg.partition}")
    for k, v in {**cfg.sbatch_args, **res.sbatch_args}.items():
        lines.append(f"#SBATCH --{k}={v}" if v not in (None, "") else f"#SBATCH --{k}")
    return lines


def _grpo_body(stage: Any, res: Any, run: Path, model: str) -> list[str]:
    """srun + accelerate launch on every training node of the allocation (and an optional ``trl vllm-serve`` node)."""
    argv = stage.shown
    module_args = argv[argv.index("-m") :]  # -m wildsci.grpo --config ... --output_dir ... --dataset_name ...
    train_nodes = res.nodes - (1 if res.vllm_server_node else 0)
    procs = train_nodes * res.processes_per_node
    launch = ["accelerate", "launch"]
    if res.accelerate_config:
        launch += ["--config_file", res.accelerate_config]
    elif procs > 1:
        launch += ["--multi_gpu"]  # torchrun; on CPU-only nodes the recipe's use_cpu makes it gloo DDP
    launch += ["--num_processes", str(procs), "--num_machines", str(train_nodes)]
    launch += ["--machine_rank", "$SLURM_NODEID", "--main_process_ip", "$MAIN_NODE", "--main_process_port", "$PORT"]
    cmd = " ".join(a if a.startswith("$") else shlex.quote(a) for a in [*launch, *module_args])
    lines = [
        'export MAIN_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "export PORT=$((29500 + SLURM_JOB_ID % 1000))",
        f"OUT={shlex.quote(str(run / 'grpo'))}",
        "RESUME=()",
        "# a resubmitted job resumes from the last checkpoint of the interrupted run",
        'if compgen -G "$OUT/checkpoint-*" > /dev/null; then RESUME=(--resume_from_checkpoint true); fi',
    ]
    if res.vllm_server_node:  # TRL's server mode: the last node generates, the others train
        lines += [
            'SERVE_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | tail -n 1)',
            f'srun --nodes=1 --ntasks=1 --nodelist="$SERVE_NODE" trl vllm-serve --model {shlex.quote(model)} '
            f"--tensor-parallel-size {max(1, res.gpus_per_node)} &",
            f'srun --nodes={train_nodes} --ntasks-per-node=1 --exclude="$SERVE_NODE" bash -c '
            + shlex.quote(f'{cmd} --use_vllm true --vllm_mode server --vllm_server_host "$0" "$@"')
            + ' "$SERVE_NODE" "${RESUME[@]}"',
        ]
    else:
        lines.append(
            f"srun --nodes={train_nodes} --ntasks-per-node=1 bash -c "
            + shlex.quote(f'{cmd} "$@"')
            + ' _ "${RESUME[@]}"'
        )
    return lines


def render_script(
    name: str, stage: Any, res: Any, run: Path, cfg: Any, env_command: str | None, model: str = ""
) -> str:
    """The sbatch script of one stage: header, environment, the stage's command, then its done marker."""
    lines = sbatch_header(name, stage.name, res, run, cfg)
    lines += ["set -euo pipefail", "export PYTHONUNBUFFERED=1"]
    if env_command:
        lines.append(env_command)
    lines.append(f'echo "wildsci pipeline: stage {stage.name} on $(hostname) (job $SLURM_JOB_ID)"')
    if stage.name == "grpo":
        lines += _grpo_body(stage, res, run, model)
    else:
        lines.append(shlex.join(stage.shown))
    lines.append(f"echo {stage.fingerprint} > {shlex.quote(str(marker(run, stage.name).resolve()))}")
    return "\n".join(lines) + "\n"


def _sbatch(script: Path, after: str | None) -> str:
    cmd = ["sbatch", "--parsable"] + ([f"--dependency=afterok:{after}"] if after else []) + [str(script)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise UserError(f"sbatch refused {script}: {(done.stderr or done.stdout).strip().splitlines()[-1]}")
    return done.stdout.strip().split(";")[0]


def load_state(run: Path) -> dict[str, Any]:
    p = stage_dir(run) / "state.json"
    return json.loads(p.read_text()) if p.is_file() else {"jobs": {}}


def save_state(run: Path, state: dict[str, Any]) -> None:
    stage_dir(run).mkdir(parents=True, exist_ok=True)
    (stage_dir(run) / "state.json").write_text(json.dumps(state, indent=1) + "\n")


def submit(
    name: str, stages: list[Any], resources: dict[str, Any], run: Path, cfg: Any, model: str = ""
) -> dict[str, str]:
    """Submit every stage without a current done marker, each after the one before; returns stage -> job id."""
    slurm.require_slurm()
    state = load_state(run)
    views = stage_views(run, stages, state)
    busy = [v for v in views if v["state"] in ("running", "pending")]
    if busy:
        ids = " ".join(v["job"] for v in busy)
        raise UserError(
            f"stages {', '.join(v['stage'] for v in busy)} of this chain are still queued or running (jobs {ids}) "
            f"-- follow them with --status or --wait, or `scancel {ids}` to stop them"
        )
    never = [v["job"] for v in views if v["state"] == "blocked"]
    if never:
        slurm.cancel(never)
        print(
            f"wildsci pipeline: cancelled job(s) {', '.join(never)}, which waited on a failed stage", file=sys.stderr
        )
    (stage_dir(run) / "logs").mkdir(parents=True, exist_ok=True)
    env_command = cfg.env_command or slurm.default_env_command()
    after, jobs = None, {}
    for stage in stages:
        if after is None and is_done(run, stage):
            continue  # a finished stage at the head of the chain is not redone
        marker(run, stage.name).unlink(missing_ok=True)
        script = stage_dir(run) / f"{stage.name}.sbatch"
        script.write_text(render_script(name, stage, resources[stage.name], run, cfg, env_command, model))
        after = jobs[stage.name] = _sbatch(script, after)
        state["jobs"][stage.name] = {"job_id": after, "script": str(script), "submitted": time.time()}
    save_state(run, state)
    return jobs


def _log_of(run: Path, stage: str, job: str) -> Path:
    return stage_dir(run).resolve() / "logs" / f"{stage}-{job}.out"


def failing_line(log: Path) -> str:
    """The line of a failed stage's log that names the cause: the kit's one-line error, else the last line."""
    if not log.is_file():
        return ""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ": error:" in ln or ln.startswith(("Error", "error:")) or "Error:" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else ""


def stage_views(run: Path, stages: list[Any], state: dict[str, Any]) -> list[dict[str, str]]:
    """Per stage: its job, state (done/running/pending/blocked/failed/not submitted), elapsed, cause and log."""
    jobs = {s: str(j.get("job_id", "")) for s, j in state.get("jobs", {}).items()}
    queued = {t.job_id: t for t in slurm.queued(list(jobs.values()))}
    views = []
    for stage in stages:
        job = jobs.get(stage.name, "")
        v = {"stage": stage.name, "job": job or "-", "state": "not submitted", "elapsed": "", "detail": "", "log": ""}
        if job:
            v["log"] = str(_log_of(run, stage.name, job))
        if is_done(run, stage):
            v["state"] = "done"
        elif job in queued:
            t = queued[job]
            v["elapsed"] = t.elapsed
            if t.state == "PENDING" and t.reason == "DependencyNeverSatisfied":
                v["state"], v["detail"] = "blocked", "an earlier stage failed: it can never start"
            else:
                v["state"], v["detail"] = ("running", "") if t.state == "RUNNING" else ("pending", t.reason)
        elif job:
            ended = slurm.finished(job)
            v["state"] = "failed"
            if ended:
                v["elapsed"] = ended[0].elapsed
                v["detail"] = f"Slurm: {ended[0].state}"
            line = failing_line(Path(v["log"]))
            v["detail"] = (v["detail"] + " -- " if v["detail"] else "") + line
        views.append(v)
    return views
