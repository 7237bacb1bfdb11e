"""The GRPO memory plan (``wildsci.grpo.memory``): its terms against what torch allocates, its verdict through the
public dry run.

Tolerance: on the CPU, the plan's peak (less the weights, resident before training) is at most 30 % below and at
most 60 % above the measured high-water mark of the resident set over two real GRPO steps
(tests/grpo_memory_probe.py), with and without gradient checkpointing; the KV-cache term is exact to one token.
Why that wide: the measured high-water mark itself moves between identical runs on these VMs (planned/measured
was 0.79 and 1.32 in two runs where earlier runs gave 0.8-1.25: what the allocator keeps resident varies), so a
tighter bound would test the allocator, not the plan.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from wildsci_fixtures import make_wildsci_dataset

from wildsci.grpo.memory import GIB, ModelShape, RunShape, estimate
from wildsci.grpo.train import main

TESTS = Path(__file__).resolve().parent
LOW, HIGH = 0.70, 1.60  # planned / measured


def _run(**over) -> RunShape:
    base = dict(
        weight_bytes=4, autocast_bytes=2, micro_batch=4, generation_batch=16, prompt_tokens=100, completion_tokens=50,
        gradient_checkpointing=True, beta=0.0, vllm_share=None, vllm_sleeps=False, scores_materialized=False,
    )  # fmt: skip
    return RunShape(**{**base, **over})


def test_kv_cache_row_is_what_generate_allocates_in_the_weights_dtype(tiny_model):
    """fp32 weights under bf16 autocast: transformers' cache is fp32 (the plan counts the weights' bytes), and its
    size is generation batch x (prompt + completion) tokens x layers x 2 x kv width, to one token."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    batch, prompt, new = 6, 20, 9
    ids = torch.randint(5, 100, (batch, prompt))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False,
            return_dict_in_generate=True, pad_token_id=0,
        )  # fmt: skip
    tensors = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
    assert {t.dtype for t in tensors} == {torch.float32}
    allocated = sum(t.numel() * t.element_size() for t in tensors)
    shape = ModelShape.from_config(AutoConfig.from_pretrained(tiny_model))
    plan = estimate(
        shape, _run(generation_batch=batch, prompt_tokens=prompt, completion_tokens=new), 1, "none", "x", 1
    )
    kv = dict((w, g) for w, g, _ in plan.rows)["generation KV cache"] * GIB
    per_token = allocated / (prompt + new - 1)  # the last generated token is never fed back, so never cached
    assert kv == pytest.approx(allocated + per_token)


def test_sharding_divides_what_it_shards():
    shape = ModelShape(params=8_000, layers=2, heads=4, hidden=64, intermediate=128, kv_heads=2, head_dim=16, vocab=10)
    rows = {z: dict((w, g * GIB) for w, g, _ in estimate(shape, _run(weight_bytes=2), 8, z, "x", 80).rows) for z in
            ("none", "zero2", "zero3")}  # fmt: skip
    assert rows["none"]["weights"] == rows["zero2"]["weights"] == 8 * rows["zero3"]["weights"] == 16_000
    assert rows["none"]["optimizer state"] == 2 * 2 * 8_000  # AdamW m, v in bf16: no fp32 copy (refused elsewhere)
    assert rows["zero2"]["optimizer state"] == rows["zero3"]["optimizer state"] == 12 * 8_000 / 8
    assert rows["zero2"]["gradients"] == rows["zero3"]["gradients"] == 2 * 8_000 / 8


@pytest.fixture(scope="module")
def mid_model(tmp_path_factory, tiny_model) -> Path:
    """tiny:qwen2's tokenizer under a 16M-parameter Qwen2, so the terms the plan counts dominate the process's own."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    out = tmp_path_factory.mktemp("mid") / "model"
    base = AutoConfig.from_pretrained(tiny_model)
    config = Qwen2Config(
        vocab_size=base.vocab_size, hidden_size=512, intermediate_size=2048, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True,
        bos_token_id=base.bos_token_id, eos_token_id=base.eos_token_id,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [False, True], ids=["no-checkpointing", "checkpointing"])
def test_plan_is_within_tolerance_of_the_measured_peak(tmp_path, mid_model, checkpointing):
    data = make_wildsci_dataset(tmp_path / "ds", n_train=16, n_test=4)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model_name_or_path": str(mid_model), "dataset_name": str(data), "output_dir": str(tmp_path / "out"),
        "reward_funcs": ["accuracy", "format"], "per_device_train_batch_size": 8, "num_generations": 4,
        "max_completion_length": 32, "max_steps": 2, "save_strategy": "no", "learning_rate": 1e-4,
        "use_cpu": True, "bf16": False, "dtype": "float32", "gradient_checkpointing": checkpointing,
        "report_to": "none", "seed": 0,
    }))  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    got = subprocess.run(
        [sys.executable, str(TESTS / "grpo_memory_probe.py"), str(tmp_path / "m.json"), "--", "--config", str(recipe)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr[-3000:]
    result = json.loads((tmp_path / "m.json").read_text())
    ratio = result["planned_gib"] / result["measured_gib"]
    assert LOW <= ratio <= HIGH, f"planned/measured {ratio:.2f}\n{result['table']}\nmeasured {result['measured_gib']}"


def _recipe(tmp_path: Path, model: str, data: Path) -> Path:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model_name_or_path": model, "dataset_name": str(data), "output_dir": str(tmp_path / "out"),
        "reward_funcs": ["accuracy", "format"], "per_device_train_batch_size": 16, "gradient_accumulation_steps": 2,
        "num_generations": 4, "max_completion_length": 64, "max_steps": 2, "report_to": "none",
        "use_cpu": True, "bf16": False,
    }))  # fmt: skip
    return recipe


@pytest.mark.slow
def test_dry_run_prints_the_plan_through_accelerate_and_stops_before_training(tmp_path, tiny_model):
    data = make_wildsci_dataset(tmp_path / "ds", n_train=8, n_test=4)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
    cmd += ["--dynamo_backend", "no", "-m", "wildsci.grpo", "--config", str(_recipe(tmp_path, "tiny:qwen2", data))]
    got = subprocess.run([*cmd, "--dry-run", "--plan_device", "h100-80gb"], env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert got.returncode == 0, got.stderr[-3000:]
    assert "memory plan per device: h100-80gb (79.6 GiB), 1 process(es), sharding none" in got.stdout
    assert "generation KV cache" in got.stdout and "fits in" in got.stdout
    assert "memory plan: 8 prompts" in got.stderr  # from the dataset's real prompts
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_a_plan_that_does_not_fit_is_refused_naming_the_key(tmp_path, capsys, tiny_model):
    data = make_wildsci_dataset(tmp_path / "ds", n_train=8, n_test=4)
    recipe = _recipe(tmp_path, "tiny:qwen2", data)
    assert main(["--config", str(recipe), "--dry-run", "--plan_device", "0.001gib"]) == 2
    captured = capsys.readouterr()
    line = captured.err.strip().splitlines()[-1]
    assert line.startswith("wildsci.grpo: error: ") and "the memory plan needs" in line
    keys = ("steps_per_generation", "max_completion_length", "gradient_checkpointing", "per_device_train_batch_size")
    assert any(k in line.rsplit(" -- ", 1)[1] for k in (*keys, "zero2.yaml")), line
    assert "DOES NOT FIT" in captured.out
