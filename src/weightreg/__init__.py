"""weightreg: find and fix over-influential records in weighted survey microdata.

Import what you need from the top level; heavy parts (the SDV generator, torch) load only when used.
"""

import os as _os

# On small machines multi-threaded BLAS/OpenMP made our solves up to 100x and TVAE epochs 5-10x slower;
# default to one thread unless the user chose otherwise (must happen before numpy/torch load).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

__version__ = "0.1.0"

_EXPORTS = {
    "Survey": "survey",
    "read_survey": "policyengine_format",
    "write_survey": "policyengine_format",
    "simulate": "simulate",
    "load_parameters": "parameters",
    "random_reforms": "parameters",
    "calibrate": "calibrate",
    "build_target_matrix": "targets",
    "read_targets": "targets",
    "generate_world": "world",
    "diagnose": "diagnose",
    "kish_ess": "influence",
    "weight_summary": "influence",
    "extract": "features",
    "build": "features",
    "FeatureSpec": "features",
    "train_generator": "generator",
    "load_generator": "generator",
    "sample_offspring": "generator",
    "regularise": "loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'weightreg' has no attribute {name!r}")
