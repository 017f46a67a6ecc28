"""The exceptions weightreg raises: each message says what is wrong and what to do next."""


class WeightregError(Exception):
    """Base class of every error raised on purpose by weightreg."""


class SurveyFormatError(WeightregError, ValueError):
    """A file is not a PolicyEngine-format survey store, or lacks a table."""


class SurveyValidationError(WeightregError, ValueError):
    """A survey's tables are inconsistent; ``problems`` lists every problem found."""

    def __init__(self, problems, source=None):
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) found{where}:\n{lines}")


class ParameterError(WeightregError, KeyError):
    """An unknown or invalid parameter path, reform or param value."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CalibrationError(WeightregError, ValueError):
    """A calibration problem rejected before solving (its message carries the numbers)."""


class InfeasibleError(CalibrationError):
    """A hard calibration problem that could not be met; try soft targets (``penalty=``)."""


class GeneratorError(WeightregError, RuntimeError):
    """The household generator could not be trained, loaded or sampled."""


class FeatureError(WeightregError, ValueError):
    """A flat household row that cannot be built into a valid household."""


class OptionalDependencyError(WeightregError, ImportError):
    """A feature needs an optional extra that is not installed; the message says how to install it."""
