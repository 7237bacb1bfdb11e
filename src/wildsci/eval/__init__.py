"""`wildsci eval`: the recipe (config), where each benchmark comes from (sources, adapters), one lighteval run
(launch) and the matrix of models x tasks with scores and resume (run).

One package because they are one stage: the cluster launcher (``wildsci.cluster``) runs it per model, and nothing
below the stage imports it.
"""
