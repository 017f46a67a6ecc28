"""The plot stage: CSV-contract builders, PNG rendering, and the offline ``dvc plots show`` template."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from weightreg import plots
from weightreg.plots import (
    FIGURES,
    QUANTILE_GRID,
    PlotInputError,
    heatmap_table,
    quantile_table,
    render_all,
    OFFENDER_KINDS,
    offender_kinds,
    scatter_table,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEMPLATE = Path(plots.__file__).parent / "templates" / "dvc_plots.html"
THRESHOLD = 0.05


def write_inputs(plots_dir: Path, seed: int = 0) -> None:
    """Every contract CSV, from a small synthetic survey (shapes as the producers write them)."""
    rng = np.random.default_rng(seed)
    n = 3000
    hid = np.arange(100_000, 100_000 + n)
    w = rng.lognormal(5.0, 1.0, n)
    infl = rng.beta(0.3, 40.0, n)
    infl[:7] = np.linspace(0.06, 0.4, 7)  # a few offenders above the threshold
    w_after = np.minimum(w, np.quantile(w, 0.99))

    def put(relative, frame):
        path = plots_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)

    put("diagnose/weight_quantiles.csv", quantile_table(weight=w))
    put("recalibrate/weight_quantiles.csv", quantile_table(before=w, after=w_after))
    dims = {"income_decile": [str(d) for d in range(1, 11)], "region": ["NORTH_EAST", "LONDON", "WALES", "SCOTLAND"]}
    ess_rows = [("all", "all", n, 1500.0, w.sum())]
    for dim, cells in dims.items():
        ess_rows += [(dim, c, 300, float(rng.uniform(50, 900)), float(rng.uniform(1e5, 1e6))) for c in cells]
    ess_rows.append(("region", "(none)", 3, 0.0, 10.0))
    ess = pd.DataFrame(ess_rows, columns=["dimension", "cell", "n_records", "ess", "weight_total"])
    put("diagnose/ess_by_slice.csv", ess)
    order = np.argsort(-infl, kind="stable")[:20]
    put("diagnose/top_offenders.csv", pd.DataFrame({
        "household_id": hid[order], "weight": w[order], "max_influence": infl[order],
        "worst_statistic": [f"universal_credit|region=LONDON|reform {k}" for k in range(20)],
        "violations": (infl[order] > THRESHOLD).astype(int) * 3,
    }))
    put("diagnose/influence_scatter.csv",
        scatter_table(hid, w, infl, threshold=THRESHOLD, rng=np.random.default_rng(1), n_others=500))
    stats = [f"metric_{j}|income_decile={j % 10 + 1}|baseline" for j in range(40)]
    matrix = rng.beta(0.2, 30.0, (n, len(stats)))
    put("diagnose/influence_heatmap.csv", heatmap_table(matrix, hid, stats))
    put("train_generator/loss.csv", pd.DataFrame({"epoch": np.arange(30), "loss": 5.0 * np.exp(-np.arange(30) / 8)}))
    k = np.arange(6)
    put("adversarial_loop/trace.csv", pd.DataFrame({
        "iteration": k, "sources_above": [7, 6, 6, 5, 5, 5], "source_max_influence": [0.4, 0.35, 0.3, 0.3, 0.3, 0.3],
        "source_ess": 1500 + 10 * k,
        "records_above": [7, 5, 3, 2, 0, 0], "max_influence": [0.4, 0.2, 0.1, 0.06, 0.04, 0.03],
        "ess": 1500 + 100 * k, "max_rel_target_error": 1e-3 / (1 + k), "households_added": [0, 40, 30, 20, 10, 0],
        "households": n + np.cumsum([0, 40, 30, 20, 10, 0]),
    }))
    put("recalibrate/top_multipliers.csv", pd.DataFrame({
        "target": [f"target_{j}" for j in range(10)], "multiplier": np.exp(np.linspace(0.5, -0.3, 10)),
    }))
    kinds = list(plots.WEIGHT_KINDS)
    put("evaluate/truth_error.csv", pd.DataFrame({
        "weights": np.repeat(kinds, 2), "statistic_kind": ["baseline", "reform"] * len(kinds),
        "rmse": rng.uniform(0.01, 0.1, 2 * len(kinds)),
        "median_abs_rel_error": rng.uniform(0.001, 0.05, 2 * len(kinds)),
    }))
    cmp_rows = [(dim, c, kind, float(rng.uniform(50, 900)))
                for dim, cells in dims.items() for c in cells for kind in kinds]
    put("evaluate/ess_compare.csv", pd.DataFrame(cmp_rows, columns=["dimension", "cell", "weights", "ess"]))


# ---------------------------------------------------------------------------------------------
# Contract builders
# ---------------------------------------------------------------------------------------------


def test_quantile_grid_is_the_agreed_one():
    assert QUANTILE_GRID.size == 102
    assert QUANTILE_GRID[0] == 0.0 and QUANTILE_GRID[-1] == 1.0 and QUANTILE_GRID[-2] == 0.999
    np.testing.assert_allclose(QUANTILE_GRID[:100], np.arange(100) * 0.01)


def test_quantile_table_hand_computed():
    table = quantile_table(before=[5, 1, 3, 2, 4], after=[10.0, 10.0])
    assert list(table.columns) == ["quantile", "before", "after"]
    at = table.set_index("quantile")
    # Linear interpolation on sorted [1..5]: q -> 1 + 4q.
    assert at.loc[0.0, "before"] == 1 and at.loc[0.5, "before"] == 3 and at.loc[1.0, "before"] == 5
    assert at.loc[0.01, "before"] == pytest.approx(1.04)
    assert at.loc[0.999, "before"] == pytest.approx(4.996)
    assert (at["after"] == 10.0).all()
    with pytest.raises(ValueError, match="'bad'"):
        quantile_table(bad=[1.0, np.nan])


def test_scatter_table_keeps_every_offender_and_samples_the_rest():
    hid = np.array([9, 3, 7, 1, 5, 2, 8, 4, 6, 0])
    w = np.arange(10.0) + 1
    infl = np.array([0.5, 0.01, 0.2, 0.0, 0.01, 0.06, 0.02, 0.03, 0.04, 0.05])  # 0.05 is not above
    table = scatter_table(hid, w, infl, threshold=0.05, rng=np.random.default_rng(3), n_others=2)
    assert list(table.columns) == ["household_id", "weight", "max_influence"]
    assert len(table) == 3 + 2
    assert {9, 7, 2} <= set(table["household_id"])
    assert list(table["household_id"]) == sorted(table["household_id"])
    # Each row is an original (id, weight, influence) triple.
    original = dict(zip(hid, zip(w, infl)))
    for row in table.itertuples(index=False):
        assert original[row.household_id] == (row.weight, row.max_influence)
    again = scatter_table(hid, w, infl, threshold=0.05, rng=np.random.default_rng(3), n_others=2)
    pd.testing.assert_frame_equal(table, again)
    everything = scatter_table(hid, w, infl, threshold=0.05, rng=np.random.default_rng(3), n_others=2000)
    assert sorted(everything["household_id"]) == list(range(10))


def test_offender_kinds_hand_case_and_the_scatter_column():
    records = pd.DataFrame({
        "household_id": [1, 2, 3, 4, 5],
        "max_influence": [0.01, 0.30, 0.20, 0.08, 0.05],
        "max_influence_not_thin": [0.01, 0.02, 0.20, 0.08, 0.05],
        "max_influence_equal_weights": [0.01, 0.01, 0.10, 0.03, 0.05],
    })
    kinds = offender_kinds(records, 0.05)
    # 1 below; 2 above only on a thin statistic; 3 still above at equal weights; 4 only by its
    # weight; 5 exactly at the threshold is not above it.
    assert kinds.tolist() == ["below threshold", "thin only", "value-driven", "weight-driven", "below threshold"]
    assert offender_kinds(records.drop(columns="max_influence_equal_weights"), 0.05) is None
    table = scatter_table(records["household_id"], np.ones(5), records["max_influence"], threshold=0.05,
                          rng=np.random.default_rng(0), offender=kinds)
    assert dict(zip(table["household_id"], table["offender"])) == dict(zip(records["household_id"], kinds))
    with pytest.raises(ValueError, match="offender"):
        scatter_table([1, 2], np.ones(2), [0.1, 0.0], threshold=0.05, rng=np.random.default_rng(0),
                      offender=["weight-driven", "heavy"])


def test_scatter_figure_colours_offenders_by_kind(tmp_path):
    plots_dir = tmp_path / "plots"
    write_inputs(plots_dir)
    args = ["--plots-dir", str(plots_dir), "--figure", "influence_scatter.png", "--threshold", str(THRESHOLD)]
    assert plots.main([*args, "--out-dir", str(tmp_path / "plain")]) == 0
    path = plots_dir / "diagnose/influence_scatter.csv"
    table = pd.read_csv(path)
    kinds = np.where(table["max_influence"] > THRESHOLD, "weight-driven", "below threshold").astype(object)
    kinds[np.flatnonzero(table["max_influence"] > THRESHOLD)[:2]] = "value-driven"
    table.assign(offender=kinds).to_csv(path, index=False)
    assert set(kinds) <= set(OFFENDER_KINDS)
    assert plots.main([*args, "--out-dir", str(tmp_path / "kinds")]) == 0
    plain = (tmp_path / "plain/influence_scatter.png").read_bytes()
    coloured = (tmp_path / "kinds/influence_scatter.png").read_bytes()
    assert coloured.startswith(PNG_SIGNATURE) and coloured != plain


def test_heatmap_table_ranks_records_then_statistics():
    infl = np.array([
        [0.1, 0.0, 0.3],   # record a: max 0.3
        [0.0, 0.9, 0.2],   # record b: max 0.9
        [0.2, 0.0, 0.0],   # record c: max 0.2 (dropped with n_records=2)
    ])
    table = heatmap_table(infl, ["a", "b", "c"], ["s0", "s1", "s2"], n_records=2, n_statistics=2)
    # Rows b, a; among them s1 (0.9) then s2 (0.3); s0 (0.1) is dropped.
    assert list(table["household_id"]) == ["b", "b", "a", "a"]
    assert list(table["statistic"]) == ["s1", "s2", "s1", "s2"]
    assert list(table["influence"]) == [0.9, 0.2, 0.0, 0.3]
    with pytest.raises(ValueError, match="shape"):
        heatmap_table(infl, ["a", "b"], ["s0", "s1", "s2"])


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Every input, and one render of every figure (rendering all takes seconds: done once)."""
    root = tmp_path_factory.mktemp("full")
    write_inputs(root / "plots")
    return root / "plots", render_all(root / "plots", root / "out", threshold=THRESHOLD)


