"""keras_relu_kit: rectifier activations for Keras 3, and the tools to keep
their units alive.

Importing the package registers every layer, initializer and constraint
under `keras_relu_kit>ClassName`, so saved models load back with
`keras.saving.load_model(path)`; `custom_objects()` gives the same classes
as a dict for scoped loading.
"""

from keras_relu_kit._version import __version__


def _start_command_line():
    # `relu-kit` and `python -m keras_relu_kit` hide the backend's start-up
    # log lines, which must begin before the imports below import Keras.
    import os
    import sys

    argv0 = os.path.basename((getattr(sys, "argv", None) or [""])[0])
    command = list(getattr(sys, "orig_argv", []))
    as_module = "-m" in command[:-1] and (
        command[command.index("-m") + 1] == "keras_relu_kit"
    )
    from keras_relu_kit._parallel import is_worker

    if as_module or is_worker() or argv0 in ("relu-kit", "relu-kit.exe"):
        from keras_relu_kit.cli import quiet_start

        quiet_start()


_start_command_line()

from keras_relu_kit import (  # noqa: E402
    callbacks,
    constraints,
    diagnostics,
    initializers,
    layers,
)
from keras_relu_kit._registry import custom_objects  # noqa: E402
from keras_relu_kit.recipes import recommended  # noqa: E402
from keras_relu_kit.surgery import leakify  # noqa: E402

__all__ = [
    "__version__",
    "callbacks",
    "constraints",
    "custom_objects",
    "diagnostics",
    "initializers",
    "layers",
    "leakify",
    "recommended",
]
