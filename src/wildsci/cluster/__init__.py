"""Running the kit's stages past one machine: datatrove executors for the builder, sbatch jobs for the chain.

The stages never import this package (a stage takes ``(rank, world_size)`` or nothing); this package imports the
stages and launches them: ``build`` (builder ranks + merge on datatrove's local or Slurm executor), ``status``
(what a person reads: ranks, jobs, the failing line), ``slurm`` (the few Slurm queries and the sbatch text).
``config`` holds only the recipe section (:class:`ExecutorConfig`), so a data recipe can carry it.
"""