def test_render_all_draws_every_figure(full):
    import matplotlib.image

    plots_dir, out = full
    assert [p.name for p in out] == list(FIGURES)
    assert out.missing == [] and out.skipped == {}
    for path in out:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 300
        assert image.std() > 0.05  # not a blank canvas
    # No temporary files left beside them.
    assert sorted(p.name for p in out[0].parent.iterdir()) == sorted(FIGURES)


def _pixels_of(path: Path, hex_colour: str) -> int:
    import matplotlib.colors
    import matplotlib.image

    rgb = np.asarray(matplotlib.colors.to_rgb(hex_colour))
    image = matplotlib.image.imread(path)[..., :3]
    return int((np.abs(image - rgb).max(axis=-1) < 0.02).sum())


def test_bars_are_drawn_in_every_series_colour(full):
    """Bars on log axes vanish if non-positive values are masked: check each series' solid colour."""
    by_name = {p.name: p for p in full[1]}
    cycle = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]  # matplotlib's default C0..C4
    for colour in cycle:  # one per weight vector
        assert _pixels_of(by_name["ess_by_slice.png"], colour) > 2000, colour
    for colour in cycle[:2]:  # baseline, reform
        assert _pixels_of(by_name["truth_error.png"], colour) > 2000, colour
    assert _pixels_of(by_name["top_multipliers.png"], cycle[0]) > 2000  # multipliers > 1
    assert _pixels_of(by_name["top_multipliers.png"], cycle[1]) > 2000  # multipliers < 1


