"""Start the Space as users do (``python space/app.py``) on a free loopback port, for the Space tests.

:func:`shared_space` starts one server for the whole test session (the API, browser and load tests share it:
starting the app costs more than all their requests together) and stops it when the session ends.

The server gets the tiny random Qwen2 as base model, a copy of it in a temporary folder as "finetuned" model
(two different references, so side-by-side mode really runs two models) and a fixture dataset. A fake
``HF_TOKEN`` is set so that tests can check it never reaches the page or the API.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "space" / "app.py"
FAKE_TOKEN = "hf_wildsciTestTokenMustNeverBeShown"
SHARED_CONCURRENCY = 4


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
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the Space exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/config", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.perf_counter() - t0 > timeout:
            server.stop()
            raise RuntimeError(f"the Space did not answer within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
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
