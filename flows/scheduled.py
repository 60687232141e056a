"""Script entry point: ``python flows/scheduled.py --help``. The code is :mod:`augment.flows.scheduled`
(installed with the package); import from there in your own flows.

Nightly runs on a Prefect schedule, and the pipeline as an on-demand deployment.
"""

import sys
from pathlib import Path

if not __package__:  # run from a source checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment.flows.scheduled import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
