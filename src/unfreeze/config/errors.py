"""The errors a user can cause, one class per kind, all derived from :class:`UnfreezeError`.

Stage scripts and the CLI catch :class:`UnfreezeError` only: its message is printed as one
line and the process exits with code 2. Anything else is a bug and keeps its traceback.
Every message names the file, param or value received and what to do.
"""

from __future__ import annotations


class UnfreezeError(Exception):
    """Bad input from the user (params, data, files, set-up), never a bug in unfreeze."""


class ParamsError(UnfreezeError, ValueError):
    """An invalid value in params.yaml; the message names the key and the value."""


class DataError(UnfreezeError, ValueError):
    """The data source cannot be used; the message names the file, class or count."""


class WeightsError(UnfreezeError, RuntimeError):
    """The requested base weights cannot be loaded; the message says what to do."""


class ExportError(UnfreezeError, RuntimeError):
    """An exported model disagrees with the Keras model beyond the allowed tolerance."""


class PredictError(UnfreezeError, ValueError):
    """Bad model path or inputs of `predict` / `explain`; the message says which and what to do."""


class ScaleOutError(UnfreezeError, RuntimeError):
    """A git, DVC or Prefect step of the scale-out failed; the message says which and why."""


class ReleaseError(UnfreezeError, ValueError):
    """A release that does not exist or is incomplete; the message lists the ones there are."""


class LRFindError(UnfreezeError, RuntimeError):
    """The LR range test cannot suggest a rate (it diverged at once, or ran too few steps);
    the message says which bound or step count to change."""


class SweepError(UnfreezeError, ValueError):
    """A sweep that cannot run as asked (search space, metric, budget, its state folder, a
    trial's DVC experiment); the message names the param, value or file and what to do."""


class ApiError(UnfreezeError, ValueError):
    """A bad option of `unfreeze api` (limit, model path); the message names the flag."""
