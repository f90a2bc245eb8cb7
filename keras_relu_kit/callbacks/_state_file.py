"""A remedy callback's state on disk, beside a `BackupAndRestore`'s backup.

`AutoLeak` and `Recycle` change the model as they go; to resume an
interrupted run as if it had not stopped, they keep what they decided
(counters, `changes`) in one JSON file in the `backup_dir` of a
`keras.callbacks.BackupAndRestore`, written whole at every epoch end and
read when training begins.
"""

from __future__ import annotations

import json
import os
from typing import Any


class StateFile:
    """A callback's JSON state in the directory of a `BackupAndRestore`.

    Written whole at every epoch end (to a `.partial` file, then moved into
    place), read when training begins, removed when it ends normally.
    Without a directory, every method does nothing.

    Args:
        backup_dir: str or `None`. The directory.
        name: str. The state file's name in it.
    """

    def __init__(self, backup_dir: str | None, name: str) -> None:
        self.directory = backup_dir
        self.path = None if backup_dir is None else os.path.join(backup_dir, name)

    def write(self, state: Any) -> None:
        if self.path is None:
            return
        assert self.directory is not None  # There is a path only with one.
        os.makedirs(self.directory, exist_ok=True)
        partial = self.path + ".partial"
        with open(partial, "w") as f:
            json.dump(state, f)
        os.replace(partial, self.path)

    def read(self) -> Any:
        """The saved state, or `None` when there is none."""
        if self.path is None or not os.path.exists(self.path):
            return None
        with open(self.path) as f:
            return json.load(f)

    def sibling(self, name: str) -> str | None:
        """The path of another file beside the state file, or `None`."""
        return None if self.directory is None else os.path.join(self.directory, name)

    def remove(self, *names: str) -> None:
        """Remove the state file (and the named files beside it)."""
        for path in (self.path, *(self.sibling(name) for name in names)):
            if path is not None and os.path.exists(path):
                os.remove(path)
