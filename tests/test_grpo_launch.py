"""Every accelerate config of recipes/accelerate/ launched with TWO processes through the public command
(``accelerate launch --config_file ... --num_processes 2 -m wildsci.grpo``), on the CPU.

- ``ddp.yaml``: really two gloo ranks training together: each rank logs what accelerate set up (MULTI_CPU, 2
  processes), the metrics count each completion once (a step's completions over both ranks, not one rank's
  twice), and the weights move.
- ``fsdp.yaml``: accelerate 1.15 takes FSDP (and DeepSpeed) only on a GPU; with ``use_cpu`` its state is
  MULTI_CPU, i.e. plain DDP (``accelerate/state.py``). What the test exercises: the config file's launch (two
  ranks started with FSDP requested in their environment) and the kit's refusal in both ranks, in one line,
  before a model loads. It does not exercise sharding: accelerate does not shard on a CPU.
- ``zero2.yaml``, ``zero3.yaml``: accelerate's DeepSpeed launcher needs DeepSpeed, which is not in the CPU install
  (docs/grpo.md says what its CPU path does); the refusal each rank would give is tested in process.
- ``accelerate launch --cpu --num_processes 2`` starts one process: refused, not run as one.
The random tiny Qwen2, one step, 8-token completions: the smallest run that still trains.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from wildsci_fixtures import make_wildsci_dataset

from wildsci.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def recipe(tmp: Path, data: Path, **over) -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(
        yaml.safe_dump({
            "model_name_or_path": "tiny:qwen2", "dataset_name": str(data), "output_dir": str(tmp / "out"),
            "reward_funcs": ["accuracy", "format"], "per_device_train_batch_size": 4, "num_generations": 4,
            "max_completion_length": 8, "max_steps": 1, "save_strategy": "no", "logging_steps": 1,
            "learning_rate": 1e-2, "use_cpu": True, "bf16": False, "gradient_checkpointing": False,
            "report_to": "none", "seed": 0, **over,
        })
    )  # fmt: skip
    return path


def launch(tmp: Path, launcher: list[str], args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp), env.get("PYTHONPATH", "")])
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", *launcher, "--main_process_port", "0", "-m", "wildsci.grpo", *args]
    return subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=900)


@pytest.fixture
def data(tmp_path):
    return make_wildsci_dataset(tmp_path / "ds", n_train=8, n_test=4)


@pytest.mark.slow
def test_ddp_config_trains_with_two_ranks_counting_each_completion_once(tmp_path, data, tiny_model):
    # a random model never answers: a shaping reward (letter density) gives the groups variance, so a gradient
    (tmp_path / "shaping.py").write_text(
        "def density(completions, **kw):\n"
        "    texts = [c[0]['content'] if isinstance(c, list) else c for c in completions]\n"
        "    return [sum(ch in 'ABCDEFGHIJ' for ch in t) / max(1, len(t)) for t in texts]\n"
    )
    rewards = {"reward_funcs": ["accuracy", "shaping:density"], "reward_weights": [1.0, 1.0]}
    config = ["--config_file", str(ROOT / "recipes/accelerate/ddp.yaml"), "--num_processes", "2"]
    got = launch(tmp_path, config, ["--config", str(recipe(tmp_path, data, **rewards))])
    assert got.returncode == 0, got.stderr[-4000:]
    for rank in (0, 1):  # each process says what accelerate made of it: two ranks, one training group
        assert f"rank {rank}/2: launched as MULTI_CPU, 2 process(es), device cpu" in got.stderr
    (rec,) = read_metrics(tmp_path / "out" / "wildsci_metrics.jsonl")
    # 4 completions per rank x 2 ranks, gathered once: 8. One rank's batch counted twice would also make 8, so both
    # ranks' prompts must be there: each rank generates for its own prompt (one discipline each in the fixture).
    assert sum(d["n"] for d in rec["per_discipline"].values()) == 8
    assert sorted(d["n"] for d in rec["per_discipline"].values()) == [4, 4], rec["per_discipline"]
    from safetensors.torch import load_file

    before, after = load_file(f"{tiny_model}/model.safetensors"), load_file(str(tmp_path / "out/model.safetensors"))
    assert any(not (after[k] == before[k]).all() for k in after)  # one optimizer step over both ranks' batches


@pytest.mark.slow
def test_fsdp_config_on_the_cpu_is_refused_in_both_ranks(tmp_path, data):
    config = ["--config_file", str(ROOT / "recipes/accelerate/fsdp.yaml"), "--num_processes", "2"]
    got = launch(tmp_path, config, ["--config", str(recipe(tmp_path, data))])
    assert got.returncode != 0
    lines = [x for x in got.stderr.splitlines() if x.startswith("wildsci.grpo: error:")]
    assert len(lines) == 2, got.stderr[-4000:]  # both ranks ran and refused
    assert all("asks for FSDP (" in x and "would run plain DDP" in x for x in lines), lines
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage", ["2", "3"])
def test_deepspeed_requested_on_the_cpu_is_refused(tmp_path, data, capsys, monkeypatch, stage):
    """What accelerate's DeepSpeed launcher hands each rank (zero2.yaml / zero3.yaml), in process: DeepSpeed is
    not in the CPU install, so its launcher cannot start here (docs/grpo.md, "Several GPUs", says what was tried)."""
    from wildsci.grpo.train import main

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", stage)
    assert main(["--config", str(recipe(tmp_path, data))]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the accelerate config asks for DeepSpeed ZeRO" in line and "only on a GPU" in line


@pytest.mark.slow
def test_cpu_flag_with_two_processes_is_refused_not_run_as_one(tmp_path, data):
    got = launch(tmp_path, ["--cpu", "--num_processes", "2"], ["--config", str(recipe(tmp_path, data))])
    assert got.returncode != 0
    (line,) = [x for x in got.stderr.splitlines() if x.startswith("wildsci.grpo: error:")]
    assert "--num_processes > 1 starts ONE process" in line and "--multi_gpu --num_processes N" in line


HANG = """
import os, time
from pathlib import Path

