"""Test helpers shared by several test modules (the one place for them; test modules never import each other).

- :func:`make_rows` / :func:`make_wildsci_dataset`: a small, schema-valid WildSci-format dataset. Questions are
  simple templated facts (one per subdomain) so that GRPO, eval and the Space can be tested without waiting for a
  real build; the builder's own tests use real papers.
- :class:`FakeHfApi`: the Hub at its boundary (``huggingface_hub.HfApi``), recording what a push would send.
- :func:`assert_png_nontrivial`: a figure that decodes and is not blank.
- :func:`run_cli`: the public ``wildsci`` command in a child process; :func:`parquet_bytes`: a dataset's files.
"""

from __future__ import annotations

import fnmatch
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wildsci.answers import LETTERS
from wildsci.dataset_io import save_wildsci
from wildsci.schema import options_dict, question_id, voting_type
from wildsci.taxonomy import load_taxonomy


def make_rows(n: int, seed: int = 0, prefix: str = "paper") -> list[dict]:
    rng = random.Random(seed)
    tax = load_taxonomy()
    rows = []
    for i in range(n):
        sub = tax.subdomains[i % len(tax.subdomains)]
        correct = f"It is studied in {sub.name.lower()}"
        distractors = [f"It is studied only in field number {k} of {sub.discipline.lower()}" for k in range(9)]
        options = distractors[:]
        gold_idx = rng.randrange(10)
        options.insert(gold_idx, correct)
        gold = LETTERS[gold_idx]
        votes = [gold if rng.random() < 0.6 else rng.choice(LETTERS) for _ in range(8)]
        q = f"Question {i}: which statement is true of the topic '{sub.description.rstrip('.')}'?"
        pid = f"{prefix}-{i // 2}"
        rows.append(
            {
                "paper_id": pid,
                "question": q,
                "options": options_dict(options),
                "answer": gold,
                "rationale": f"The topic belongs to {sub.name}.",
                "voting_type": voting_type(votes, gold),
                "voting_answers": votes,
                "discipline": sub.discipline,
                "nc_domain": sub.nc_domain,
                "nc_subdomain": sub.name,
                "question_id": question_id(pid, q),
                "source_license": "CC0-1.0",
                "generator_model": "fixture",
                "recipe_hash": "fixture",
            }
        )
    return rows


def make_wildsci_dataset(out_dir: str | Path, n_train: int = 32, n_test: int = 12, seed: int = 0) -> Path:
    """Write train/validation/test splits (papers never shared between splits) in the Hub layout."""
    out = Path(out_dir)
    save_wildsci(
        {
            "train": make_rows(n_train, seed, "train-paper"),
            "validation": make_rows(max(2, n_test // 2), seed + 1, "val-paper"),
            "test": make_rows(n_test, seed + 2, "test-paper"),
        },
        out,
    )
    return out


class FakeHfApi:
    """Records the calls the real ``HfApi`` would make, and the files an upload would send.

    Patch it in at the boundary only (``monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)``); set
    ``FakeHfApi.fail`` to an exception to make ``upload_folder`` raise it. Call :meth:`reset` in each test.
    """

    calls: list[tuple[str, dict[str, Any]]] = []
    init_kwargs: list[dict[str, Any]] = []
    fail: Exception | None = None
    #: where ``create_commit`` writes the files it was given (None: record only)
    commit_dir: Path | None = None

    @classmethod
    def reset(cls, commit_dir: Path | None = None) -> None:
        cls.calls, cls.init_kwargs, cls.fail, cls.commit_dir = [], [], None, commit_dir

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        FakeHfApi.init_kwargs.append(kwargs)

    def create_repo(self, repo_id: str, **kw: Any) -> str:
        FakeHfApi.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        kind = kw.get("repo_type") or "model"
        return f"https://huggingface.co/{'' if kind == 'model' else kind + 's/'}{repo_id}"

    def upload_folder(self, **kw: Any) -> Any:
        root = Path(kw["folder_path"])
        allow, ignore = kw.get("allow_patterns"), kw.get("ignore_patterns") or []
        allow = [allow] if isinstance(allow, str) else allow
        ignore = [ignore] if isinstance(ignore, str) else ignore
        files = []
        for p in sorted(root.rglob("*")):
            rel = str(p.relative_to(root))
            if not p.is_file() or (allow and not any(fnmatch.fnmatch(rel, pat) for pat in allow)):
                continue
            if any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(rel.split("/")[0], pat) for pat in ignore):
                continue
            files.append(rel)
        FakeHfApi.calls.append(("upload_folder", {**kw, "files": files}))
        if FakeHfApi.fail is not None:
            raise FakeHfApi.fail

        class Info:
            commit_url = f"https://huggingface.co/{kw['repo_id']}/commit/abc"

        return Info()

    def create_commit(self, repo_id: str, operations: list[Any], **kw: Any) -> Any:
        paths = [op.path_in_repo for op in operations]
        FakeHfApi.calls.append(("create_commit", {"repo_id": repo_id, "paths": paths, **kw}))
        for op in operations if FakeHfApi.commit_dir is not None else []:
            dest = FakeHfApi.commit_dir / op.path_in_repo
            dest.parent.mkdir(parents=True, exist_ok=True)
            data = op.path_or_fileobj
            dest.write_bytes(data if isinstance(data, bytes) else Path(data).read_bytes())

    def add_space_variable(self, repo_id: str, key: str, value: str, **kw: Any) -> None:
        FakeHfApi.calls.append(("add_space_variable", {"repo_id": repo_id, "key": key, "value": value, **kw}))

    def request_space_hardware(self, repo_id: str, hardware: str, **kw: Any) -> None:
        FakeHfApi.calls.append(("request_space_hardware", {"repo_id": repo_id, "hardware": hardware, **kw}))


def assert_png_nontrivial(path: Path) -> None:
    """The PNG decodes, has a real size, and is not blank: many colours and real pixel variation."""
    with Image.open(path) as im:
        im.load()
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert rgb.shape[0] >= 200 and rgb.shape[1] >= 300, f"{path.name}: tiny image {rgb.shape}"
    assert rgb.std() > 10, f"{path.name}: nearly uniform image (std {rgb.std():.1f})"
    colours = np.unique(rgb.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 20, f"{path.name}: only {len(colours)} colours"
    non_white = (rgb.min(axis=2) < 200).mean()
    assert non_white > 0.01, f"{path.name}: {non_white:.2%} of pixels are drawn on"


def run_cli(
    *args: str, cwd: Path | None = None, check: bool = True, timeout: int = 300
) -> subprocess.CompletedProcess:
    """``wildsci ARGS`` in a child process, offline; with ``check``, a non-zero exit fails with its stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "wildsci.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def parquet_bytes(out: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted((out / "data").glob("*.parquet"))}
