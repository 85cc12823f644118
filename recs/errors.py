"""Every error the project raises on purpose, in one leaf module that imports no stage.

An operator can act on each of them, so the CLI prints them as one line and exits 1 instead of
showing a traceback. ``StepSkipped`` is not a failure: a step that has nothing to do for a date
raises it, and the ledger records the step as ``skipped`` (which counts as done).
"""


class StepSkipped(Exception):
    """A step has nothing to do for a date (e.g. not enough history to train).

    The same date and data would skip again; ``--force`` redoes it.
    """


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


class MissingInputError(FileNotFoundError):
    """A raw input partition the step needs is not there."""


class CountMismatchError(RuntimeError):
    """read != written + quarantined + duplicates: something was lost or invented."""


class FeedRejectedError(ValueError):
    """A feed is empty, mostly bad, or far below its usual volume: the night must not use it."""


class MissingTableError(RuntimeError):
    """A stage needs a table (or a date of it) that an earlier stage has not written."""


class NothingToRestoreError(RuntimeError):
    """A date's partition has no earlier version to put back."""


class StepNotDoneError(RuntimeError):
    """A step needs an earlier step of the same date that is recorded as failed or unfinished."""


class TrainingDataError(ValueError):
    """The examples cannot train a model: wrong feature spec, or no validation day."""


class DataError(ValueError):
    """An example batch does not match the feature spec (width, nulls, bucket range)."""


class ArtifactError(RuntimeError):
    """The directory is not a complete, untampered model artefact this code can load."""


class ReplicaMismatchError(RuntimeError):
    """The ranks finished training with different weights: gradient averaging is broken."""


class ClusterResourcesError(RuntimeError):
    """No executor registered in time: the cluster cannot place one of the requested size."""


KNOWN_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    MissingInputError,
    MissingTableError,
    NothingToRestoreError,
    CountMismatchError,
    FeedRejectedError,
    StepNotDoneError,
    TrainingDataError,
    DataError,
    ArtifactError,
    ReplicaMismatchError,
    ClusterResourcesError,
)
