"""Tax-benefit parameters: one nested tree addressed by dotted paths, and reforms to it.

The packaged ``parameters.yaml`` holds the 2025-26 UK rates. A *reform* maps dotted paths to
either a new value or an operation on the baseline value::

    {"income_tax.personal_allowance": 15000,              # set
     "income_tax.rates.basic": {"multiply": 1.1},          # scale
     "universal_credit.taper": {"add": -0.05}}             # shift

:class:`Parameters` objects are immutable in practice: ``apply_reform`` returns a new object, and
``to_dict`` returns a copy.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from numbers import Real
from pathlib import Path

import numpy as np
import yaml

from .errors import ParameterError

__all__ = [
    "Parameters",
    "load_parameters",
    "REFORMABLE_PATHS",
    "REFORM_OPERATIONS",
    "random_reforms",
]

#: The top-level key whose leaves may be non-numeric (descriptive only; not parameters).
METADATA_KEY = "metadata"

#: The operations a reform entry may use instead of a plain new value.
REFORM_OPERATIONS = ("multiply", "add", "value")

#: Paths that random reforms may perturb: rates, thresholds, allowances, benefit amounts and tapers.
#: (Counts and ages such as ``universal_credit.child_limit`` and ``state_pension.pension_age`` are
#: deliberately excluded: scaling them by a random multiplier is not meaningful.)
REFORMABLE_PATHS: tuple[str, ...] = (
    "income_tax.personal_allowance",
    "income_tax.allowance_taper_threshold",
    "income_tax.rates.basic",
    "income_tax.rates.higher",
    "income_tax.rates.additional",
    "income_tax.thresholds.higher",
    "income_tax.thresholds.additional",
    "national_insurance.class_1.primary_threshold",
    "national_insurance.class_1.upper_earnings_limit",
    "national_insurance.class_1.main_rate",
    "national_insurance.class_1.upper_rate",
    "national_insurance.class_4.lower_profits_limit",
    "national_insurance.class_4.upper_profits_limit",
    "national_insurance.class_4.main_rate",
    "national_insurance.class_4.upper_rate",
    "child_benefit.eldest_weekly",
    "child_benefit.additional_weekly",
    "child_benefit.high_income_charge.threshold",
    "universal_credit.standard_allowance_monthly.single_under_25",
    "universal_credit.standard_allowance_monthly.single_25_plus",
    "universal_credit.standard_allowance_monthly.couple_both_under_25",
    "universal_credit.standard_allowance_monthly.couple_one_25_plus",
    "universal_credit.child_element_monthly.first",
    "universal_credit.child_element_monthly.subsequent",
    "universal_credit.work_allowance_monthly.with_housing",
    "universal_credit.work_allowance_monthly.without_housing",
    "universal_credit.taper",
    "housing_costs.monthly_cap",
    "pension_credit.standard_minimum_guarantee_weekly.single",
    "pension_credit.standard_minimum_guarantee_weekly.couple",
    "housing_benefit.applicable_amount_weekly.single",
    "housing_benefit.applicable_amount_weekly.couple",
    "housing_benefit.taper",
    "state_pension.uprating",
)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of ``tree`` as ``{dotted.path: float}`` in file order (metadata skipped)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        if not isinstance(key, str) or not key or "." in key:
            raise ParameterError(
                f"parameter key {key!r} under '{prefix.rstrip('.') or '<root>'}' is invalid: "
                "keys must be non-empty strings without dots"
            )
        path = prefix + key
        if not prefix and key == METADATA_KEY:
            continue
        if isinstance(value, Mapping):
            if not value:
                raise ParameterError(f"parameter group '{path}' is empty; remove it or give it values")
            out.update(_flatten(value, path + "."))
        elif _is_number(value):
            if not math.isfinite(value):
                raise ParameterError(f"parameter '{path}' is {value}; every parameter must be finite")
            out[path] = float(value)
        else:
            raise ParameterError(
                f"parameter '{path}' is {value!r} ({type(value).__name__}); every leaf outside "
                f"'{METADATA_KEY}' must be a number"
            )
    return out


def _set_leaf(tree: dict, path: str, value: float) -> None:
    node = tree
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value


def _unknown_path_error(path, valid: Sequence[str], what: str = "parameter path") -> ParameterError:
    text = str(path)
    close = difflib.get_close_matches(text, valid, n=5, cutoff=0.6)
    if not close:
        # Fall back to matching on the last segment (``basic`` -> ``income_tax.rates.basic``).
        leaf = text.rsplit(".", 1)[-1]
        by_leaf = {p: p.rsplit(".", 1)[-1] for p in valid}
        leaf_hits = difflib.get_close_matches(leaf, list(set(by_leaf.values())), n=5, cutoff=0.6)
        close = [p for p in valid if by_leaf[p] in leaf_hits][:5]
    hint = f"; nearest valid paths: {', '.join(close)}" if close else ""
    return ParameterError(
        f"unknown {what} {text!r}{hint}. Parameters.paths() lists all {len(valid)} valid paths."
    )


class Parameters:
    """An immutable-in-practice view of the nested parameter tree.

    Args:
        tree: the nested mapping (as read from YAML). Every leaf outside the top-level
            ``metadata`` key must be a finite number.

    Raises:
        ParameterError: if a leaf is not a finite number or a key is malformed.
    """

    __slots__ = ("_tree", "_flat")

    def __init__(self, tree: Mapping):
        if not isinstance(tree, Mapping):
            raise ParameterError(f"parameters must be a mapping, got {type(tree).__name__}")
        self._tree = copy.deepcopy(dict(tree))
        self._flat = _flatten(self._tree)
        if not self._flat:
            raise ParameterError("parameter tree has no numeric parameters")

    # ---- reading --------------------------------------------------------------------------
    def get(self, path: str) -> float:
        """The value at dotted ``path``.

        Raises:
            ParameterError: if ``path`` is not a numeric leaf; the message lists the nearest
                valid paths (or, for a group, its parameters).
        """
        try:
            return self._flat[path]
        except (KeyError, TypeError):
            raise self._path_error(path) from None

    __getitem__ = get

    def __contains__(self, path) -> bool:
        return path in self._flat

    def paths(self) -> list[str]:
        """Every numeric leaf path, in file order."""
        return list(self._flat)

    def to_dict(self) -> dict:
        """A deep copy of the nested tree (metadata included)."""
        return copy.deepcopy(self._tree)

    def flat(self) -> dict[str, float]:
        """``{path: value}`` for every numeric leaf (a copy)."""
        return dict(self._flat)

    def _path_error(self, path) -> ParameterError:
        if isinstance(path, str):
            prefix = path + "."
            children = [p for p in self._flat if p.startswith(prefix)]
            if children:
                return ParameterError(
                    f"{path!r} is a group, not a parameter; its parameters are: {', '.join(children)}"
                )
        return _unknown_path_error(path, self.paths())

    # ---- reforms --------------------------------------------------------------------------
    def apply_reform(self, reform: Mapping | None) -> Parameters:
        """A new :class:`Parameters` with ``reform`` applied (``self`` is unchanged).

        Args:
            reform: ``{path: value}`` where value is a number (the new value) or a one-key
                mapping ``{"multiply": m}``, ``{"add": a}`` or ``{"value": v}``. ``None`` or an
                empty mapping returns an equal copy.

        Raises:
            ParameterError: for an unknown path (listing the nearest valid ones), a malformed
                entry, or a resulting value that is negative or not finite.
        """
        if reform is None:
            return Parameters(self._tree)
        if not isinstance(reform, Mapping):
            raise ParameterError(
                f"a reform must be a mapping of parameter paths to values, got {type(reform).__name__}"
            )
        tree = copy.deepcopy(self._tree)
        for path, change in reform.items():
            if path not in self._flat:
                raise self._path_error(path)
            new = _reformed_value(path, self._flat[path], change)
            _set_leaf(tree, path, new)
        return Parameters(tree)

    # ---- dunder ---------------------------------------------------------------------------
    def __eq__(self, other) -> bool:
        if not isinstance(other, Parameters):
            return NotImplemented
        return self._flat == other._flat

    __hash__ = None  # mutable-looking container semantics; compare by value

    def __repr__(self) -> str:
        year = self._tree.get(METADATA_KEY, {}).get("year", "?") if isinstance(
            self._tree.get(METADATA_KEY), Mapping
        ) else "?"
        return f"Parameters(year={year!r}, {len(self._flat)} parameters)"


def _reformed_value(path: str, base: float, change) -> float:
    if _is_number(change):
        new = float(change)
    elif isinstance(change, Mapping):
        if len(change) != 1 or next(iter(change)) not in REFORM_OPERATIONS:
            raise ParameterError(
                f"reform entry for '{path}' is {dict(change)!r}; expected a number or a one-key "
                f"mapping with one of {list(REFORM_OPERATIONS)}, e.g. {{'multiply': 1.1}}"
            )
        (op, operand), = change.items()
        if not _is_number(operand) or not math.isfinite(operand):
            raise ParameterError(f"reform entry for '{path}': {op} needs a finite number, got {operand!r}")
        new = {"multiply": base * operand, "add": base + operand, "value": float(operand)}[op]
    else:
        raise ParameterError(
            f"reform entry for '{path}' is {change!r} ({type(change).__name__}); expected a number "
            "or a mapping such as {'multiply': 1.1}"
        )
    if not math.isfinite(new) or new < 0:
        raise ParameterError(
            f"reform sets '{path}' to {new}; parameters must be finite and non-negative"
        )
    return float(new)


@functools.lru_cache(maxsize=1)
def _packaged_parameters() -> Parameters:
    text = resources.files("weightreg").joinpath("parameters.yaml").read_text(encoding="utf-8")
    return Parameters(yaml.safe_load(text))


def load_parameters(path: str | Path | None = None) -> Parameters:
    """Load parameters: the packaged 2025-26 UK rates by default, else the YAML file at ``path``.

    A user file must define every parameter the packaged file defines (it may add more).

    Raises:
        ParameterError: if the file is unreadable as YAML, has non-numeric leaves, or lacks
            parameters (the message lists the missing paths).
        FileNotFoundError: if ``path`` does not exist.
    """
    default = _packaged_parameters()
    if path is None:
        return default
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(tree, Mapping):
        raise ParameterError(f"{path} must hold a mapping of parameter groups, got {type(tree).__name__}")
    try:
        params = Parameters(tree)
    except ParameterError as exc:
        raise ParameterError(f"{path}: {exc}") from None
    missing = [p for p in default.paths() if p not in params]
    if missing:
        raise ParameterError(
            f"{path} lacks {len(missing)} parameter(s) the simulator needs: {', '.join(missing)}"
        )
    return params


def random_reforms(
    k: int,
    rng: np.random.Generator,
    *,
    n_params: tuple[int, int] = (2, 4),
    low: float = 0.8,
    high: float = 1.2,
    paths: Sequence[str] = REFORMABLE_PATHS,
    valid_paths: Sequence[str] | None = None,
) -> list[dict]:
    """``k`` random reforms, each scaling ``n_params[0]``..``n_params[1]`` (inclusive) distinct
    paths by multipliers drawn from U(``low``, ``high``).

    Returns:
        A list of ``{path: {"multiply": m}}`` dicts; the same ``rng`` state gives the same list.

    ``valid_paths`` are the paths ``paths`` must come from: the packaged parameters' when
    ``None``; another model's (PolicyEngine UK's) when its reforms are drawn here.

    Raises:
        ParameterError: if a path is not a parameter of the packaged file (or of ``valid_paths``).
        ValueError: for a negative ``k``, bad ``n_params`` or multiplier range.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    paths = list(dict.fromkeys(paths))  # distinct, order kept
    valid = _packaged_parameters().paths() if valid_paths is None else list(valid_paths)
    for p in paths:
        if p not in valid:
            raise _unknown_path_error(p, valid)
    lo_n, hi_n = (int(n) for n in n_params)
    if not 1 <= lo_n <= hi_n:
        raise ValueError(f"n_params must be (min, max) with 1 <= min <= max, got {n_params!r}")
    if hi_n > len(paths):
        raise ValueError(f"n_params max {hi_n} exceeds the {len(paths)} distinct paths available")
    if not (0 < low <= high and math.isfinite(high)):
        raise ValueError(f"need 0 < low <= high (finite), got low={low}, high={high}")
    reforms = []
    for _ in range(int(k)):
        n = int(rng.integers(lo_n, hi_n + 1))
        chosen = rng.choice(len(paths), size=n, replace=False)
        mults = rng.uniform(low, high, size=n)
        reforms.append({paths[i]: {"multiply": float(m)} for i, m in zip(chosen, mults)})
    return reforms
