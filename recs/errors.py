"""Errors an operator can act on; the CLI prints them as one line instead of a traceback."""

from recs.config import ConfigError
from recs.ingest import CountMismatchError, FeedRejectedError, MissingInputError
from recs.ledger import StepNotDoneError
from recs.tables import MissingTableError, NothingToRestoreError
from recs.train import TrainingDataError
from recs.train.artifacts import ArtifactError

KNOWN_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    MissingInputError,
    MissingTableError,
    NothingToRestoreError,
    CountMismatchError,
    FeedRejectedError,
    StepNotDoneError,
    TrainingDataError,
    ArtifactError,
)
