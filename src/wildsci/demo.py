"""``wildsci demo`` (what ``make demo`` runs): the whole WildSci loop, offline, on the embedded SmolLM2.

    build a small dataset from the built-in corpus  ->  GRPO for a few minutes  ->  evaluate base vs trained
    ->  report.md with PNG plots  ->  the command that opens the Space on the result

Why subprocesses of the public commands instead of function calls: the demo is also the tutorial. Each
stage prints the exact command it runs, so a user can copy it, change a key, and rerun one stage by hand;
and each stage gets a fresh process, like it would on a cluster (GRPO goes through ``accelerate launch``).

Rerunning is cheap. ``<run>/demo_stages.json`` records, per stage, a fingerprint of its command, its recipe
file and the fingerprints of the stages before it. A stage whose fingerprint matches and whose outputs are
complete is skipped; a rebuilt dataset therefore retrains and re-evaluates, an unchanged one does not. An
interrupted GRPO run resumes from its last checkpoint (same fingerprint only), and the builder's LLM call
cache makes a rebuilt dataset cheap. ``wildsci report`` always reruns: it takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wildsci.errors import UserError

STATE_FILE = "demo_stages.json"  # also read by wildsci.report for the stage-time table
RECIPES = {
    "build": "recipes/data/demo.yaml",
    "grpo": "recipes/grpo/demo_cpu.yaml",
    "eval": "recipes/eval/demo.yaml",
}
#: ``--small`` (the test suite's chain): every stage shrunk through its ordinary command-line overrides.
SMALL = {
    # 8 of the 26 built-in passages, one question each (one generation batch); enough questions for the pool
    # distractors to bring each to 10 options; labelled from the passages' own field labels (no LLM call)
    "build": ["--max_papers", "8", "--generate.questions_per_chunk", "1", "--label.use_llm", "false"],
    # 2 steps of the recipe's own shape (1 question x 4 rotations x 4 rollouts, KL) with 32 tokens; no checkpoints,
    # so eval compares base vs the final save
    "grpo": [
        "--max_steps", "2",
        "--max_completion_length", "32", "--save_strategy", "no",
    ],
    # the WildSci task only (no benchmark files needed), on the train split: an 8-passage build may hold out nothing
    "eval": ["--tasks", "[wildsci]", "--splits.wildsci", "train", "--max_samples", "4", "--max_new_tokens", "32"],
}  # fmt: skip
#: children run offline unless the caller says otherwise (the demo's promise: nothing reaches the Hub)
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class Stage:
    """One step of the chain: the command a user would type, and how to tell that its outputs are complete."""

    name: str
    shown: list[str]  # what the user types: ``wildsci build ...``
    argv: list[str]  # what runs: the same command through this interpreter's scripts
    outputs: list[Path]  # every one must exist for the stage to count as done
    recipe: str | None = None
    always: bool = False  # rerun even when done (the report)
    fingerprint: str = ""
    resume: list[str] = field(default_factory=list)  # extra args when a same-fingerprint run was interrupted
    stale: list[str] = field(default_factory=list)  # globs (in the output folder) to clear before a fresh run


def _script(name: str, module: str) -> list[str]:
    """The console script next to this interpreter (the venv's), or ``python -m`` when it is not installed."""
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.is_file() and os.access(exe, os.X_OK) else [sys.executable, "-m", module]


def _fingerprint(stage: Stage, upstream: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(stage.shown).encode())
    if stage.recipe and Path(stage.recipe).is_file():
        h.update(Path(stage.recipe).read_bytes())
    h.update(upstream.encode())
    return h.hexdigest()[:16]


def plan(
    run_dir: str | Path = "runs/demo",
    small: bool = False,
    recipes: dict[str, str] | None = None,
    args: dict[str, list[str]] | None = None,
) -> list[Stage]:
    """The chain's stages, with their commands and fingerprints (nothing is run or checked here).

    ``recipes`` and ``args`` (extra command-line arguments per stage) come from a pipeline recipe
    (``wildsci pipeline``); by default they are the demo's.
    """
    run = Path(run_dir)
    ds, grpo, ev = run / "dataset", run / "grpo", run / "eval"
    recipes = {**RECIPES, **(recipes or {})}
    extra = {k: list(v) for k, v in (SMALL if small else {"build": [], "grpo": [], "eval": []}).items()}
    for k, v in (args or {}).items():
        extra[k] = [*extra.get(k, []), *v]
    wildsci = _script("wildsci", "wildsci.cli")
    accelerate = _script("accelerate", "accelerate.commands.launch")

    build = ["build", recipes["build"], "--output-dir", str(ds), *extra["build"]]
    # accelerate launch gives a single process ONE OpenMP thread unless told otherwise (its multi-process CPU
    # default): on CPU the demo's GRPO then runs ~2x slower on 2 cores. Give the one process every core.
    threads = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    train = [
        "launch", "--num_processes", "1", "--num_cpu_threads_per_process", threads, "-m", "wildsci.grpo",
        "--config", recipes["grpo"],
        "--output_dir", str(grpo), "--dataset_name", str(ds), *extra["grpo"],
    ]  # fmt: skip
    evaluate = [
        "eval", recipes["eval"], "--output-dir", str(ev), "--trained", str(grpo), "--sources.wildsci", str(ds),
        *extra["eval"],
    ]  # fmt: skip
    report = ["report", str(run)]
    stages = [
        Stage(
            "build",
            ["wildsci", *build],
            [*wildsci, *build],
            [ds / "build_report.json", ds / "README.md", ds / "data" / "train-00000-of-00001.parquet"],
            recipes["build"],
        ),
        Stage(
            "grpo",
            ["accelerate", *train],
            [*accelerate, *train[1:]] if accelerate[0] == sys.executable else [*accelerate, *train],
            [grpo / "config.json", grpo / "model.safetensors", grpo / "README.md", grpo / "wildsci_metrics.jsonl"],
            recipes["grpo"],
            resume=["--resume_from_checkpoint"],
            stale=["checkpoint-*"],  # else `wildsci eval` would evaluate an earlier run's checkpoints as this one's
        ),
        Stage(
            "eval",
            ["wildsci", *evaluate],
            [*wildsci, *evaluate],
            [ev / "results.json", ev / "predictions.jsonl", ev / "results.md"],
            recipes["eval"],
        ),
        Stage("report", ["wildsci", *report], [*wildsci, *report], [run / "report.md"], always=True),
    ]
    upstream = ""
    for s in stages:
        s.fingerprint = upstream = _fingerprint(s, upstream)
    return stages


# ----------------------------------------------------------------------------------------------- state
def _load_state(run: Path) -> dict[str, Any]:
    try:
        state = json.loads((run / STATE_FILE).read_text(encoding="utf-8"))
        return state if isinstance(state, dict) and isinstance(state.get("stages"), list) else {"stages": []}
    except (OSError, ValueError):
        return {"stages": []}


def _save_state(run: Path, state: dict[str, Any]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    os.replace(tmp, run / STATE_FILE)


def _record(state: dict[str, Any], name: str) -> dict[str, Any]:
    for rec in state["stages"]:
        if rec.get("name") == name:
            return rec
    rec = {"name": name}
    state["stages"].append(rec)
    return rec


def status(stage: Stage, state: dict[str, Any], upstream_ran: bool = False) -> tuple[str, str]:
    """``("done"|"resume"|"run", why)`` for a stage, from its recorded fingerprint and its outputs on disk.

    ``upstream_ran``: an earlier stage runs (again) in this invocation, so this stage's inputs change on disk
    even when no command or recipe did (e.g. a deleted ``grpo/`` folder retrains the policy: re-evaluate it).
    """
    rec = next((r for r in state["stages"] if r.get("name") == stage.name), {})
    same = rec.get("fingerprint") == stage.fingerprint
    missing = [p for p in stage.outputs if not p.is_file()]
    if stage.always:
        return "run", "always rerun (seconds)"
    if not rec:
        return "run", "not run yet" if missing else f"no record of a finished run in {STATE_FILE}"
    if upstream_ran:
        return "run", "an earlier stage ran again, so this one's inputs changed"
    if same and rec.get("status") in ("done", "skipped") and not missing:
        return "done", f"outputs complete, finished {rec.get('finished_at', '?')}"
    if same and stage.resume and rec.get("status") in ("running", "failed", "interrupted"):
        out = stage.outputs[0].parent
        if any(out.glob("checkpoint-*")):
            return "resume", f"resuming the interrupted run from its last checkpoint in {out}"
    if not same and rec.get("fingerprint"):
        return "run", "its command, recipe or an earlier stage changed since the last run"
    if missing:
        return "run", f"outputs incomplete ({', '.join(p.name for p in missing)} missing)"
    return "run", f"the last run {rec.get('status', 'did not finish')}"


def _clear_stale(stage: Stage) -> None:
    """Remove what an earlier, different run left in this stage's output folder (only inside the run dir)."""
    import shutil

    out = stage.outputs[0].parent
    old = sorted(p for pattern in stage.stale for p in out.glob(pattern))
    if old:
        print(f"    removing {len(old)} stale item(s) of an earlier run from {out}: {', '.join(p.name for p in old)}")
    for p in old:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    for k, v in OFFLINE_ENV.items():
        env.setdefault(k, v)
    env.setdefault("PYTHONUNBUFFERED", "1")  # progress appears as it happens, not when the pipe fills
    return env


def _space_command(run: Path) -> str:
    model, data = shlex.quote(str(run / "grpo")), shlex.quote(str(run / "dataset"))
    return f"WILDSCI_SPACE_MODEL={model} WILDSCI_SPACE_DATASET={data} python space/app.py"


def _check_recipes(stages: list[Stage]) -> None:
    missing = [s.recipe for s in stages if s.recipe and not Path(s.recipe).is_file()]
    if missing:
        raise UserError(
            f"recipe(s) {', '.join(missing)} not found in {Path.cwd()} -- run `wildsci demo` (or `make demo`) from "
            "the root of the wildsci-kit checkout, or restore the file with git"
        )


# -------------------------------------------------------------------------------------------------- main
def run_demo(
    run_dir: str | Path = "runs/demo",
    plan_only: bool = False,
    small: bool = False,
    recipes: dict[str, str] | None = None,
    args: dict[str, list[str]] | None = None,
) -> Path:
    """Run (or with ``plan_only`` only print) the chain into ``run_dir``; returns the report's path."""
    from wildsci.models import DEFAULT_MODEL, describe, resolve_model

    run = Path(run_dir)
    stages = plan(run, small=small, recipes=recipes, args=args)
    _check_recipes(stages)
    state = _load_state(run)
    size = "small (--small: every stage shrunk for the tests)" if small else "full"
    print(f"wildsci demo: {size} chain into {run}/, offline, on {describe(DEFAULT_MODEL)}", flush=True)

    if plan_only:
        t0 = time.perf_counter()
        path = resolve_model(DEFAULT_MODEL)
        print(f"model: {DEFAULT_MODEL} -> {path} ({time.perf_counter() - t0:.1f} s)")
        ran = False
        for i, s in enumerate(stages, 1):
            what, why = status(s, state, upstream_ran=ran)
            ran = ran or what != "done"
            verb = {"done": "skip", "resume": "resume", "run": "run"}[what]
            cmd = shlex.join(s.shown + (s.resume if what == "resume" else []))
            print(f"[{i}/{len(stages)}] {s.name}: would {verb} ({why})\n    $ {cmd}")
        print(f"then open the Space on the result:\n    $ {_space_command(run)}")
        return run / "report.md"

    run.mkdir(parents=True, exist_ok=True)
    state["small"] = small
    times: list[tuple[str, str, float]] = []
    ran = False
    for i, s in enumerate(stages, 1):
        what, why = status(s, state, upstream_ran=ran)
        ran = ran or what != "done"
        rec = _record(state, s.name)
        head = f"[{i}/{len(stages)}] {s.name}"
        if what == "done":
            print(f"\n{head}: skipped -- {why}\n    $ {shlex.join(s.shown)}", flush=True)
            times.append((s.name, "skipped", 0.0))
            rec.update(status="done", skipped_at=_now(), seconds=rec.get("seconds", 0.0))
            continue
        extra = s.resume if what == "resume" else []
        print(f"\n{head}: {why}\n    $ {shlex.join(s.shown + extra)}", flush=True)
        if what == "run":
            _clear_stale(s)
        rec.update(command=shlex.join(s.shown + extra), fingerprint=s.fingerprint, status="running", started_at=_now())
        _save_state(run, state)
        t0 = time.perf_counter()
        try:
            rc = subprocess.call(s.argv + extra, env=_child_env())
        except KeyboardInterrupt:
            rec.update(status="interrupted", seconds=time.perf_counter() - t0)
            _save_state(run, state)
            raise
        seconds = time.perf_counter() - t0
        missing = [str(p) for p in s.outputs if not p.is_file()]
        if rc != 0 or missing:
            rec.update(status="failed", seconds=seconds, exit_code=rc)
            _save_state(run, state)
            why = f"exit code {rc}" if rc else f"it did not write {', '.join(missing)}"
            raise UserError(
                f"demo stage {s.name!r} failed ({why}) after {seconds:.0f} s -- its output is above; fix the cause "
                f"and rerun `wildsci demo --run-dir {run}{' --small' if small else ''}` (finished stages are reused)"
            )
        rec.update(status="done", seconds=seconds, finished_at=_now(), exit_code=0)
        _save_state(run, state)
        times.append((s.name, "ran", seconds))
        print(f"{head}: done in {_dur(seconds)}", flush=True)

    total = sum(t for _, _, t in times)
    print("\nstage times:")
    for name, how, t in times:
        print(f"    {name:<8} {how:<8} {_dur(t)}")
    print(f"    {'total':<8} {'':<8} {_dur(total)}")
    report = run / "report.md"
    print(f"\nreport: {report}  (plots in {run / 'plots'}/)")
    print(f"open the Space on the trained model:\n    $ {_space_command(run)}")
    return report


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _dur(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