def test_png_bytes_depend_only_on_the_data(full, tmp_path):
    plots_dir, first = full
    second = render_all(plots_dir, tmp_path / "b", threshold=THRESHOLD)
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
        assert b"Software" not in a.read_bytes() and b"matplotlib" not in a.read_bytes()
    # Changing one input changes that figure only.
    shutil.copytree(plots_dir, tmp_path / "plots")
    trace = tmp_path / "plots/adversarial_loop/trace.csv"
    frame = pd.read_csv(trace)
    frame.loc[2, "ess"] += 400
    frame.to_csv(trace, index=False)
    names = ["loop_convergence.png", "truth_error.png"]
    third = render_all(tmp_path / "plots", tmp_path / "c", threshold=THRESHOLD, figures=names)
    assert [p.name for p in third] == names
    before = {p.name: p.read_bytes() for p in first}
    assert before["loop_convergence.png"] != third[0].read_bytes()
    assert before["truth_error.png"] == third[1].read_bytes()


def test_missing_inputs_are_listed_not_fatal(tmp_path, caplog):
    write_inputs(tmp_path / "full")
    partial = tmp_path / "plots"
    (partial / "adversarial_loop").mkdir(parents=True)
    shutil.copy(tmp_path / "full/adversarial_loop/trace.csv", partial / "adversarial_loop/trace.csv")
    (partial / "recalibrate").mkdir()
    shutil.copy(tmp_path / "full/recalibrate/weight_quantiles.csv", partial / "recalibrate/weight_quantiles.csv")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "truth_error.png").write_bytes(b"stale")  # from an earlier run whose input is gone
    (out_dir / "notes.txt").write_text("not ours")
    with caplog.at_level(logging.WARNING, logger="weightreg.plots"):
        out = render_all(partial, out_dir, threshold=THRESHOLD)
    # weight_distribution needs either quantile file; loop_convergence its trace.
    assert [p.name for p in out] == ["weight_distribution.png", "loop_convergence.png"]
    assert partial / "diagnose/weight_quantiles.csv" in out.missing
    assert partial / "adversarial_loop/trace.csv" not in out.missing
    assert len(out.missing) == len(plots.SCHEMAS) - 2
    assert set(out.skipped) == set(FIGURES) - {"weight_distribution.png", "loop_convergence.png"}
    assert "evaluate/truth_error.csv" in out.skipped["truth_error.png"]
    assert not (out_dir / "truth_error.png").exists()
    assert (out_dir / "notes.txt").exists()
    assert "truth_error.png skipped" in caplog.text


