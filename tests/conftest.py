import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")


import numpy as np  # noqa: E402  (after the thread settings, which must precede numpy's import)
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def world():
    """A small embedded world (4,000 population households, an 800 + 40 record survey), built once."""
    from weightreg.world import generate_world

    return generate_world(
        {"seed": 3, "population_households": 4000, "sample_households": 800, "enhancement_households": 40},
        rng=np.random.default_rng(3),
    )
