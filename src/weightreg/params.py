"""Read the pipeline's ``params.yaml``: the top-level knobs and one section per stage."""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ParameterError


def load_params(path="params.yaml") -> dict:
    """Load ``params.yaml`` as a dict (an error naming the file when it is missing or not a mapping)."""
    path = Path(path)
    if not path.exists():
        raise ParameterError(f"{path}: no such params file; run from the project root or pass --params.")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ParameterError(f"{path}: expected a mapping of params, found {type(params).__name__}.")
    params["_path"] = str(path)
    return params


def get(params: dict, dotted: str, default=ParameterError):
    """The value at ``a.b.c`` in ``params``; without a default, a missing key names the key and file."""
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is ParameterError:
                raise ParameterError(
                    f"{params.get('_path', 'params.yaml')}: missing param '{dotted}'; add it (see the README's params table)."
                )
            return default
        node = node[part]
    return node


def positive(params: dict, dotted: str, value=None, *, allow_none=False, integer=False):
    """Validate a positive number param, naming it in the error."""
    value = get(params, dotted) if value is None else value
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ParameterError(f"{params.get('_path', 'params.yaml')}: param '{dotted}' = {value!r} must be {kind}.")
    return int(value) if integer else float(value)
