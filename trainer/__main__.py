"""`python -m trainer MODEL [options]`: real training on Spark (see trainer/train.py).

Also the application file for spark-submit (docs/cluster.md):
`spark-submit [spark options] trainer/__main__.py MODEL [options]`.
"""

import os
import sys

if __package__ in (None, ""):
    # run as a script (spark-submit): this folder is sys.path[0], where its modules
    # (data.py, settings.py, ...) would shadow top-level ones; import the package from
    # the repository instead
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [os.path.dirname(here)] + [
        p for p in sys.path if os.path.abspath(p or ".") != here
    ]

from trainer.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
