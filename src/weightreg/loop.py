"""The adversarial loop: detect the worst offenders, spawn offspring, split weight, recalibrate, repeat.

Each round:

1. diagnose the current survey on the reporting surface (baseline and the same random reforms as
   ``diagnose``); the metrics are re-simulated every round, since new households arrived and, with
   PolicyEngine, some household values depend on other households' weights;
2. take up to ``records_per_round`` households above the threshold, among those the flat
   representation covers (others are reported, never truncated). Households above it on a statistic
   that is not *thin* go first, heaviest first: splitting a large weight spreads the most mass. A
   thin statistic has fewer than ``1 / threshold`` contributing households, so some share exceeds
   the threshold whatever the weights; only offspring landing in its cell can help, so households
   above the threshold only on thin statistics come last;
3. split each one's weight into ``k`` equal pieces, ``k`` from its worst influence
   (:func:`weightreg.offspring.pieces_needed`), capped at ``max_offspring + 1``: the parent keeps
   one piece and ``k - 1`` offspring sampled near it (:func:`weightreg.generator.sample_offspring`)
   take the rest. Total weight is conserved exactly;
4. recalibrate to the targets with the entropy-regularised solver, prior = the split weights, so
   the solution stays as close to them as the targets allow. The weights split are the survey's
   own starting weights carried through every split (not the last round's solution), so soft-target
   adjustments never compound from round to round;

and stops when no source household is above the threshold, when ``patience`` rounds make no
progress, or after ``max_rounds``. It returns the best round's survey (:attr:`LoopResult.best_round`),
not necessarily the last: new offspring change the statistics' cells, so a round can leave more
offenders than the one before.

Every figure of progress counts *source* households (:mod:`weightreg.sources`): a parent and all its
offspring are one sampled household, whose share of a statistic is the combined share of its rows.
Splitting a household into near-copies lowers each row's share and raises the row ESS without
making any statistic rest on more sampled households, so it must never count as progress by
itself. Offenders are the source households above the threshold; progress is fewer of them (on all
statistics, on the baseline, or on statistics that are not thin), a source max influence 0.1%
lower, or a source Kish ESS 1% higher; the best round has the fewest source households above the
threshold on statistics that are not thin. The row figures are kept in the trace beside them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import features as F
from .calibrate import calibrate
from .diagnose import Diagnosis, evaluate_surface, min_contributors, simulate_surface
from .offspring import pieces_needed, root_households, spawn
from .sources import source_ids
from .survey import Survey
from .targets import build_target_matrix


@dataclass
class LoopResult:
    """What :func:`regularise_loop` did.

    Attributes:
        survey: the augmented survey (original households plus offspring, recalibrated weights).
        success: no source household above the threshold on the final diagnosis.
        message: why the loop stopped, in words.
        nit: rounds run.
        trace: one row per diagnosis (round 0 = before any change).
        before, after: the first diagnosis, and that of the survey returned.
        households_added: offspring households in the survey returned.
        max_rel_target_error: of the survey returned.
        best_round: the round whose survey is returned: the fewest source households above the
            threshold on statistics that are not thin (ties: fewer such sources on the baseline, then
            higher source Kish ESS). Offspring change the surface, so a later round can be worse than an earlier one.
        ineligible_offenders: offenders that could not be parents (beyond the flat layout).
    """

    survey: Survey
    success: bool
    message: str
    nit: int
    trace: pd.DataFrame
    before: Diagnosis
    after: Diagnosis
    households_added: int
    max_rel_target_error: float
    ineligible_offenders: list = field(default_factory=list)
    best_round: int = 0

    def to_metrics(self) -> dict:
        best = self.trace.iloc[self.best_round]
        first = self.trace.iloc[0]
        return {
            # Source households first: a parent and its offspring are one sampled household.
            "sources_above_threshold_before": int(first["sources_above"]),
            "sources_above_threshold_after": int(best["sources_above"]),
            "sources_above_threshold_not_thin_before": int(first["sources_above_not_thin"]),
            "sources_above_threshold_not_thin_after": int(best["sources_above_not_thin"]),
            "baseline_sources_above_threshold_before": int(first["baseline_sources_above"]),
            "baseline_sources_above_threshold_after": int(best["baseline_sources_above"]),
            "baseline_sources_above_threshold_not_thin_after": int(best["baseline_sources_above_not_thin"]),
            "source_max_influence_before": float(self.before.max_influence_source),
            "source_max_influence_after": float(self.after.max_influence_source),
            "source_ess_before": float(self.before.source_kish.kish_ess),
            "source_ess_after": float(self.after.source_kish.kish_ess),
            "sources": int(self.after.source_kish.n),
            "iterations": int(self.nit),
            "converged": bool(self.success),
            "households_added": int(self.households_added),
            "households_before": int(len(self.before.records)),
            "households_after": int(len(self.after.records)),
            "records_above_threshold_before": int(self.before.n_above),
            "records_above_threshold_after": int(self.after.n_above),
            "baseline_records_above_threshold_before": int(self.trace["baseline_records_above"].iloc[0]),
            "baseline_records_above_threshold_after": int(self.trace["baseline_records_above"].iloc[self.best_round]),
            "records_above_threshold_not_thin_before": int(self.trace["records_above_not_thin"].iloc[0]),
            "records_above_threshold_not_thin_after": int(self.trace["records_above_not_thin"].iloc[self.best_round]),
            "baseline_records_above_threshold_not_thin_after": int(
                self.trace["baseline_records_above_not_thin"].iloc[self.best_round]
            ),
            "best_round": int(self.best_round),
            "max_influence_before": float(self.before.max_influence),
            "max_influence_after": float(self.after.max_influence),
            "ess_before": float(self.before.kish.kish_ess),
            "ess_after": float(self.after.kish.kish_ess),
            "max_rel_target_error": float(self.max_rel_target_error),
            "ineligible_offenders": len(self.ineligible_offenders),
        }


def baseline_only(data):
    """The same surface without its reforms (to count offenders on the baseline surface alone)."""
    return dataclasses.replace(data, deltas=np.asarray(data.deltas)[:0], reforms=())


#: Source figures that count as progress when they fall (counts: any fall; the max influence: 0.1%).
PROGRESS_COUNTS = ("sources_above", "baseline_sources_above", "sources_above_not_thin")
#: A round must lower the source max influence by this share, or raise the source ESS by ESS_GAIN,
#: to count as progress: recalibration to a tolerance moves both by rounding alone.
INFLUENCE_GAIN = 1e-3
ESS_GAIN = 0.01


def _stalled(rows: list[dict], patience: int) -> bool:
    """True when none of the last ``patience`` rounds improved on the best source figures before them."""
    if len(rows) <= patience:
        return False
    earlier, recent = rows[:-patience], rows[-patience:]
    best = {k: min(r[k] for r in earlier) for k in PROGRESS_COUNTS}
    best_influence = min(r["source_max_influence"] for r in earlier)
    best_ess = max(r["source_ess"] for r in earlier)
    improved = (
        any(r[k] < best[k] for r in recent for k in PROGRESS_COUNTS)
        or any(r["source_max_influence"] < (1 - INFLUENCE_GAIN) * best_influence for r in recent)
        or any(r["source_ess"] > (1 + ESS_GAIN) * best_ess for r in recent)
    )
    return not improved


def _rank(row: dict) -> tuple:
    """Order of rounds, best first: fewest source households above the threshold on statistics that are
    not thin, then fewest such on the baseline, then highest source Kish ESS."""
    return (row["sources_above_not_thin"], row["baseline_sources_above_not_thin"], -row["source_ess"])


def _thin_note(diag: Diagnosis) -> str:
    return (
        f"{diag.n_above_thin_only_sources} of the source households above exceed it only on thin statistics "
        f"({diag.n_thin_statistics_sources} statistics have fewer than {min_contributors(diag.threshold)} contributing "
        f"source households, so some share exceeds {diag.threshold:g} whatever the weights; only more households in "
        "those cells can fix them)"
    )


def _offenders(diag: Diagnosis, base: Diagnosis, threshold: float) -> pd.DataFrame:
    """One row to split per source household above the threshold, in the order they are handled.

    The row is the source's heaviest (the first in household order on ties); ``source_max_influence``
    is the source's. Sources above the threshold on a baseline statistic that is not thin go first,
    then other sources above it on a statistic that is not thin, then those above it only on thin
    statistics (only offspring landing in their cell can help them); heaviest source first within
    each group: splitting a large weight spreads the most mass.
    """
    rec = diag.records
    src = diag.sources.set_index("source_id")
    above = src.index[(src["max_influence"] > threshold) & (src["weight"] > 0)]
    rows = rec[rec["source_id"].isin(above) & (rec["weight"] > 0)]
    rows = rows.sort_values(["source_id", "weight"], ascending=[True, False], kind="stable")
    offenders = rows.drop_duplicates("source_id").copy()
    ids = offenders["source_id"].to_numpy()
    offenders["source_weight"] = src.loc[ids, "weight"].to_numpy()
    offenders["thin_only"] = src.loc[ids, "max_influence_not_thin"].to_numpy() <= threshold
    base_src = base.sources.set_index("source_id")
    offenders["baseline"] = base_src.loc[ids, "max_influence_not_thin"].to_numpy() > threshold
    return offenders.sort_values(["baseline", "thin_only", "source_weight", "source_max_influence"],
                                 ascending=[False, True, False, False], kind="stable")


def _target_error(survey: Survey, targets: pd.DataFrame) -> float:
    rel = build_target_matrix(survey, targets).relative_errors(survey.weights)
    return float(np.abs(rel).max()) if len(rel) else 0.0


def regularise_loop(
    survey: Survey,
    targets: pd.DataFrame,
    model,
    *,
    reforms,
    rng: np.random.Generator,
    threshold: float = 0.05,
    records_per_round: int = 25,
    max_rounds: int = 10,
    max_offspring: int = 20,
    conditioning_fractions=(0.2, 0.8),
    penalty=None,
    tol: float = 1e-8,
    surface: dict | None = None,
    patience: int = 2,
    always_hold=(),
    simulate=None,
    progress: bool = False,
    log=print,
) -> LoopResult:
    """Run the adversarial loop on ``survey`` (see the module docstring).

    Args:
        survey: the starting survey (its weights are the starting weights).
        targets: the calibration targets (``targets.csv`` rows).
        model: a trained :class:`weightreg.generator.HouseholdGenerator`.
        reforms: the random reforms of the surface (the same list ``diagnose`` uses).
        rng: drives offspring sampling.
        threshold: influence share above which a record is an offender.
        records_per_round: offenders handled per round, worst first.
        max_rounds: rounds at most.
        max_offspring: offspring per parent at most.
        conditioning_fractions: range (or list) of the share of the parent's features held fixed.
        penalty: ``None`` for hard targets in each recalibration, else the soft-target penalty.
        tol: solver tolerance.
        surface: keyword arguments of :func:`weightreg.diagnose.simulate_surface` (metrics, dimensions, ...).
        patience: rounds without progress before stopping.
        always_hold: feature columns every offspring keeps from its parent (see
            :func:`weightreg.generator.sample_offspring`).
        simulate: ``simulate(survey, reforms) -> SurfaceData`` (e.g. the PolicyEngine backend via
            :func:`weightreg.runners.simulate_surface_from_params`); default: the builtin model with ``surface``.
        progress: show progress bars.
        log: called with one line per round (``None`` for silence).
    """
    from .generator import sample_offspring

    surface = dict(surface or {})
    spec = model.spec
    rows = []
    added = 0
    ineligible: list = []
    current = survey
    # The prior of every recalibration: the starting weights, split along with their households.
    # Recalibrating from it (not from the last round's solution) keeps the weights KL-close to the
    # survey's own: soft-target adjustments do not compound from round to round.
    reference = np.asarray(survey.weights, dtype=float)
    target_error = _target_error(current, targets)
    diag = None
    first = None
    best = None  # (round, its survey, its diagnosis); its figures are rows[round]
    message = ""
    success = False
    nit = 0
    for round_number in tqdm(range(max_rounds + 1), desc="rounds", disable=not progress):
        data = simulate(current, reforms) if simulate else simulate_surface(current, reforms=reforms, **surface)
        if data.source_id is None:  # a simulate= that builds its SurfaceData itself: sources come from the survey
            data = dataclasses.replace(data, source_id=source_ids(current))
        diag = evaluate_surface(data, threshold=threshold)
        base = evaluate_surface(baseline_only(data), threshold=threshold)
        first = first or diag
        row = {
            "iteration": round_number,
            "sources_above": diag.n_above_sources,
            "sources_above_not_thin": diag.n_above_not_thin_sources,
            "baseline_sources_above": base.n_above_sources,
            "baseline_sources_above_not_thin": base.n_above_not_thin_sources,
            "source_max_influence": diag.max_influence_source,
            "source_ess": diag.source_kish.kish_ess,
            "sources": diag.source_kish.n,
            "records_above": diag.n_above,
            "records_above_not_thin": diag.n_above - diag.n_above_thin_only,
            "baseline_records_above": base.n_above,
            "baseline_records_above_not_thin": base.n_above - base.n_above_thin_only,
            "max_influence": diag.max_influence,
            "ess": diag.kish.kish_ess,
            "max_rel_target_error": target_error,
            "households_added": added,
            "households": current.n_households,
        }
        rows.append(row)
        if best is None or _rank(row) < _rank(rows[best[0]]):
            best = (round_number, current, diag)
        if log:
            log(
                f"round {round_number}: {diag.n_above_sources} source households above {threshold:g} "
                f"({row['sources_above_not_thin']} on statistics that are not thin; "
                f"{row['baseline_sources_above']} on the baseline, {row['baseline_sources_above_not_thin']} not thin), "
                f"source max influence {diag.max_influence_source:.4f}, source ESS {row['source_ess']:,.0f}; "
                f"rows: {diag.n_above} above, ESS {diag.kish.kish_ess:,.0f}; "
                f"max target error {target_error:.2e}, households added {added}"
            )
        if diag.n_above_sources == 0:
            success, message = True, (
                f"no source household above the threshold {threshold:g} after {round_number} round(s)")
            break
        if round_number > 0 and _stalled(rows, patience):
            message = (
                f"stopped after round {round_number}: no progress for {patience} round(s) (neither fewer source "
                f"households above the threshold, on all surfaces, on the baseline or on statistics that are not "
                f"thin, nor a source max influence {INFLUENCE_GAIN:.1%} lower, nor a source Kish ESS "
                f"{ESS_GAIN:.0%} higher; now {row['sources_above']} source households above, source max influence "
                f"{row['source_max_influence']:.4f}); " + _thin_note(diag)
            )
            break
        if round_number == max_rounds:
            message = (
                f"reached max_rounds={max_rounds} with {diag.n_above_sources} source households still above the "
                f"threshold (source max influence {diag.max_influence_source:.4f} on {diag.worst_statistic_source}); "
                "raise loop.max_rounds or loop.max_offspring; " + _thin_note(diag)
            )
            break

        extraction = F.extract(current, spec)
        eligible_ids = current.household_ids[extraction.eligible]
        offenders = _offenders(diag, base, threshold)
        # An offender that is itself an offspring splits its own weight, but its offspring are sampled
        # near its root, the real household of the starting survey it descends from: conditioning on a
        # synthetic household would compound the generator's errors generation after generation.
        offenders["root"] = root_households(current, offenders["household_id"].to_numpy())
        is_eligible = offenders["root"].isin(eligible_ids)
        ineligible.extend(offenders.loc[~is_eligible, "household_id"].tolist())
        offenders = offenders[is_eligible].head(records_per_round)
        if offenders.empty:
            message = ("stopped: every source household above the threshold lies beyond the flat layout (not eligible "
                       "as a parent)")
            break
        pieces = pieces_needed(offenders["source_max_influence"].to_numpy(), threshold, max_offspring + 1)
        parent_ids = offenders["household_id"].to_numpy()
        roots = offenders["root"].to_numpy()
        parent_features = extraction.features.loc[roots].set_axis(pd.Index(parent_ids, name="household_id"))
        sampled = sample_offspring(model, parent_features, pieces - 1, conditioning_fractions, rng,
                                   always_hold=always_hold)
        spawned = spawn(current.with_weights(reference), parent_ids, pieces, sampled, parent_features, spec,
                        round_number + 1, rng=rng, feature_sources=roots)
        candidate = spawned.survey
        tm = build_target_matrix(candidate, targets)
        fit = calibrate(tm.matrix, tm.values, candidate.weights, penalty=penalty, tol=tol, target_names=tm.names)
        if not fit.success:
            message = f"stopped in round {round_number + 1}: recalibration failed: {fit.message}"
            break
        reference = np.asarray(candidate.weights, dtype=float)
        current = candidate.with_weights(fit.weights)
        target_error = float(fit.max_rel_error)
        added += len(spawned.new_household_ids)
        nit = round_number + 1
    trace = pd.DataFrame(rows)
    best_round, best_survey, best_diag = best
    best_row = rows[best_round]
    if best_round != len(rows) - 1:
        message += (
            f"; returning round {best_round}'s survey, the best seen ({best_row['sources_above_not_thin']} source "
            f"households above the threshold on statistics that are not thin, against "
            f"{rows[-1]['sources_above_not_thin']} in the last round)"
        )
    return LoopResult(
        survey=best_survey,
        success=success,
        message=message,
        nit=nit,
        trace=trace,
        before=first,
        after=best_diag,
        households_added=best_row["households_added"],
        max_rel_target_error=best_row["max_rel_target_error"],
        ineligible_offenders=sorted(set(ineligible)),
        best_round=best_round,
    )
