"""Script entry point: ``python flows/augment_flow.py --help``. The code is :mod:`augment.flows.augment_flow`
(installed with the package); import from there in your own flows.

Prefect flow: the same stage functions as ``dvc repro``, as tasks, with the same params.
"""

import sys
from pathlib import Path

if not __package__:  # run from a source checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment.flows.augment_flow import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
