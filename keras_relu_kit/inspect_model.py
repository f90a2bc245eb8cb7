"""`relu-kit inspect`: the dead units of a saved model on the user's data.

Loads a `.keras` model (kit layers included, or Keras' own layers only),
reads probe inputs from a `.npy`, `.npz` or `.csv` file, and measures
every rectifier site with `keras_relu_kit.diagnostics.measure`, the path
the callbacks measure through (it samples the probe and checks its shape
against the model). What it prints comes from the `DeadReport`:
`DeadReport.to_dict()` for `--json`, `DeadReport.table()` for text.

Every problem with the inputs becomes a `CommandError` that names the file
and what is wrong with it; the command line prints it on one line.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from keras_relu_kit.diagnostics import (
    DeadReport,
    Probe,
    find_rectifier_sites,
    measure,
)
from keras_relu_kit.diagnostics import probe as probe_lib
from keras_relu_kit.errors import CommandError

if TYPE_CHECKING:
    import keras

DATA_SUFFIXES = (".npy", ".npz", ".csv")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if len(text) > 240:
        text = text[:237] + "..."
    return text or type(error).__name__


def _innermost_cause(error: BaseException) -> str:
    """The reason at the bottom of a chain of errors, on one line.

    Keras wraps a loading failure in errors that repeat the whole model
    config; the innermost one says which class or argument failed. Its
    text is kept up to the config it quotes.
    """
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        cause = error.__cause__ or error.__context__
        if cause is None:
            break
        error = cause
    text = str(error)
    for marker in ("Full object config", "\nConfig:", "config={"):
        if marker in text:
            text = text[: text.index(marker)]
    text = " ".join(text.split()).rstrip(" .:,") or type(error).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(error).__name__}: {text}"


def _check_file(path: str | os.PathLike[str], what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise CommandError(f"{what} '{path}' does not exist")
    if path.is_dir():
        raise CommandError(f"{what} '{path}' is a directory, not a file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as error:
        reason = error.strerror or _one_line(error)
        raise CommandError(f"cannot read {what} '{path}': {reason}") from None
    return path


def load_model(path: str | os.PathLike[str]) -> keras.Model:
    """Load a saved Keras model, with the kit's layers registered.

    Args:
        path: str or path of a `.keras` file (or a legacy `.h5` file).

    Returns:
        The `keras.Model`, not compiled.

    Raises:
        CommandError: when the file is missing, unreadable, or not a Keras
            model.
    """
    import keras

    from keras_relu_kit._registry import custom_objects

    path = _check_file(path, "model file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.saving.load_model(
                path, custom_objects=custom_objects(), compile=False
            )
    except Exception as error:  # Keras raises many kinds for a bad file.
        raise CommandError(
            f"model file '{path}' is not a Keras model that can be loaded: "
            f"{_innermost_cause(error)}"
        ) from None
    if not isinstance(model, keras.Model):
        raise CommandError(
            f"model file '{path}' holds a {type(model).__name__}, not a keras.Model"
        )
    return model


def _read_csv(path: Path) -> np.ndarray:
    for skip in (0, 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                array = np.loadtxt(
                    path, delimiter=",", dtype="float32", ndmin=2, skiprows=skip
                )
            return array
        except ValueError as error:
            last = error
    raise CommandError(
        f"data file '{path}' is not a CSV of numbers (one example per row, "
        f"an optional header): {_one_line(last)}"
    )


def load_data(path: str | os.PathLike[str], key: str | None = None) -> np.ndarray:
    """Probe inputs from a `.npy`, `.npz` or `.csv` file.

    Args:
        path: str or path. A `.npy` array, a `.npz` archive (pick the array
            with `key`; one holding a single array needs none), or a `.csv`
            file of numbers, one example per row, with an optional header
            row.
        key: str or `None`. The array to use in a `.npz` archive.

    Returns:
        A NumPy array with a batch axis first.

    Raises:
        CommandError: when the file is missing or unreadable, has another
            suffix, holds no such key, or holds no numeric examples.
    """
    path = _check_file(path, "data file")
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise CommandError(
            f"data file '{path}' must end in .npy, .npz or .csv "
            f"(received '{suffix or 'no suffix'}')"
        )
    if key is not None and suffix != ".npz":
        raise CommandError(
            f"--key selects an array in a .npz file; data file '{path}' is "
            f"a {suffix} file"
        )
    if suffix == ".csv":
        array = _read_csv(path)
    else:
        array, key = _read_numpy(path, suffix, key)
    where = f"data file '{path}'" + (f" (array '{key}')" if key else "")
    return _checked(array, where)


def load_inputs(path: str | os.PathLike[str], names: list[str]) -> dict[str, Any]:
    """The arrays named `names` of a `.npz` archive, for a model of several
    inputs: `{name: array}`.

    Raises:
        CommandError: when the file is missing or unreadable, not a `.npz`
            archive, lacks one of `names`, or an array holds no numeric
            examples.
    """
    path = _check_file(path, "data file")
    suffix = path.suffix.lower()
    if suffix != ".npz":
        raise CommandError(
            f"a model of {len(names)} inputs ({', '.join(names)}) reads them "
            f"from a .npz file with an array per input; data file '{path}' is "
            f"a {suffix or 'no-suffix'} file"
        )
    arrays = {}
    for name in names:
        array, _ = _read_numpy(path, suffix, name)
        arrays[name] = _checked(array, f"data file '{path}' (array '{name}')")
    return arrays


def _checked(array: np.ndarray, where: str) -> np.ndarray:
    """`array` if it holds numeric examples (floats as float32), else a
    `CommandError` naming `where`."""
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise CommandError(f"{where} holds {array.dtype} values, not numbers")
    if array.ndim == 0:
        raise CommandError(f"{where} holds a scalar; expected one example per row")
    if array.shape[0] == 0:
        raise CommandError(f"{where} holds no examples")
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype("float32", copy=False)
    return array


def _read_numpy(path, suffix, key):
    """The array of a `.npy` file, or array `key` of a `.npz` archive (its
    only one when `key` is `None`); and the key."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as error:  # NumPy raises many kinds for a bad file.
        raise CommandError(
            f"cannot read data file '{path}' as {suffix}: {_one_line(error)}"
        ) from None
    if suffix == ".npy":
        if not isinstance(loaded, np.ndarray):
            raise CommandError(f"data file '{path}' is not a .npy array")
        return loaded, key
    if not hasattr(loaded, "files"):
        raise CommandError(f"data file '{path}' is not a .npz archive")
    with loaded:
        names = list(loaded.files)
        if key is None:
            if len(names) != 1:
                raise CommandError(
                    f"data file '{path}' holds {len(names)} arrays "
                    f"({', '.join(names) or 'none'}); choose one with --key"
                )
            key = names[0]
        if key not in names:
            raise CommandError(
                f"data file '{path}' has no array '{key}'; it holds: "
                f"{', '.join(names) or 'nothing'}"
            )
        try:
            return loaded[key], key
        except Exception as error:
            raise CommandError(
                f"cannot read array '{key}' of data file '{path}': {_one_line(error)}"
            ) from None


