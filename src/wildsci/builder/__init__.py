"""The WildSci dataset builder (``wildsci build recipes/data/<name>.yaml``).

Stages, one module each: :mod:`~wildsci.builder.ingest` (papers -> passages), :mod:`~wildsci.builder.generate`,
:mod:`~wildsci.builder.options`, :mod:`~wildsci.builder.vote` (votes + difficulty filter), :mod:`~wildsci.builder.label`,
:mod:`~wildsci.builder.dedup` (near duplicates + decontamination), :mod:`~wildsci.builder.split`,
:mod:`~wildsci.builder.card`, :mod:`~wildsci.builder.push`; :mod:`~wildsci.builder.pipeline` runs them with checkpoints and
:mod:`~wildsci.builder.config` holds the recipe dataclass. Nothing here imports training, evaluation or the Space.
"""
