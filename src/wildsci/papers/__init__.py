"""Papers from the literature: open-access full texts from Europe PMC into a papers dataset ``wildsci build`` reads.

``wildsci papers RECIPE`` (``recipes/papers/*.yaml``): :mod:`.config` (the recipe), :mod:`.europepmc` (the two
REST endpoints, rate and retries), :mod:`.crawl` (listing task, resumable fetching), :mod:`.rows` (JATS -> rows,
parquet), :mod:`.licenses` (licence terms -> SPDX, the allow-list), :mod:`.run` (the command, ``fetch_rank``).
"""
