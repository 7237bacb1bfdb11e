"""GRPO training on a WildSci-format dataset with TRL's ``GRPOTrainer`` (``accelerate launch -m wildsci.grpo``).

Modules, one job each (open-r1's layout): :mod:`~wildsci.grpo.config` (the recipe's dataclasses and their
checks), :mod:`~wildsci.grpo.checks` (pre-launch checks that need the world), :mod:`~wildsci.grpo.launch` (what
the launch really is: device, precision, processes, sharding), :mod:`~wildsci.grpo.memory` (the memory plan),
:mod:`~wildsci.grpo.data` (dataset -> prompts), :mod:`~wildsci.grpo.hub` (model card, push),
:mod:`~wildsci.redact` (tokens kept out of every output) and :mod:`~wildsci.grpo.train` (the entry point).
"""

from wildsci.grpo.config import GRPOConfig, WildSciGRPOArguments, recipe_dataclasses

__all__ = ["GRPOConfig", "WildSciGRPOArguments", "recipe_dataclasses"]
