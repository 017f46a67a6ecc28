"""Write each stage's artifacts (metrics JSON, plot CSVs, tables), shared by the CLI and stages/.

Every file is written atomically (temporary file, then rename). The CSV schemas are the ones
:mod:`weightreg.plots` reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, write_csv, write_json

def write_parquet(frame: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_diagnosis(diagnosis, data, *, metrics_path, plots_dir, records_path=None, top: int = 20, seed: int = 0):
    """Write a :class:`weightreg.diagnose.Diagnosis`: metrics, per-record table and plot CSVs.

    Args:
        diagnosis: the result.
        data: the :class:`SurfaceData` it was scored on (for the influence heatmap).
        metrics_path: JSON of numbers (``Diagnosis.to_metrics``).
        plots_dir: folder for ``ess_by_slice.csv``, ``weight_quantiles.csv``, ``top_offenders.csv``,
            ``influence_scatter.csv`` and ``influence_heatmap.csv``.
        records_path: per-record parquet (id, weight, max influence, worst statistic, violations).
        top: rows in the offenders table and size of the heatmap.
        seed: seeds the scatter plot's subsample of records below the threshold.
    """
    from .diagnose import influence_table
    from .plots import offender_kinds, quantile_table, scatter_table

    plots_dir = Path(plots_dir)
    write_json(diagnosis.to_metrics(), metrics_path)
    records = diagnosis.records
    if records_path is not None:
        write_parquet(records, records_path)
    write_csv(diagnosis.ess_by_slice, plots_dir / "ess_by_slice.csv")
    w = records["weight"].to_numpy(dtype=float)
    write_csv(quantile_table(weight=w), plots_dir / "weight_quantiles.csv")
    ranked = records.sort_values(["max_influence", "household_id"], ascending=[False, True], kind="stable")
    write_csv(ranked.head(top), plots_dir / "top_offenders.csv")
    scatter = scatter_table(records["household_id"], w, records["max_influence"], threshold=diagnosis.threshold,
                            rng=np.random.default_rng(seed), offender=offender_kinds(records, diagnosis.threshold))
    write_csv(scatter, plots_dir / "influence_scatter.csv")
    positions = ranked.index.to_numpy()[:top]
    write_csv(influence_table(data, positions, w, top), plots_dir / "influence_heatmap.csv")
