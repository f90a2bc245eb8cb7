"""Verbose output of the kit's callbacks, one line at a time.

Keras' callbacks print through `keras.src.utils.io_utils.print_msg`, which
is private API; this is the kit's own, for the same lines:
`"\nEpoch 3: AutoLeak raising alpha of dense_1 to 0.02."`.
"""

from __future__ import annotations


def print_msg(message: str) -> None:
    """Print `message` and a line break to stdout, flushed at once.

    Flushed so that the line stands where it belongs between the progress
    bar's lines, also when stdout is a file or a pipe.
    """
    print(message, flush=True)
