"""The public API: lazy exports are the documented objects, whatever was imported before (issue 15)."""

import subprocess
import sys
import textwrap

import pytest

import weightreg

FRESH = textwrap.dedent("""
    import inspect, types
    import weightreg as w
    first = w.calibrate
    import weightreg.calibrate, weightreg.diagnose, weightreg.simulate  # bind the submodules on the package
    assert w.calibrate is first and callable(w.calibrate), w.calibrate
    for name in ("calibrate", "diagnose", "simulate"):
        assert inspect.isfunction(getattr(w, name)), (name, getattr(w, name))
        assert inspect.isfunction(getattr(w, name)), name  # twice: the second look-up is the same object
    from weightreg.calibrate import CalibrationResult  # the submodule is still importable by name
    assert isinstance(CalibrationResult, type)
    import numpy as np
    res = w.calibrate(np.ones((2, 1)), [4.0], [1.0, 1.0])
    res = w.calibrate(np.ones((2, 1)), [6.0], [1.0, 1.0])
    assert res.success and np.allclose(res.weights, [3.0, 3.0])
    ns = {}
    exec("from weightreg import *", ns)
    missing = sorted(set(w.__all__) - set(ns))
    assert not missing, missing
    assert not any(isinstance(ns[k], types.ModuleType) for k in w.__all__), "an export resolved to a module"
    print("ok")
""")


def test_exports_are_the_documented_objects_in_a_fresh_interpreter():
    proc = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_every_export_is_defined_in_its_module():
    import importlib

    for name, module in weightreg._EXPORTS.items():
        assert hasattr(importlib.import_module(f"weightreg.{module}"), name), (name, module)
    assert sorted(weightreg.__all__) == sorted(weightreg._EXPORTS)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        weightreg.no_such_thing  # noqa: B018


def test_the_non_generator_stages_do_not_load_the_bsl_packages():
    # README (Licences): diagnose, recalibrate and the study's baselines need no SDV, ctgan, rdt or copulas
    code = ("import sys, weightreg.runners, weightreg.diagnose, weightreg.calibrate, weightreg.evaluate, "
            "weightreg.study, weightreg.targets, weightreg.sources\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sdv', 'ctgan', 'rdt', 'copulas', 'deepecho'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", (proc.stdout, proc.stderr[-2000:])


@pytest.mark.skipif(not weightreg._x86_64_with_avx2(), reason="portable kernels are pinned on x86-64 CPUs with AVX2 only")
def test_importing_weightreg_first_pins_the_avx2_kernels():
    code = ("import io, contextlib, weightreg, numpy\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n    numpy.show_runtime()\n"
            "out = buf.getvalue()\n"
            "print(weightreg.PORTABLE_KERNELS, 'Haswell' in out, \"'X86_V4'\" in out.split('not_found')[1])")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES", "WEIGHTREG_NATIVE_KERNELS")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "True", "True"], proc.stdout
    native = subprocess.run([sys.executable, "-c", "import weightreg; print(weightreg.PORTABLE_KERNELS)"],
                            capture_output=True, text=True, env={**env, "WEIGHTREG_NATIVE_KERNELS": "1"})
    assert native.stdout.strip() == "False"