def test_empty_input_skips_its_figure(tmp_path):
    write_inputs(tmp_path / "plots")
    (tmp_path / "plots/train_generator/loss.csv").write_text("epoch,loss\n")
    out = render_all(tmp_path / "plots", tmp_path / "out", figures=["generator_loss.png", "top_multipliers.png"])
    assert [p.name for p in out] == ["top_multipliers.png"]
    assert "no rows" in out.skipped["generator_loss.png"]
    assert out.missing == []
    # Rows, but none drawable: the whole-population row and the no-cell row are not slice cells.
    (tmp_path / "plots/evaluate/ess_compare.csv").unlink()
    (tmp_path / "plots/diagnose/ess_by_slice.csv").write_text(
        "dimension,cell,n_records,ess,weight_total\nall,all,10,8.5,100\nregion,(none),2,0,5\n")
    out = render_all(tmp_path / "plots", tmp_path / "out", figures=["ess_by_slice.png"])
    assert list(out) == [] and "no slice cells" in out.skipped["ess_by_slice.png"]
    with pytest.raises(ValueError, match="unknown figure.*nope.png"):
        render_all(tmp_path / "plots", tmp_path / "out", figures=["nope.png"])


def test_contract_violations_name_the_file_and_column(tmp_path):
    write_inputs(tmp_path / "plots")
    trace = tmp_path / "plots/adversarial_loop/trace.csv"
    pd.read_csv(trace).drop(columns=["ess"]).to_csv(trace, index=False)
    with pytest.raises(PlotInputError, match=r"trace\.csv: missing column\(s\) ess.*dvc repro adversarial_loop"):
        render_all(tmp_path / "plots", tmp_path / "out")
    write_inputs(tmp_path / "plots")
    truth = tmp_path / "plots/evaluate/truth_error.csv"
    frame = pd.read_csv(truth).astype({"rmse": object})
    frame.loc[3, "rmse"] = "n/a"
    frame.to_csv(truth, index=False)
    with pytest.raises(PlotInputError, match=r"truth_error\.csv: column 'rmse' has non-numeric value 'n/a' \(row 5"):
        render_all(tmp_path / "plots", tmp_path / "out")


