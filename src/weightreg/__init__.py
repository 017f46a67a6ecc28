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


def _x86_64_with_avx2() -> bool:
    """True on an x86-64 Linux CPU with AVX2 and FMA (read from /proc/cpuinfo: numpy must not load first)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64") or not _os.path.exists("/proc/cpuinfo"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return {"avx2", "fma"} <= flags
    except OSError:
        return False
    return False


#: The kernel paths pinned for portable results (see PORTABLE_KERNELS below).
PORTABLE_ENV = {
    "OPENBLAS_CORETYPE": "Haswell",  # numpy/scipy's OpenBLAS: the AVX2 kernels, not AVX-512's
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's own loops: no AVX-512
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's CPU kernels
    "MKL_CBWR": "AVX2",  # torch's MKL: conditional numerical reproducibility on the AVX2 path
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # torch's oneDNN
}
# The same inputs must give the same bytes on every x86-64 machine (dvc.lock hashes, reviewers' metrics):
# BLAS, numpy and torch pick their SIMD kernels per CPU, and AVX-512 kernels round differently from AVX2
# ones (the world's Adam calibration gave another survey.h5 on an AVX-512 machine than on an AVX2 one).
# Pin every x86-64 CPU with AVX2 to the AVX2 paths, before numpy or torch load; a variable the user set
# wins, and WEIGHTREG_NATIVE_KERNELS=1 keeps each CPU's fastest kernels (results then differ by machine).
#: True when this process runs the pinned AVX2 paths (weightreg was imported before numpy and torch).
PORTABLE_KERNELS = (_os.environ.get("WEIGHTREG_NATIVE_KERNELS", "") not in ("1", "true", "yes")
                    and _x86_64_with_avx2() and "numpy" not in _sys.modules and "torch" not in _sys.modules)
if PORTABLE_KERNELS:
    for _var, _value in PORTABLE_ENV.items():
        _os.environ.setdefault(_var, _value)

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
