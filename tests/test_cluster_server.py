"""A model server per builder task (``executor.server``), with the real vLLM CPU build, on the local executor.

Two shards, one after the other (two vLLM engines side by side do not fit 2 cores well): each rank starts its own
server from the recipe's command, builds its shard against it only, and stops it; then the merge writes the dataset.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from vllm_fixtures import SERVER_ARGS, vllm_python

from wildsci.serving import CPU_COMMAND, CPU_ENV

ROOT = Path(__file__).resolve().parents[1]
WILDSCI = str(Path(sys.executable).parent / "wildsci")
pytestmark = pytest.mark.slow


def test_each_task_starts_and_stops_its_own_server(embedded_model, tmp_path):
    data = yaml.safe_load((ROOT / "recipes" / "data" / "demo.yaml").read_text())
    # 6 papers (max_papers applies before the hash partition: both ranks get some); the demo's pool distractors make
    # each rank start its server twice, once per phase (generate, then the rest)
    data.update(output_dir=str(tmp_path / "out"), max_papers=6)
    data["generate"]["questions_per_chunk"] = 1
    data["generator"].pop("batch_size", None)
    data["generator"].update(backend="openai", base_url=None, model=embedded_model, guided_decoding="vllm")
    data["vote"]["num_votes"] = 2
    data["executor"] = {
        "kind": "local",
        "tasks": 2,
        "workers": 1,
        "server": {
            "command": [*CPU_COMMAND, *SERVER_ARGS],
            "python": vllm_python(),
            "env": {**CPU_ENV, "HF_HUB_OFFLINE": "1"},
            "startup_timeout": 600,
        },
    }
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = subprocess.run([WILDSCI, "build", str(recipe)], capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "out" / ".wildsci_build"
    ports = set()
    for rank in (0, 1):
        assert (root / "executor" / "generate" / "servers" / f"{rank:05d}.log").is_file()
        server_log = (root / "executor" / "build" / "servers" / f"{rank:05d}.log").read_text()
        assert f"--served-model-name {embedded_model}" in server_log.splitlines()[0]
        ports.add(int(re.search(r"--port (\d+)", server_log).group(1)))
        rank_log = (root / "executor" / "build" / "ranks" / f"{rank:05d}.log").read_text()
        assert "model server ready at" in rank_log
        shard = json.loads((root / "shards" / f"{rank:05d}-of-00002" / "shard.json").read_text())
        assert shard["llm_calls"]["made"] > 0  # the shard's questions came from its own server
    assert len(ports) == 2
    for port in ports:  # each server was stopped with its rank
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert report["llm_calls"] is not None and (tmp_path / "out" / "README.md").is_file()