def test_render_leaves_matplotlib_global_state_alone(full, tmp_path):
    import matplotlib

    plots_dir, plain = full
    names = ["loop_convergence.png", "truth_error.png"]
    backend = matplotlib.get_backend()
    before = dict(matplotlib.rcParams)
    with matplotlib.rc_context({"lines.linewidth": 7.0, "font.size": 20}):
        styled = render_all(plots_dir, tmp_path / "styled", threshold=THRESHOLD, figures=names)
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == before
    # A user's rc settings do not leak into the figures.
    plain = {p.name: p.read_bytes() for p in plain}
    assert [p.read_bytes() for p in styled] == [plain[n] for n in names]
    # Importing the module neither imports pyplot nor picks a backend.
    code = "import sys, weightreg.plots; print('matplotlib.pyplot' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(plots.__file__).parents[1])})
    assert res.stdout.strip() == "False"


def test_main_reads_threshold_from_params(full, tmp_path):
    plots_dir, rendered = full  # rendered with threshold=THRESHOLD
    with_threshold = {p.name: p.read_bytes() for p in rendered}["influence_scatter.png"]
    (tmp_path / "params.yaml").write_text(f"threshold: {THRESHOLD}\n")
    args = ["--plots-dir", str(plots_dir), "--figure", "influence_scatter.png"]
    assert plots.main([*args, "--out-dir", str(tmp_path / "a"), "--params", str(tmp_path / "params.yaml")]) == 0
    assert (tmp_path / "a/influence_scatter.png").read_bytes() == with_threshold
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["influence_scatter.png"]
    # No params file and no --threshold: no threshold line, so a different picture.
    assert plots.main([*args, "--out-dir", str(tmp_path / "b"), "--params", str(tmp_path / "absent.yaml")]) == 0
    assert (tmp_path / "b/influence_scatter.png").read_bytes() != with_threshold


# ---------------------------------------------------------------------------------------------
# The offline template for `dvc plots show`
# ---------------------------------------------------------------------------------------------

# dvc.yaml's top-level `plots:` entries (kept here so the test proves they render offline). The
# first one stands in for the plot stage's `plots: - plots/plot` output: in the project's dvc.yaml
# it must not be repeated at the top level, or every PNG shows twice.
DVC_PLOTS_YAML = """\
plots:
  - plots/plot
  - generator_loss:
      title: Generator training loss
      template: linear
      x: epoch
      y:
        plots/train_generator/loss.csv: loss
  - loop_max_influence:
      title: "Adversarial loop: max influence"
      template: linear
      x: iteration
      y:
        plots/adversarial_loop/trace.csv: max_influence
  - loop_ess:
      title: "Adversarial loop: Kish ESS"
      template: linear
      x: iteration
      y:
        plots/adversarial_loop/trace.csv: ess
  - loop_records_above:
      title: "Adversarial loop: records above threshold"
      template: linear
      x: iteration
      y:
        plots/adversarial_loop/trace.csv: records_above
  - weight_quantiles:
      title: Weight quantiles before and after recalibration
      template: linear
      x: quantile
      y:
        plots/recalibrate/weight_quantiles.csv: [before, after]
  - top_multipliers:
      title: Largest recalibration multipliers
      template: bar_horizontal
      x: multiplier
      y:
        plots/recalibrate/top_multipliers.csv: target
  - top_offenders:
      title: Most influential households
      template: bar_horizontal_sorted
      x: max_influence
      y:
        plots/diagnose/top_offenders.csv: household_id
"""

# The .dvc/config line the lead adds; DVC resolves a relative html_template against .dvc/.
DVC_CONFIG_PLOTS = "[plots]\n    html_template = ../src/weightreg/templates/dvc_plots.html\n"

SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc\s*=", re.IGNORECASE)


def _inlined_versions(html: str) -> dict[str, str]:
    return dict(re.findall(r"/\* (vega|vega-lite|vega-embed)@([0-9.]+) \(npm", html))


def test_template_is_self_contained():
    html = TEMPLATE.read_text(encoding="utf8")
    assert html.count("{plot_divs}") == 1  # DVC refuses a template without it
    assert "{scripts}" not in html  # DVC would inject its CDN <script src> tags there
    assert not SCRIPT_SRC.search(html)
    assert _inlined_versions(html).keys() == {"vega", "vega-lite", "vega-embed"}
    assert "</script" not in html.replace("\n    </script>", "")  # only our own closing tags


def test_template_matches_the_libraries_dvc_loads():
    vega = pytest.importorskip("dvc_render.vega")
    loaded = dict(re.findall(r"npm/(vega|vega-lite|vega-embed)@([0-9.]+)", vega.VegaRenderer.SCRIPTS))
    if not loaded:
        pytest.skip("this dvc-render does not load vega from a CDN")
    assert _inlined_versions(TEMPLATE.read_text(encoding="utf8")) == loaded, (
        "dvc-render loads other vega versions than the template inlines: update the versions in "
        "scripts/build_plots_template.sh and re-run it"
    )


