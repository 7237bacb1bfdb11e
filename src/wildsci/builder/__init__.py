"""The WildSci dataset builder (``wildsci build recipes/data/<name>.yaml``).

Stages, one module each: :mod:`~wildsci.builder.ingest` (papers), :mod:`~wildsci.builder.chunk` (passages),
:mod:`~wildsci.builder.generate`, :mod:`~wildsci.builder.options`, :mod:`~wildsci.builder.vote` (votes + difficulty
filter), :mod:`~wildsci.builder.label`, :mod:`~wildsci.builder.dedup` (near duplicates + decontamination),
:mod:`~wildsci.builder.split`, :mod:`~wildsci.builder.card`, :mod:`~wildsci.builder.push`.
:mod:`~wildsci.builder.pipeline` runs them; :mod:`~wildsci.builder.plan` checks a recipe before the first call and
prints ``--dry-run``; :mod:`~wildsci.builder.state` keeps checkpoints and shard files; :mod:`~wildsci.builder.console`
prints; :mod:`~wildsci.builder.config` holds the recipe dataclass. Nothing here imports training, evaluation or the
Space.
"""
