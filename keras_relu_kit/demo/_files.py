"""Output files that appear whole or not at all."""

import os
import shutil
import tempfile
from pathlib import Path

from keras_relu_kit.errors import CommandError


class Staging:
    """A hidden folder inside `out` where outputs are written first.

    `Staging(out)` checks that `out` is a writable folder (creating it if
    needed) before any work starts. Files are written under `path`; on
    `commit()` each is moved into `out` with `os.replace` (atomic on one
    file system), in the order given, so a reader never sees a partial
    file. Leaving the `with` block without a commit, for any reason,
    removes the staging folder and everything in it.

    Args:
        out: str or path. The folder that receives the outputs.
        option: str. The command-line option `out` came from, for error
            messages. Defaults to `"--out"`.

    Raises:
        CommandError: when `out` cannot be created or written to.
    """

    def __init__(self, out, option="--out"):
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise CommandError(f"{option} '{self.out}' exists and is not a directory")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.path: Path | None = Path(
                tempfile.mkdtemp(prefix=".relu-kit-staging-", dir=self.out)
            )
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise CommandError(
                f"cannot write to {option} '{self.out}': {reason}"
            ) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.discard()

    def file(self, name) -> Path:
        """The staging path of output `name`."""
        return self.path / name

    def commit(self, names) -> list:
        """Move the staged files `names`, in order, into `out`.

        Returns:
            The list of final paths.
        """
        final = []
        for name in names:
            target = self.out / name
            os.replace(self.path / name, target)
            final.append(target)
        self.discard()
        return final

    def discard(self):
        """Remove the staging folder and whatever is left in it."""
        if self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        self.path = None
