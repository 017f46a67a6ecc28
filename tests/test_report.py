"""The markdown report, in throw-away git + DVC repositories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from weightreg.plots import FIGURES
from weightreg.report import ReportError, main, markdown_table, write_report

pytest.importorskip("dvc")
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1"}


def _sh(args, cwd):
    res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV,
                                                                              "DVC_NO_ANALYTICS": "1"})
    assert res.returncode == 0, f"{args}: {res.stderr}"
    return res.stdout


def _metrics(path: Path, ess: float, max_influence: float) -> None:
    path.write_text(json.dumps({"ess": ess, "max_influence": max_influence, "records_above_threshold": 7}) + "\n")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Branch ``base`` commits params and metrics; the workspace (branch ``feature``) changes both."""
    root = tmp_path_factory.mktemp("repo")
    _sh(["git", "init", "-q", "-b", "base"], root)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], root)
    (root / "params.yaml").write_text("threshold: 0.05\nloop:\n  seed: 11\n")
    (root / "metrics").mkdir()
    _metrics(root / "metrics/diagnose.json", 1500.0, 0.4)
    (root / "dvc.yaml").write_text("metrics:\n  - metrics/diagnose.json\n")
    _sh(["git", "add", "-A"], root)
    _sh(["git", "-c", "commit.gpgsign=false", "commit", "-q", "-m", "base"], root)
    _sh(["git", "checkout", "-q", "-b", "feature"], root)
    (root / "README.md").write_text("a commit of the feature branch\n")
    _sh(["git", "add", "README.md"], root)
    _sh(["git", "-c", "commit.gpgsign=false", "commit", "-q", "-m", "feature"], root)
    (root / "params.yaml").write_text("threshold: 0.03\nloop:\n  seed: 11\n")
    _metrics(root / "metrics/diagnose.json", 1800.0, 0.1)
    # The plot stage's outputs (the report links PNGs, it does not read them).
    (root / "plots/plot").mkdir(parents=True)
    for name in ["zz_extra.png", *reversed(FIGURES)]:
        (root / "plots/plot" / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "plots/evaluate").mkdir()
    pd.DataFrame({
        "weights": ["raked", "raked", "original", "original"],
        "statistic_kind": ["reform", "baseline", "baseline", "reform"],
        "rmse": [0.012345, 0.02, 0.05, 0.06], "median_abs_rel_error": [0.001, 0.002, 0.003, 0.004],
    }).to_csv(root / "plots/evaluate/truth_error.csv", index=False)
    (root / "plots/diagnose").mkdir()
    pd.DataFrame({
        "household_id": [17, 4], "weight": [2500.0, 900.0], "max_influence": [0.31, 0.12],
        "worst_statistic": ["universal_credit|region=LONDON|baseline", "income_tax|all|reform 3"],
        "violations": [4, 1],
    }).to_csv(root / "plots/diagnose/top_offenders.csv", index=False)
    return root


def _table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]


def test_report_against_a_base_branch(repo):
    out = write_report(repo / "report.md", "base", repo)
    text = out.read_text()
    rows = _table_rows(text)
    # dvc metrics diff: changed metrics with old, new and change; the unchanged one is left out.
    assert ["metrics/diagnose.json", "ess", "1500.0", "1800.0", "300.0"] in rows
    assert ["metrics/diagnose.json", "max_influence", "0.4", "0.1", "-0.3"] in rows
    assert not any("records_above_threshold" in r for r in rows)
    # dvc params diff: the changed param only.
    assert ["params.yaml", "threshold", "0.05", "0.03"] in rows
    assert not any("loop.seed" in r for r in rows)
    # The truth table: one row per weight vector, in pipeline order, baseline before reform.
    assert ["weights", "baseline RMSE", "reform RMSE", "baseline median abs rel error",
            "reform median abs rel error"] in rows
    assert ["original", "0.05", "0.06", "0.003", "0.004"] in rows
    assert ["raked", "0.02", "0.01235", "0.002", "0.001"] in rows
    assert text.index("| original |") < text.index("| raked |")
    # Offenders: the "|" inside statistic names is escaped, so the row keeps its 5 cells.
    assert "| 17 | 2500 | 0.31 | 4 | universal_credit\\|region=LONDON\\|baseline |" in text
    # Every PNG linked relative to the report, in the plot stage's order, unknown ones last.
    links = [line for line in text.splitlines() if line.startswith("![")]
    assert [link.split("(")[1].rstrip(")") for link in links] == \
        [f"plots/plot/{name}" for name in FIGURES] + ["plots/plot/zz_extra.png"]
    assert "`base` (`" in text and "Note:" not in text


