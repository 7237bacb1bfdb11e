"""wildsci-kit.

Importing the package tunes glibc malloc for this process and the processes it starts
(:func:`wildsci.process.tune_malloc`): every entry point imports it first, so ``wildsci build`` typed in a shell
runs as fast as under ``make``. ``WILDSCI_MALLOC_TUNING=0`` turns it off.
"""

from wildsci.process import tune_malloc

__version__ = "0.1.0"

tune_malloc()
