"""weightreg: find and fix over-influential records in weighted survey microdata.

Import what you need from the top level; heavy parts (the SDV generator, torch) load only when used.
"""

import os as _os
import sys as _sys
import types as _types

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
    "calibrate_influence": "influence_bounds",
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
    "regularise_loop": "loop",
    "source_ids": "sources",
    "source_kish_ess": "sources",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    raise AttributeError(f"module 'weightreg' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(_types.ModuleType):
    """The package's module type: after importing a submodule, the import system binds it on its
    package (``weightreg.calibrate = <module weightreg.calibrate>``), which would hide the export of
    the same name (the function ``calibrate``; likewise ``diagnose`` and ``simulate``) from then on.
    Such a binding is dropped, so ``weightreg.calibrate`` is always the function; the submodule stays
    importable by name (``from weightreg.calibrate import CalibrationResult``)."""

    def __setattr__(self, name, value):
        if (name in _EXPORTS and isinstance(value, _types.ModuleType)
                and value.__name__ == f"{__name__}.{_EXPORTS[name]}"):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
