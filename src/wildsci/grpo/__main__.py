"""``python -m wildsci.grpo`` / ``accelerate launch -m wildsci.grpo``: runs :func:`wildsci.grpo.train.main`."""

import sys

from wildsci.grpo.train import main

sys.exit(main())
