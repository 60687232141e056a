"""Script entry point: ``python flows/train_downstream.py --help``. The code is :mod:`augment.flows.train_downstream`
(installed with the package); import from there in your own flows.

Example downstream training flow: calls the augmentation pipeline as a subflow, then trains
"""

import sys
from pathlib import Path

if not __package__:  # run from a source checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment.flows.train_downstream import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
