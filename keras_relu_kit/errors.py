"""The kit's exception and warning classes.

`CommandError` is what the command line reports on one line. The warnings
are `UserWarning` subclasses, one per situation, so that code can filter
a situation by category (`warnings.filterwarnings("ignore",
category=NonFiniteActivationsWarning)`) instead of by the text of its
message.
"""


class CommandError(Exception):
    """A problem with the command's input, reported on one line (exit 2).

    Raised by `relu-kit demo` and `relu-kit inspect` (and the functions
    behind them) for input the user can fix: a missing or unreadable
    file, data that does not fit the model, an unwritable output folder.
    `keras_relu_kit.cli.main` prints it as `relu-kit: error: ...` and
    returns exit status 2.
    """


class KitWarning(UserWarning):
    """Base class of the kit's warnings."""


class NoRectifierSitesWarning(KitWarning):
    """The model has no rectifier site (or no adjustable one) to work on.

    The callback leaves training unchanged.
    """


class UnreachableSitesWarning(KitWarning):
    """Some rectifier sites are out of a tool's reach and left alone.

    For example sites `Recycle` cannot re-initialise exactly, slopes
    `AutoLeak` cannot change, or rectifiers inside a recurrent layer's
    step, which are neither measured nor converted. The message names them
    and says why.
    """


class NonFiniteActivationsWarning(KitWarning):
    """The probe produced NaN or inf activations (training has diverged).

    They are counted in the report (`nonfinite`) and never make a unit
    dead or alive.
    """


class DivergenceRollbackWarning(KitWarning):
    """`AutoLeak` undid a raise of `alpha` that the loss diverged after."""


class OutsideFitWarning(KitWarning):
    """A training callback was passed to `evaluate` or `predict`, where it
    does nothing."""


__all__ = [
    "CommandError",
    "DivergenceRollbackWarning",
    "KitWarning",
    "NoRectifierSitesWarning",
    "NonFiniteActivationsWarning",
    "OutsideFitWarning",
    "UnreachableSitesWarning",
]
