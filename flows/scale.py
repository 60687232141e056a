"""Script entry point: ``python flows/scale.py --help``. The code is :mod:`augment.flows.scale`
(installed with the package); import from there in your own flows.

Scale-out: the generate step sharded over the workers of a Dask cluster (prefect-dask).
"""

import sys
from pathlib import Path

if not __package__:  # run from a source checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment.flows.scale import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
