"""`python -m trainer MODEL [options]`: real training on Spark (see trainer/train.py)."""

import sys

from trainer.train import main

if __name__ == "__main__":
    sys.exit(main())
