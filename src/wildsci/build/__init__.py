"""The WildSci dataset builder (``wildsci build recipes/data/<name>.yaml``).

Stages, one module each: :mod:`~wildsci.build.ingest` (papers -> passages), :mod:`~wildsci.build.generate`,
:mod:`~wildsci.build.options`, :mod:`~wildsci.build.vote` (votes + difficulty filter), :mod:`~wildsci.build.label`,
:mod:`~wildsci.build.dedup` (near duplicates + decontamination), :mod:`~wildsci.build.split`,
:mod:`~wildsci.build.card`, :mod:`~wildsci.build.push`; :mod:`~wildsci.build.pipeline` runs them with checkpoints and
:mod:`~wildsci.build.config` holds the recipe dataclass. Nothing here imports training, evaluation or the Space.
"""