def test_links_are_relative_to_the_report(repo, tmp_path):
    out = write_report(tmp_path / "nested" / "report.md", "base", repo, top_offenders=0)
    text = out.read_text()
    targets = [line.split("(")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(targets) == len(FIGURES) + 1
    for target in targets:
        assert (out.parent / target).resolve().is_file()
    assert "Most influential households" not in text


def test_base_equal_to_head_is_flagged(repo):
    text = write_report(repo / "report_head.md", "HEAD", repo).read_text()
    assert "Note:" in text and "only uncommitted changes" in text
    assert ["metrics/diagnose.json", "ess", "1500.0", "1800.0", "300.0"] in _table_rows(text)


def test_missing_base_is_an_error_not_an_empty_diff(repo, capsys):
    with pytest.raises(ReportError, match=r"'origin/main' is not a commit.*git fetch origin main"):
        write_report(repo / "never.md", "origin/main", repo)
    assert not (repo / "never.md").exists()
    assert main(["--base", "origin/main", "-o", str(repo / "never.md"), "--repo-dir", str(repo)]) == 2
    assert "git fetch" in capsys.readouterr().err


def test_without_a_base_shows_current_metrics(repo, tmp_path):
    out = tmp_path / "report.md"
    assert main(["--base", "none", "-o", str(out), "--repo-dir", str(repo), "--note", "Small world."]) == 0
    text = out.read_text()
    rows = _table_rows(text)
    assert ["Path", "ess", "max_influence", "records_above_threshold"] in rows
    assert ["metrics/diagnose.json", "1800.0", "0.1", "7"] in rows
    assert "Params (HEAD vs workspace)" in text and "Small world." in text


def test_dvc_warnings_and_failures_are_reported_in_their_section(tmp_path, monkeypatch):
    from weightreg import report

    _sh(["git", "init", "-q"], tmp_path)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], tmp_path)
    (tmp_path / "dvc.yaml").write_text("metrics: [\n")  # corrupt: dvc warns but exits 0
    text = write_report(tmp_path / "report.md", None, tmp_path).read_text()
    assert "No metrics." in text
    assert "`dvc metrics show --md` warned:" in text and "dvc.yaml" in text
    assert "No figures in `plots/plot`" in text

    def failing(args, cwd, timeout):
        return subprocess.CompletedProcess(args, 255, "", "ERROR: something broke\n")

    monkeypatch.setattr(report, "_dvc", failing)
    text = write_report(tmp_path / "report.md", None, tmp_path).read_text()
    assert "> **`dvc metrics show --md` failed:** ERROR: something broke" in text


def test_markdown_table_formats_and_escapes():
    table = markdown_table(pd.DataFrame({"a|b": ["x|y", None], "n": [1.0 / 3.0, float("nan")]}))
    assert table.splitlines() == ["| a\\|b | n |", "|---|---|", "| x\\|y | 0.3333 |", "|  |  |"]


def test_households_table_puts_source_households_beside_rows(tmp_path):
    from weightreg.report import _households_section

    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/diagnose.json").write_text(json.dumps(
        {"sources": 40, "records": 40, "source_ess": 12.5, "ess": 12.5, "sources_above_threshold": 9,
         "records_above_threshold": 9}))
    (tmp_path / "metrics/adversarial_loop.json").write_text(json.dumps(
        {"source_ess_after": 13.0, "ess_after": 30.0, "sources_above_threshold_after": 8,
         "records_above_threshold_after": 2}))
    rows = _table_rows("\n".join(_households_section(tmp_path)))
    assert rows[0] == ["figure", "source households", "rows"]
    assert ["Kish ESS before the loop", "12.5", "12.5"] in rows
    assert ["Kish ESS after the loop", "13", "30"] in rows
    assert ["above the threshold after the loop", "8", "2"] in rows
    assert not any(r[0] == "Kish ESS after recalibrate" for r in rows)  # no recalibrate metrics: no row
    assert _households_section(tmp_path / "nowhere") == []
