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
import shutil
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


def marker(run: Path, stage: str, task: int | None = None) -> Path:
    return stage_dir(run) / (f"{stage}.done" if task is None else f"{stage}-{task}.done")


def is_done(run: Path, stage: Any, tasks: int | None = None, fingerprint: str | None = None) -> bool:
    """The stage's marker(s) hold this stage's current fingerprint (command, recipe and every stage before it).

    ``tasks``: an array stage (the evaluation: one task per model) is done when every task's marker is.
    ``fingerprint``: the one to expect instead (``--status`` asks about what was submitted).
    """
    want = fingerprint or stage.fingerprint
    paths = [marker(run, stage.name)] if tasks is None else [marker(run, stage.name, i) for i in range(tasks)]
    return all(m.is_file() and m.read_text().strip() == want for m in paths)


def sbatch_header(name: str, stage: str, res: Any, run: Path, cfg: Any, tasks: int | None = None) -> list[str]:
    log = f"{stage}-%A_%a.out" if tasks else f"{stage}-%j.out"
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=wildsci-{name}-{stage}",
        f"#SBATCH --output={stage_dir(run).resolve()}/logs/{log}",
        f"#SBATCH --nodes={res.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={res.cpus_per_task}",
        f"#SBATCH --mem={res.mem_gb}G",
        f"#SBATCH --time={res.time}",
        f"#SBATCH --chdir={Path.cwd()}",
    ]
    if tasks:
        lines.append(f"#SBATCH --array=0-{tasks - 1}")
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
    name: str,
    stage: Any,
    res: Any,
    run: Path,
    cfg: Any,
    env_command: str | None,
    model: str = "",
    layout: dict[str, Any] | None = None,
) -> str:
    """The sbatch script of one stage: header, environment, the stage's command, then its done marker.

    ``layout["eval_models"]``: the evaluation is an array job, one task per model (base, then each checkpoint),
    sized before training ends from the GRPO recipe's save schedule; a task past the models that exist has nothing
    to do. The report job first writes the evaluation matrix from every saved model run (``wildsci eval`` without
    ``--model_index`` evaluates nothing again), then the report.
    """
    layout = layout or {}
    tasks = layout.get("eval_models") if stage.name == "eval" else None
    lines = sbatch_header(name, stage.name, res, run, cfg, tasks)
    lines += ["set -euo pipefail", "export PYTHONUNBUFFERED=1"]
    if env_command:
        lines.append(env_command)
    where = "(job $SLURM_JOB_ID" + (", task $SLURM_ARRAY_TASK_ID" if tasks else "") + ")"
    lines.append(f'echo "wildsci pipeline: stage {stage.name} on $(hostname) {where}"')
    done = shlex.quote(str(marker(run, stage.name).resolve()))
    if stage.name == "grpo":
        lines += _grpo_body(stage, res, run, model)
    elif tasks:
        lines.append(shlex.join([*stage.shown, "--model_index"]) + " $SLURM_ARRAY_TASK_ID")
        done = shlex.quote(str(stage_dir(run).resolve())) + '/eval-"$SLURM_ARRAY_TASK_ID".done'
    elif stage.name == "report" and layout.get("eval_command"):
        lines.append(shlex.join(layout["eval_command"]) + "   # the matrix, from every model's saved run")
        lines.append(shlex.join(stage.shown))
    else:
        lines.append(shlex.join(stage.shown))
    lines.append(f"echo {stage.fingerprint} > {done}")
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
    name: str,
    stages: list[Any],
    resources: dict[str, Any],
    run: Path,
    cfg: Any,
    model: str = "",
    layout: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Submit every stage without a current done marker, each after the one before; returns stage -> job id."""
    slurm.require_slurm()
    layout = layout or {}
    state = load_state(run)
    views = stage_views(run, stages, state, layout)
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
        tasks = layout.get("eval_models") if stage.name == "eval" else None
        if after is None and is_done(run, stage, tasks):
            continue  # a finished stage at the head of the chain is not redone
        for m in stage_dir(run).glob(f"{stage.name}*.done"):
            m.unlink()
        before = state["jobs"].get(stage.name, {}).get("fingerprint")
        if before and before != stage.fingerprint:  # another command, recipe or input: never resume its checkpoints
            out = stage.outputs[0].parent
            old = sorted(p for pattern in stage.stale for p in out.glob(pattern))
            for p in old:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            if old:
                print(
                    f"wildsci pipeline: {stage.name} changed since its last submission: removed {len(old)} "
                    f"checkpoint(s) of that run from {out}",
                    file=sys.stderr,
                )
        script = stage_dir(run) / f"{stage.name}.sbatch"
        script.write_text(render_script(name, stage, resources[stage.name], run, cfg, env_command, model, layout))
        after = jobs[stage.name] = _sbatch(script, after)
        state["jobs"][stage.name] = {
            "job_id": after,
            "script": str(script),
            "submitted": time.time(),
            "fingerprint": stage.fingerprint,
            "tasks": tasks,
        }
    save_state(run, state)
    return jobs


def _logs_of(run: Path, stage: str, job: str) -> list[Path]:
    """A job's log, or every task's log of an array job."""
    logs = stage_dir(run).resolve() / "logs"
    single = logs / f"{stage}-{job}.out"
    return [single] if single.is_file() else sorted(logs.glob(f"{stage}-{job}_*.out"))


def failing_line(log: Path) -> str:
    """The line of a failed stage's log that names the cause: the kit's one-line error, else the last line."""
    if not log.is_file():
        return ""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ": error:" in ln or ln.startswith(("Error", "error:")) or "Error:" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else ""


def stage_views(
    run: Path, stages: list[Any], state: dict[str, Any], layout: dict[str, Any] | None = None
) -> list[dict[str, str]]:
    """Per stage: its job, state (done/running/pending/blocked/failed/not submitted), elapsed, cause and log."""
    layout = layout or {}
    jobs = {s: str(j.get("job_id", "")) for s, j in state.get("jobs", {}).items()}
    queued: dict[str, list[slurm.JobTask]] = {}
    for t in slurm.queued(list(jobs.values())):
        queued.setdefault(t.job_id, []).append(t)
    views = []
    failed_before = False  # afterok on a failed job is never satisfied, whether or not Slurm has said so yet
    for stage in stages:
        job = jobs.get(stage.name, "")
        v = {"stage": stage.name, "job": job or "-", "state": "not submitted", "elapsed": "", "detail": "", "log": ""}
        logs = _logs_of(run, stage.name, job) if job else []
        v["log"] = (
            str(logs[0]) if len(logs) == 1 else (str(logs[0].parent / f"{stage.name}-{job}_*.out") if logs else "")
        )
        tasks = queued.get(job, [])
        # what was submitted is what is asked about: the markers hold the fingerprint of the submitted command
        sub = state.get("jobs", {}).get(stage.name, {})
        n = sub.get("tasks") if "tasks" in sub else (layout.get("eval_models") if stage.name == "eval" else None)
        if is_done(run, stage, n, sub.get("fingerprint")):
            v["state"] = "done"
        elif tasks:
            v["elapsed"] = max(t.elapsed for t in tasks)
            if any(t.state == "RUNNING" for t in tasks):
                v["state"] = "running"
            elif any(t.reason == "DependencyNeverSatisfied" for t in tasks) or (
                failed_before and all(t.reason.startswith("Dependency") for t in tasks)
            ):
                v["state"], v["detail"] = "blocked", "an earlier stage failed: it can never start"
            else:
                v["state"], v["detail"] = "pending", tasks[0].reason
        elif job:
            ended = slurm.finished(job)
            v["state"] = "failed"
            bad = [t for t in ended if t.state != "COMPLETED"]
            if ended:
                v["elapsed"] = ended[0].elapsed
                v["detail"] = f"Slurm: {(bad or ended)[0].state}"
            failed_logs = [p for p in logs if "error" in failing_line(p).lower()] or logs
            if failed_logs:
                v["log"] = str(failed_logs[-1])
                line = failing_line(failed_logs[-1])
                v["detail"] = (v["detail"] + " -- " if v["detail"] else "") + line
        failed_before = failed_before or v["state"] == "failed"
        views.append(v)
    return views
