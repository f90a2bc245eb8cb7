"""The error the command line reports to the user on one line."""


class CommandError(Exception):
    """A problem with the command's input, reported on one line (exit 2).

    Raised by `relu-kit demo` and `relu-kit inspect` (and the functions
    behind them) for input the user can fix: a missing or unreadable
    file, data that does not fit the model, an unwritable output folder.
    `keras_relu_kit.cli.main` prints it as `relu-kit: error: ...` and
    returns exit status 2.
    """
