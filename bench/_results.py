"""Shared by the bench scripts: stamp a run (command, commit, load, versions) and write its RESULTS.md section whole.

Each script owns one section (``<!-- BEGIN name -->`` ... ``<!-- END name -->``) and rewrites it entirely, so a
number in RESULTS.md is always the output of the command printed above it, on the commit printed above it. Why the
refusal to write from a dirty tree: a section stamped with a commit whose code did not produce it cannot be
reproduced. Per-question outputs go to ``bench/results/<section>/`` (small JSONL files, committed) so every accuracy
and p-value can be recomputed (``tests/test_bench_results.py`` does).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
RESULT_FILES = ROOT / "bench" / "results"
HEADER = "# Benchmark results\n\nEach section is written by the script named in it; rerun that script to refresh it.\n"
#: environment variables that change what a benchmark measures; recorded in the command when set
ENV_THAT_MATTERS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "WILDSCI_MALLOC_TUNING",
)
#: captured at import, before a script sets its own defaults, so the command shows what the caller set
START_ENV = {k: os.environ[k] for k in ENV_THAT_MATTERS if k in os.environ}
#: a 1-minute load average at or above this before a run starts means other jobs were using the cores
SHARED_LOAD = 0.5

sys.path.insert(0, str(ROOT / "src"))  # the checkout's own code, whatever is installed in the venv
from wildsci.provenance import git_sha, is_dirty, markdown_table, package_versions  # noqa: E402
from wildsci.report.stats import mcnemar_p, wilson  # noqa: E402  (one implementation for the report and benches)

__all__ = [
    "markdown_table",
    "package_versions",
    "Run",
    "start_run",
    "spread",
    "wilson",
    "mcnemar_p",
    "write_jsonl",
    "read_jsonl",
]


def machine() -> str:
    """A short description of the machine: CPU model and core count, or the GPU name."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    except ImportError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores (CPU only)"


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that reproduces this run: the environment variables that matter, then the script and its args."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        argv[0] = str(script.relative_to(ROOT))
    except ValueError:
        pass
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in START_ENV.items())
    return (env + " " if env else "") + "python " + shlex.join(argv)


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``min / median / max`` of repeated timings (one value is shown alone: no spread was measured)."""
    if len(values) == 1:
        return fmt.format(values[0]) + " (1 run)"
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _load1() -> float:
    return os.getloadavg()[0]


@dataclass
class Run:
    """One benchmark run: what it was (command, commit, versions) and what else the machine was doing (load)."""

    command: str
    commit: str
    load_before: float
    load_peak: float = 0.0
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        self.load_peak = self.load_before
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while not self._stop.wait(15):
            self.load_peak = max(self.load_peak, _load1())

    def load_note(self, own_threads: int) -> str:
        """The measured load, and whether the machine was shared: only said when the load before the run shows it."""
        after = _load1()
        cores = os.cpu_count() or 1
        note = (
            f"1-minute load average {self.load_before:.2f} before the run, {after:.2f} after, "
            f"peak {self.load_peak:.2f} (sampled every 15 s) on {cores} cores; "
            f"this run itself uses {own_threads} thread(s)."
        )
        if self.load_before >= SHARED_LOAD or self.load_peak > own_threads + SHARED_LOAD:
            note += " Other jobs were running on the machine, so timings are slower than an idle machine gives."
        else:
            note += " No other load was measured."
        return note

    def write(self, name: str, title: str, body: str, files: dict[str, list[dict]] | None = None) -> None:
        """Replace (or append) section ``name`` of RESULTS.md and its folder of per-question files, whole."""
        stamp = self.started.strftime("%Y-%m-%d %H:%M UTC")
        versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
        section = (
            f"<!-- BEGIN {name} -->\n## {title}\n\n"
            f"- machine: {machine()}\n- command: `{self.command}`\n- commit: {self.commit} (started {stamp})\n"
            f"- versions: {versions}\n"
            + (f"- per-question outputs: `bench/results/{name}/`\n" if files else "")
            + f"\n{body.strip()}\n<!-- END {name} -->"
        )
        text = RESULTS.read_text() if RESULTS.exists() else HEADER
        pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.DOTALL)
        if pattern.search(text):
            text = pattern.sub(lambda _: section, text)
        else:
            text = text.rstrip() + "\n\n" + section + "\n"
        if files is not None:
            folder = RESULT_FILES / name
            shutil.rmtree(folder, ignore_errors=True)
            for fname, rows in files.items():
                write_jsonl(folder / fname, rows)
        RESULTS.write_text(text)


def section_name(name: str) -> str:
    """Section names are markers in RESULTS.md: letters, digits, ``_`` and ``-`` only, so a tag cannot break one."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        sys.exit(f"bench: section name {name!r} may only use letters, digits, '_' and '-'")
    return name


def _dirty_besides_outputs() -> bool:
    """Uncommitted changes to tracked files other than the benchmarks' own outputs (RESULTS.md, results/)?

    Why: one benchmark's written section must not make the next benchmark on the same checkout refuse to run.
    """
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/RESULTS.md", ":!bench/results"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return out.returncode != 0 or bool(out.stdout.strip())


def start_run(allow_dirty: bool = False, write: bool = True) -> Run:
    """Stamp a run before it spends any CPU; refuse (one line) to write results from code that is not committed.

    The check covers the checkout holding this script and the ``wildsci`` that will be imported: both must be the
    same clean commit, or the stamped commit would not describe the code that produced the numbers.
    """
    import wildsci

    commit = git_sha(cwd=ROOT)
    if is_dirty(commit) and commit != "unknown" and not _dirty_besides_outputs():
        commit = commit.removesuffix("-dirty")  # only earlier benchmark outputs changed: the code is the commit's
    code = Path(wildsci.__file__).resolve()
    if write and not allow_dirty:
        if is_dirty(commit):
            sys.exit(
                f"bench: {ROOT} has uncommitted changes ({commit}); commit them, run from a clean worktree "
                "(git worktree add), or pass --allow-dirty (the section then says -dirty)"
            )
        if not code.is_relative_to(ROOT / "src"):
            sys.exit(f"bench: wildsci is imported from {code}, not from {ROOT / 'src'}; set PYTHONPATH={ROOT}/src")
    # a run that writes nothing reports no load: it need not wait for the last job's load to decay
    return Run(command=command_line(), commit=commit, load_before=settled_load() if write else _load1())


def settled_load(wait_s: float = 180.0, poll_s: float = 5.0) -> float:
    """The 1-minute load average before a run, after giving a finished job's load time to decay.

    Why: the load average lags by about a minute, so a benchmark started right after another one (``make bench``)
    would read the previous one's load and call the machine shared. Waiting up to ``wait_s`` for it to fall below
    ``SHARED_LOAD`` costs nothing on an idle machine; on a busy one the load stays and is reported as such.
    """
    load = _load1()
    deadline = time.monotonic() + wait_s
    if load >= SHARED_LOAD:
        print(f"bench: 1-minute load average {load:.2f}; waiting up to {wait_s:.0f} s for it to settle", flush=True)
    while load >= SHARED_LOAD and time.monotonic() < deadline:
        time.sleep(poll_s)
        load = _load1()
    return load
