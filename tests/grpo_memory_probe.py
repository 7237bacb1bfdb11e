"""Measure a GRPO run's peak memory on the CPU beside the kit's plan for it (run by tests/test_grpo_memory.py).

    python tests/grpo_memory_probe.py OUT.json -- <wildsci.grpo arguments>

Runs the public entry point (``wildsci.grpo.train.main``) in this process with the trainer's ``train`` wrapped:
just before training the resident set's high-water mark is reset (``/proc/self/clear_refs``, 5) and the resident
size noted; after it, the high-water mark is read. What training added on top of the loaded weights (AdamW
state, gradients, the generation's KV cache, activations) is the difference. The plan for the same arguments
comes from :func:`wildsci.grpo.memory.plan_for_run`, minus its weights row (already resident before training).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def main() -> None:
    out, argv = Path(sys.argv[1]), sys.argv[sys.argv.index("--") + 1 :]
    import wildsci.grpo.train as train
    from wildsci.grpo.memory import GIB, plan_for_run
    from wildsci.recipes import load_yaml

    script, args, model_args = train.parse(argv, load_yaml(argv[argv.index("--config") + 1]), "probe")
    plan = plan_for_run(script, args, model_args, model_args.model_name_or_path, ("cpu", 1000.0))
    measured: dict[str, float] = {}
    original = train.WildSciGRPOTrainer.train

    def measured_train(self, *a, **kw):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
        measured["before"] = _status("VmRSS")
        try:
            return original(self, *a, **kw)
        finally:
            measured["peak"] = _status("VmHWM")

    train.WildSciGRPOTrainer.train = measured_train
    assert train.main(argv) == 0
    weights = next(gib for what, gib, _ in plan.rows if what == "weights")
    result = {
        "measured_gib": (measured["peak"] - measured["before"]) / GIB,
        "planned_gib": plan.peak - weights,
        "rows": plan.rows,
        "table": plan.table(),
    }
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