calls = 0


def reward(completions, **kw):
    global calls
    calls += 1
    if calls == 2:  # step 2: checkpoint-1 is on disk; say so and wait for Ctrl-C
        Path(os.environ["HANG_MARKER"]).write_text("ready")
        time.sleep(600)
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch in "ABCDEFGHIJ" for ch in t) / max(1, len(t)) for t in texts]
"""


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["accelerate", "python"])
def test_ctrl_c_prints_the_kits_line_and_leaves_no_stock_card(tmp_path, data, tiny_model, launcher):
    """Ctrl-C (SIGINT to the launcher's process group, as a terminal sends it) during step 2 of a run that saved
    checkpoint-1: the kit's one "interrupted" line and no TRL stock model card ("fine-tuned version of [None]")
    anywhere in output_dir. `python -m wildsci.grpo` exits 130 with that line alone; under `accelerate launch`
    the launcher (accelerate's process, no kit code in it) adds its own traceback and exit code (docs/
    troubleshooting.md). The wait is on a marker file, not a clock, so the machine's load does not matter."""
    import signal
    import time

    (tmp_path / "hang.py").write_text(HANG)
    over = {"reward_funcs": ["hang:reward"], "max_steps": 3, "save_strategy": "steps", "save_steps": 1}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env |= {"PYTHONPATH": os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])}
    env["HANG_MARKER"] = str(tmp_path / "marker")
    if launcher == "accelerate":
        cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", "1"]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "wildsci.grpo"]
    else:
        cmd = [sys.executable, "-m", "wildsci.grpo"]
    cmd += ["--config", str(recipe(tmp_path, data, **over))]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not (tmp_path / "marker").exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never reached step 2"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 if launcher == "python" else proc.returncode != 0
    assert "wildsci.grpo: interrupted -- rerun with --resume_from_checkpoint to continue" in err
    if launcher == "python":
        assert "Traceback" not in err, err[-3000:]
    assert (tmp_path / "out" / "checkpoint-1").is_dir()
    cards = [p for p in (tmp_path / "out").rglob("README.md") if "fine-tuned version of" in p.read_text()]
    assert cards == []


def test_cuda_problem_names_the_reason(monkeypatch):
    """The three reasons CUDA cannot be used, each named (the fix differs): torch without CUDA, a driver too old for
    torch's CUDA (torch's own warning, kept), no device visible."""
    import warnings

    import torch

    from wildsci.grpo.launch import cuda_problem

    monkeypatch.setattr(torch.version, "cuda", None)
    assert "is built without CUDA" in cuda_problem()
    monkeypatch.setattr(torch.version, "cuda", "13.0")

    def old_driver() -> bool:
        warnings.warn("CUDA initialization: The NVIDIA driver on your system is too old (found 12040).", stacklevel=1)
        return False

    monkeypatch.setattr(torch.cuda, "is_available", old_driver)
    assert "(CUDA 13.0) cannot use the driver: CUDA initialization: The NVIDIA driver" in cuda_problem()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "CUDA_VISIBLE_DEVICES is empty" in cuda_problem()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert "no CUDA device found" in cuda_problem()