def _dvc(args, cwd):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_IGNORE_UPDATES": "1"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.fixture(scope="module")
def dvc_pages(tmp_path_factory, full):
    """``dvc plots show`` in a throw-away repo, with the project's template config and without."""
    pytest.importorskip("dvc")
    repo = tmp_path_factory.mktemp("dvcrepo")
    res = _dvc(["init", "--no-scm", "-q"], repo)
    assert res.returncode == 0, res.stderr
    shutil.copytree(full[0], repo / "plots")
    shutil.copytree(full[1][0].parent, repo / "plots/plot")
    (repo / "dvc.yaml").write_text(DVC_PLOTS_YAML)
    templates = repo / "src/weightreg/templates"
    templates.mkdir(parents=True)
    shutil.copy(TEMPLATE, templates / TEMPLATE.name)
    res = _dvc(["plots", "show", "-o", "default_page"], repo)
    assert res.returncode == 0, res.stderr
    with open(repo / ".dvc/config", "a") as fh:
        fh.write(DVC_CONFIG_PLOTS)
    res = _dvc(["plots", "show", "-o", "offline_page"], repo)
    assert res.returncode == 0, res.stderr
    return repo / "default_page/index.html", repo / "offline_page/index.html"


def test_dvc_plots_show_uses_the_offline_template(dvc_pages):
    default, offline = (p.read_text(encoding="utf8") for p in dvc_pages)
    assert SCRIPT_SRC.search(default) and "cdn.jsdelivr.net" in default  # what the template avoids
    assert not SCRIPT_SRC.search(offline)
    assert "cdn" not in offline.lower().replace("vega-embed", "")
    # Every vega plot of DVC_PLOTS_YAML is on the page, and the PNGs are linked locally.
    ids = re.findall(r"vegaEmbed\('#([^']+)'", offline)
    assert len(ids) == 7
    body = offline[offline.index("</head>"):]  # the inlined libraries hold <img src=...> templates
    images = re.findall(r'<img src="([^"]+)"', body)
    assert sorted(Path(src).name.split("plots_plot_")[-1] for src in images) == sorted(FIGURES)
    for src in images:
        assert not src.startswith(("http:", "https:", "//"))
        assert (dvc_pages[1].parent / src).is_file()


NODE_CHECK = textwrap.dedent("""
    // Run the page's inline libraries in a bare VM (no DOM, no network) and render every spec to SVG.
    const fs = require('fs'), vm = require('vm');
    const html = fs.readFileSync(process.argv[2], 'utf8');
    const ctx = {console, setTimeout, clearTimeout, Promise, URL, TextEncoder, TextDecoder};
    ctx.self = ctx; ctx.globalThis = ctx;
    vm.createContext(ctx);
    const specs = [];
    for (const [, attrs, body] of html.matchAll(/<script([^>]*)>([\\s\\S]*?)<\\/script>/g)) {
      const m = body.match(/var spec = ([\\s\\S]*);\\s*vegaEmbed\\(/);
      if (m) specs.push(JSON.parse(m[1])); else vm.runInContext(body, ctx);
    }
    (async () => {
      const out = {versions: [ctx.vega.version, ctx.vegaLite.version, ctx.vegaEmbed.version], marks: []};
      for (const spec of specs) {
        const view = new ctx.vega.View(ctx.vega.parse(ctx.vegaLite.compile(spec).spec), {renderer: 'none'});
        const svg = await view.toSVG();
        out.marks.push((svg.match(/<path|<line|<rect/g) || []).length);
      }
      console.log(JSON.stringify(out));
    })().catch(e => { console.error(e); process.exit(1); });
""")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_offline_page_renders_without_network(dvc_pages, tmp_path):
    import json

    script = tmp_path / "check.js"
    script.write_text(NODE_CHECK)
    res = subprocess.run(["node", str(script), str(dvc_pages[1])], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["versions"] == [_inlined_versions(TEMPLATE.read_text(encoding="utf8"))[k]
                                  for k in ("vega", "vega-lite", "vega-embed")]
    assert len(result["marks"]) == 7 and min(result["marks"]) > 10
