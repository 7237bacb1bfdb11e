"""``wildsci.serving.VllmServer``: a real vLLM server's life cycle, and how a bad or stalled start is reported.

The happy path runs on the session's real vLLM CPU server (``vllm_fixtures``). The failure paths (a command that
exits at once, a start that stalls, a process that leaves children behind, Ctrl-C while waiting) use small
Python processes in place of vLLM: what is under test is the manager, and each of them fails exactly the way a
broken vLLM install, a hung model load or a forked engine does, in a second rather than a minute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from openai import OpenAI

from wildsci.serving import ServerError, VllmServer, metric_total, render_command, served_models

#: A stand-in server (no braces: the command is a template): answers /health with 200 and forks a child that
#: would outlive a plain kill of the leader (its pid goes to the file named by the second argument).
HEALTHY_WITH_CHILD = textwrap.dedent(
    """
    import http.server, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    open(sys.argv[2], "w").write(str(child.pid))
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404); self.end_headers()
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_real_server_serves_the_model_and_counts_requests(vllm_server, embedded_model):
    assert vllm_server.alive()
    assert served_models(vllm_server.base_url) == [embedded_model]
    before = metric_total(vllm_server.base_url, "vllm:request_success_total")
    client = OpenAI(base_url=vllm_server.base_url, api_key="EMPTY")
    reply = client.chat.completions.create(
        model=embedded_model,
        messages=[{"role": "user", "content": "Name one planet."}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.choices[0].message.content and reply.usage.completion_tokens <= 8
    assert metric_total(vllm_server.base_url, "vllm:request_success_total") == before + 1
    assert vllm_server.log_path.read_text().startswith("$ ")  # the command heads the server's own log


def test_a_command_that_exits_fails_in_one_line_with_its_last_words(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('loading weights'); print('error: no such model'); sys.exit(3)"]
    server = VllmServer(model="m", command=cmd, log_path=tmp_path / "server.log", progress=None)
    with pytest.raises(ServerError) as e:
        server.start()
    msg = str(e.value)
    assert "\n" not in msg and "exited with status 3" in msg and "error: no such model" in msg
    assert str(tmp_path / "server.log") in msg


def test_a_missing_program_is_one_line(tmp_path):
    server = VllmServer(model="m", command="no-such-vllm serve {model}", log_path=tmp_path / "s.log", progress=None)
    with pytest.raises(ServerError, match="cannot start the server command 'no-such-vllm'.*server_command"):
        server.start()


#: Long enough for the stand-in to start Python and print its line on a heavily loaded machine (4 s left little
#: margin), so that the timeout, not the machine's speed, decides what the error quotes.
STALL_TIMEOUT = 15


def test_a_stalled_start_is_reported_while_it_stalls_then_stopped(tmp_path):
    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); print('loading', flush=True)"
    script += "; time.sleep(300)"
    lines: list[str] = []
    server = VllmServer(
        model="m",
        command=[sys.executable, "-c", script],
        startup_timeout=STALL_TIMEOUT,
        log_path=tmp_path / "s.log",
        progress=lines.append,
        progress_every=1.0,
    )
    with pytest.raises(ServerError, match=rf"not healthy after {STALL_TIMEOUT} s \(last log line: loading\)"):
        server.start()
    assert any("no new output for" in ln and ln.endswith(": loading") for ln in lines), lines
    assert _wait_gone(int(pid_file.read_text()))


def test_stop_reaches_the_whole_process_group(tmp_path):
    pids = tmp_path / "child.pid"
    cmd = [sys.executable, "-c", HEALTHY_WITH_CHILD, "{port}", str(pids)]
    with VllmServer(model="m", command=cmd, log_path=tmp_path / "s.log", progress=None, stop_timeout=5) as server:
        leader = server.proc.pid
        child = int(pids.read_text())
        assert _alive(child)
        with pytest.raises(ServerError, match="already answering HTTP"):  # a second server on the same port
            VllmServer(model="m", command=cmd, port=server.port, progress=None).start()
    assert _wait_gone(leader) and _wait_gone(child)


def test_ctrl_c_while_waiting_stops_the_server_in_seconds(tmp_path):
    pid_file = tmp_path / "pid"
    fake = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    driver = textwrap.dedent(
        f"""
        import signal, sys
        from wildsci.serving import VllmServer
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job may inherit SIGINT ignored
        with VllmServer(model="m", command=[sys.executable, "-c", {fake!r}], log_path={str(tmp_path / "s.log")!r}):
            pass
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", driver], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not pid_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid_file.is_file(), "the stand-in server never started"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert time.monotonic() - t0 < 20 and proc.returncode != 0
    assert _wait_gone(int(pid_file.read_text()))


def test_command_placeholders_and_a_key_kept_out_of_the_log(tmp_path):
    # placeholders are filled after splitting: a path with a space stays one argument
    assert render_command("serve {model} --port {port}", model="/m x", port=8) == ["serve", "/m x", "--port", "8"]
    with pytest.raises(ServerError, match=r"bad placeholder 'gpu'.*known: \{model\}"):
        render_command(["vllm", "serve", "{gpu}"], model="m")
    key = "sk-live-0123456789abcdef"
    cmd = [sys.executable, "-c", "import sys; print('args:', sys.argv[1:]); sys.exit(1)", "--api-key", key]
    with pytest.raises(ServerError) as e:
        VllmServer(model="m", command=cmd, log_path=tmp_path / "s.log", progress=None).start()
    first = (tmp_path / "s.log").read_text().splitlines()[0]
    assert key not in first and "--api-key <redacted>" in first  # our header line; the key is on the command line
    assert key not in str(e.value)  # the server's last words quoted in the error
