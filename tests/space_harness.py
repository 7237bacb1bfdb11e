"""Helpers shared by the Space tests: start the Space as users do, and a policy that answers a known letter.

- :func:`start_space` runs ``python space/app.py`` on a free loopback port; :func:`shared_space` starts one
  such server for the whole test session (the API, browser and load tests share it: starting the app costs
  more than all their requests together) and stops it when the session ends. It serves the tiny random
  Qwen2 as base model and a copy of it in a temporary folder as "finetuned" model (two references, so
  side-by-side mode really runs two models) and a fixture dataset.
- :class:`FixedAnswerModel` is the tiny Qwen2 with its logits forced to a known reply: the real prompt,
  ``generate`` loop, streamer and parser run, and the verdict on the page can be checked against a letter the
  test knows, which a random model (it answers whitespace) never gives. It is put in the Space's model
  registry in-process (``models.register``); nothing in the app knows about it. The :func:`known_answers`
  fixture serves the app in-process with two of them.
- :func:`space_module` imports ``space/<name>.py`` the way a Space does: with ``space/`` on ``sys.path``.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "space"
APP = SPACE / "app.py"
FAKE_TOKEN = "hf_wildsciTestTokenMustNeverBeShown"
SHARED_CONCURRENCY = 4


def space_module(name: str):
    """``space/<name>.py`` imported as the top-level module ``name``, as ``python space/app.py`` imports it."""
    if str(SPACE) not in sys.path:
        sys.path.insert(0, str(SPACE))
    mod = importlib.import_module(name)
    assert Path(mod.__file__).resolve().parent == SPACE, f"{name} was imported from {mod.__file__}, not space/"
    return mod


@dataclass
class SpaceServer:
    url: str
    dataset: Path
    finetuned: str
    base: str
    proc: subprocess.Popen
    log: Path
    startup_s: float

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen | None, log: Path | None, timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or does not answer in time."""
    t0 = time.perf_counter()
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the Space exited with {proc.returncode}:\n{log.read_text()[-3000:] if log else ''}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.5)


def start_space(workdir: Path, extra_env: dict[str, str] | None = None, timeout: float = 150) -> SpaceServer:
    """Build the fixture dataset and models in ``workdir``, launch the app, wait until it answers HTTP."""
    from wildsci_fixtures import make_wildsci_dataset

    from wildsci.models import resolve_model

    workdir = Path(workdir)
    dataset = make_wildsci_dataset(workdir / "dataset")
    base = resolve_model("tiny:qwen2")
    finetuned = workdir / "tiny-finetuned"
    if not finetuned.exists():
        shutil.copytree(base, finetuned)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WILDSCI_SPACE_")}
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_TOKEN": FAKE_TOKEN,
            "WILDSCI_SPACE_MODEL": str(finetuned),
            "WILDSCI_SPACE_BASE_MODEL": "tiny:qwen2",
            "WILDSCI_SPACE_DATASET": str(dataset),
            "WILDSCI_SPACE_HOST": "127.0.0.1",
            "WILDSCI_SPACE_PORT": str(port),
            # the random tiny model decodes greedily into whitespace; sampling gives visible text to check
            "WILDSCI_SPACE_TEMPERATURE": "1.0",
            "WILDSCI_SPACE_MAX_NEW_TOKENS": "24",
            **(extra_env or {}),
        }
    )
    log = workdir / f"space-{port}.log"
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(APP)], cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    server = SpaceServer(url, dataset, str(finetuned), "tiny:qwen2", proc, log, 0.0)
    try:
        wait_for_http(url + "/config", proc, log, timeout)
    except RuntimeError:
        server.stop()
        raise
    server.startup_s = time.perf_counter() - t0
    return server


_SHARED: SpaceServer | None = None


def shared_space() -> SpaceServer:
    """One server per test session, with a concurrency limit of ``SHARED_CONCURRENCY`` generations."""
    global _SHARED
    if _SHARED is None or _SHARED.proc.poll() is not None:
        workdir = Path(tempfile.mkdtemp(prefix="wildsci-space-"))
        _SHARED = start_space(workdir, {"WILDSCI_SPACE_CONCURRENCY": str(SHARED_CONCURRENCY)})
        atexit.register(_SHARED.stop)
        atexit.register(shutil.rmtree, workdir, True)
    return _SHARED


@pytest.fixture(scope="module")
def server() -> SpaceServer:
    """The shared ``python space/app.py`` server (import this fixture into a test module to use it)."""
    return shared_space()


def fixed_answer_model(ref: str, reply: str):
    """A :class:`models.ChatModel` named ``ref``: the tiny Qwen2, every logit but the next token of ``reply``
    set to -inf, then end-of-sequence. Register it with ``models.register`` before building the app."""
    models = space_module("models")

    class FixedAnswerModel(models.ChatModel):
        def resolve(self) -> str:
            from wildsci.models import resolve_model

            return resolve_model("tiny:qwen2")

        def generate(self, input_ids, attention_mask, max_new_tokens, temperature, **kwargs):
            import torch
            from transformers import LogitsProcessor, LogitsProcessorList

            target = self.tokenizer(reply, add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id]
            start = input_ids.shape[1]

            class Force(LogitsProcessor):
                def __call__(self, ids, scores):
                    step = min(ids.shape[1] - start, len(target) - 1)
                    forced = torch.full_like(scores, float("-inf"))
                    forced[:, target[step]] = 0.0
                    return forced

            self.model.generation_config.eos_token_id = self.tokenizer.eos_token_id
            force = LogitsProcessorList([Force()])
            return super().generate(
                input_ids, attention_mask, max_new_tokens, temperature, logits_processor=force, **kwargs
            )

    return FixedAnswerModel(ref)


@dataclass
class KnownAnswers:
    url: str
    test: Any  # the test split of the served dataset
    row: int  # the row whose gold letter the finetuned side answers
    letter: str


@pytest.fixture(scope="module")
def known_answers(tmp_path_factory) -> Iterator[KnownAnswers]:
    """The app in-process, served on loopback: the finetuned side always replies "... Answer: <letter>", the
    base side a sentence without a letter. ``letter`` is the gold of the row with the latest gold letter, so
    that the same reply is out of range on a two-option question."""
    from wildsci_fixtures import make_wildsci_dataset

    from wildsci.dataset_io import load_wildsci

    app, models = space_module("app"), space_module("models")
    dataset = make_wildsci_dataset(tmp_path_factory.mktemp("known") / "dataset")
    test = load_wildsci(str(dataset), split="test")
    row = max(range(len(test)), key=lambda i: test[i]["answer"])
    letter = test[row]["answer"]
    assert letter > "B", "the fixture dataset changed: pick a row whose gold letter is beyond B"
    models.register(fixed_answer_model("fixed:answers-gold", f"The evidence points one way. Answer: {letter}"))
    models.register(fixed_answer_model("fixed:no-letter", "I cannot tell which statement is true."))
    cfg = app.SpaceConfig(
        model="fixed:answers-gold", base_model="fixed:no-letter", dataset=str(dataset), port=free_port()
    )
    demo = app.build_app(cfg)
    app.launch(demo, cfg, prevent_thread_lock=True, quiet=True)
    try:
        wait_for_http(f"http://127.0.0.1:{cfg.port}/config", None, None, 60)
        yield KnownAnswers(f"http://127.0.0.1:{cfg.port}", test, row, letter)
    finally:
        demo.close()