def _input_names(model: keras.Model) -> list[str] | None:
    """The names a model of several inputs takes them by (its dict's keys,
    else its inputs' names, in order), or `None` for one input."""
    try:
        inputs = model.input
    except (AttributeError, ValueError):
        return None
    if isinstance(inputs, dict) and len(inputs) > 1:
        return list(inputs)
    if isinstance(inputs, (list, tuple)) and len(inputs) > 1:
        return [tensor.name for tensor in inputs]
    return None


def _input_shape(model: keras.Model) -> tuple[int | None, ...] | None:
    """The shape of the model's one input, `None` when unknown, or an error."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        return None
    if len(inputs) != 1:
        raise CommandError(
            f"model '{model.name}' has {len(inputs)} inputs; relu-kit inspect "
            "feeds one array"
        )
    return tuple(inputs[0].shape)


def csv_rows_to_inputs(
    expected: tuple[int | None, ...] | None, array: np.ndarray
) -> np.ndarray:
    """CSV rows reshaped to an image input shape, when the sizes agree.

    A CSV row is flat: when `expected` (the model's input shape, batch
    axis first) is fixed and of rank above 2, rows of that many values are
    reshaped to it. Any other array is returned as it is (`measure` checks
    it against the model).
    """
    if (
        expected is None
        or len(expected) < 3
        or array.ndim != 2
        or any(d is None for d in expected[1:])
    ):
        return array
    # Every size known, as checked above.
    if array.shape[1] != int(np.prod(cast("tuple[int, ...]", expected[1:]))):
        return array
    return array.reshape((array.shape[0], *expected[1:]))


@dataclasses.dataclass(frozen=True)
class Inspection:
    """What `relu-kit inspect` found: a `DeadReport` and where it came from.

    Attributes:
        model: str. The model file, as given.
        model_name: str. The model's name.
        data: str. The data file, as given.
        report: the `DeadReport` of the model on the data.
    """

    model: str
    model_name: str
    data: str
    report: DeadReport

    def to_dict(self) -> dict:
        """`"model"`, `"model_name"`, `"data"` and `DeadReport.to_dict()`."""
        return {
            "model": self.model,
            "model_name": self.model_name,
            "data": self.data,
            **self.report.to_dict(),
        }

    def to_text(self, max_ranges: int | None = 8) -> str:
        """One line naming the model and data, then `DeadReport.table()`.

        Args:
            max_ranges: int or `None`. Index ranges listed per site before
                `... (+N more)`; `None` lists every dead unit (`--all`).
                Defaults to `8`.
        """
        return (
            f"Model '{self.model_name}' ({self.model}) on "
            f"{self.report.num_examples} examples from {self.data}\n"
            + self.report.table(max_ranges=max_ranges)
        )


def _misfit(
    model: keras.Model,
    array: Any,
    data_path: str | os.PathLike[str],
    error: BaseException,
) -> str:
    """The one-line message for data that `measure` could not run on."""
    expected = probe_lib.expected_input_shapes(model)
    shapes = probe_lib.describe_shapes(array)
    try:
        probe_lib.check_fits(model, array, "data", expected)
    except ValueError:
        return (
            f"data in '{data_path}' has shape {shapes}, but model "
            f"'{model.name}' expects inputs of shape "
            f"{probe_lib.describe_expected(expected)}"
        )
    return (
        f"data in '{data_path}' (shape {shapes}) does not fit "
        f"model '{model.name}': {_one_line(error)}"
    )


def inspect(
    model_path: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    key: str | None = None,
    probe: int | None = None,
    batch_size: int = 256,
    *,
    tau: float | None = None,
    plasticity: bool = False,
) -> Inspection:
    """Measure a saved model's dead units on data from a file.

    Args:
        model_path: str or path of the `.keras` model.
        data_path: str or path of the `.npy`, `.npz` or `.csv` probe data.
        key: str or `None`. The array to use in a `.npz` file.
        probe: int or `None`. Measure on a fixed random sample of at most
            this many examples (seed 0, kept in order). Defaults to `None`
            (all of them).
        batch_size: int. Examples per forward batch. Defaults to `256`.
        tau: float >= 0 or `None`. Also count dormant units (ReDo's
            score <= `tau`), as `measure` does. Defaults to `None`.
        plasticity: bool. Also measure each site's effective rank and the
            mean |weight| of its producing layer, as `measure` does.
            Defaults to `False`.

    Returns:
        An `Inspection`: its `report` is the `DeadReport`, `to_dict()`
        the JSON `--json` prints, `to_text()` the text.

    Raises:
        CommandError: for a bad model file, bad data, or data that does
            not fit the model.
    """
    model = load_model(model_path)
    names = _input_names(model) if key is None else None
    array: Any
    if names is not None:
        arrays = load_inputs(data_path, names)
        array = arrays if isinstance(model.input, dict) else list(arrays.values())
    else:
        array = load_data(data_path, key)
        expected = _input_shape(model)
        if Path(data_path).suffix.lower() == ".csv":
            array = csv_rows_to_inputs(expected, array)
    sites = find_rectifier_sites(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if sites:
                report = measure(
                    model,
                    array,
                    batch_size=batch_size,
                    sites=sites,
                    probe_size=probe,
                    seed=0,
                    tau=tau,
                    plasticity=plasticity,
                )
            else:
                # Nothing to measure; the data must still fit the model.
                sample = Probe(
                    array, size=probe, batch_size=batch_size, seed=0, argument="data"
                )
                sample.prepare(model)
                report = DeadReport(
                    {}, num_examples=probe_lib.num_examples(sample.arrays)
                )
    except Exception as error:  # Some misfits only show when the model runs.
        raise CommandError(_misfit(model, array, data_path, error)) from None
    return Inspection(
        model=os.fspath(model_path),
        model_name=model.name,
        data=os.fspath(data_path),
        report=report,
    )
