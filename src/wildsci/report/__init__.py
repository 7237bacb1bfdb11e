"""Reports of a run: ``wildsci report`` (report.md + plots) and ``wildsci eval``'s results.md + accuracy plot.

Modules: ``inputs`` (what the stages wrote), ``stats`` (pure statistics: intervals, paired comparisons, halves,
letter shares), ``text`` (how numbers are written), ``figures`` (every figure, matplotlib object API),
``training`` and ``generalization`` (the report's training and evaluation sections), ``page`` (report.md) and
``evaluation`` (results.md + accuracy_vs_step.png of one eval folder).
"""

from wildsci.report.evaluation import write_eval_outputs
from wildsci.report.inputs import RunInputs, locate_inputs
from wildsci.report.page import write_report

__all__ = ["RunInputs", "locate_inputs", "write_eval_outputs", "write_report"]
