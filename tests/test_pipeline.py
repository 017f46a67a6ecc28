"""End to end: the DVC pipeline on a small world in a temporary copy of the repository.

Checks `dvc repro` runs every stage in order, a second `dvc repro` runs nothing, and
`dvc exp run -S cap=...` reruns only recalibrate, evaluate and plot (see .ci/small_pipeline.py).
"""

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_dvc_pipeline_on_a_small_world(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    spec = importlib.util.spec_from_file_location("small_pipeline", ROOT / ".ci/small_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--keep", str(tmp_path / "repo")]) == 0
    repo = tmp_path / "repo"
    for name in ("synthesize", "diagnose", "train_generator", "adversarial_loop", "recalibrate", "evaluate"):
        assert (repo / "metrics" / f"{name}.json").stat().st_size > 0
    assert any((repo / "plots/plot").glob("*.png"))
