"""`relu-kit inspect`: the dead units of a saved model on the user's data.

Loads a `.keras` model (kit layers included, or Keras' own layers only),
reads probe inputs from a `.npy`, `.npz` or `.csv` file, measures every
rectifier site with `keras_relu_kit.diagnostics.measure` and reports, per
site, how many units are dead and which.

Every problem with the inputs becomes a `CommandError` that names the file
and what is wrong with it; the command line prints it on one line.
"""

import os
import warnings
from pathlib import Path

import numpy as np

from keras_relu_kit.cli import CommandError

DATA_SUFFIXES = (".npy", ".npz", ".csv")


def _one_line(error):
    text = " ".join(str(error).split())
    if len(text) > 240:
        text = text[:237] + "..."
    return text or type(error).__name__


def _check_file(path, what):
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


def load_model(path):
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

    from keras_relu_kit import custom_objects

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
            f"{_one_line(error)}"
        ) from None
    if not isinstance(model, keras.Model):
        raise CommandError(
            f"model file '{path}' holds a {type(model).__name__}, not a keras.Model"
        )
    return model


def _read_csv(path):
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


def load_data(path, key=None):
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
        try:
            loaded = np.load(path, allow_pickle=False)
        except Exception as error:  # NumPy raises many kinds for a bad file.
            raise CommandError(
                f"cannot read data file '{path}' as {suffix}: {_one_line(error)}"
            ) from None
        if suffix == ".npz":
            if not hasattr(loaded, "files"):
                raise CommandError(f"data file '{path}' is not a .npz archive")
            with loaded:
                names = list(loaded.files)
                if key is None:
                    if len(names) != 1:
                        raise CommandError(
                            f"data file '{path}' holds {len(names)} arrays "
                            f"({', '.join(names) or 'none'}); choose one with "
                            "--key"
                        )
                    key = names[0]
                if key not in names:
                    raise CommandError(
                        f"data file '{path}' has no array '{key}'; it holds: "
                        f"{', '.join(names) or 'nothing'}"
                    )
                try:
                    array = loaded[key]
                except Exception as error:
                    raise CommandError(
                        f"cannot read array '{key}' of data file '{path}': "
                        f"{_one_line(error)}"
                    ) from None
        else:
            if not isinstance(loaded, np.ndarray):
                raise CommandError(f"data file '{path}' is not a .npy array")
            array = loaded
    where = f"data file '{path}'" + (f" (array '{key}')" if key else "")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise CommandError(f"{where} holds {array.dtype} values, not numbers")
    if array.ndim == 0:
        raise CommandError(f"{where} holds a scalar; expected one example per row")
    if array.shape[0] == 0:
        raise CommandError(f"{where} holds no examples")
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype("float32", copy=False)
    return array


def _input_shape(model):
    """The model's one input shape, `None` when unknown, or an error."""
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


def fit_to_model(model, array, data_path, from_csv=False):
    """`array` shaped for the model's input, or a `CommandError`.

    A CSV row is flat: when the model wants images, rows are reshaped to
    the input shape if the sizes agree. Other files must match exactly.
    """
    expected = _input_shape(model)
    if expected is None:
        return array
    shown = "(None, " + ", ".join(str(d) for d in expected[1:]) + ")"

    def fits(shape):
        return len(shape) == len(expected) and all(
            want is None or want == got
            for want, got in zip(expected[1:], shape[1:], strict=True)
        )

    if fits(array.shape):
        return array
    if from_csv and array.ndim == 2 and all(d is not None for d in expected[1:]):
        size = int(np.prod(expected[1:]))
        if array.shape[1] == size:
            return array.reshape((array.shape[0],) + tuple(expected[1:]))
    raise CommandError(
        f"data in '{data_path}' has shape {tuple(array.shape)}, but model "
        f"'{model.name}' expects inputs of shape {shown}"
    )


def sample(array, probe, seed=0):
    """At most `probe` examples of `array`, a fixed random sample in order."""
    if probe is None or probe >= len(array):
        return array
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(len(array), size=probe, replace=False))
    return array[index]


def inspect(model_path, data_path, key=None, probe=None, batch_size=256) -> dict:
    """Measure a saved model's dead units on data from a file.

    Args:
        model_path: str or path of the `.keras` model.
        data_path: str or path of the `.npy`, `.npz` or `.csv` probe data.
        key: str or `None`. The array to use in a `.npz` file.
        probe: int or `None`. Measure on a fixed random sample of at most
            this many examples. Defaults to `None` (all of them).
        batch_size: int. Examples per forward batch. Defaults to `256`.

    Returns:
        A JSON-ready dict: `"model"`, `"model_name"`, `"data"`,
        `"examples"`, `"units"`, `"dead"`, `"dead_fraction"`,
        `"nonfinite"`, and `"sites"`, a list with, per rectifier site in
        model order, `"name"`, `"layer"`, `"class"`, `"kind"`, `"units"`,
        `"dead"`, `"dead_fraction"`, `"dead_units"` (the indices of the
        dead units) and `"nonfinite"`.

    Raises:
        CommandError: for a bad model file, bad data, or data that does
            not fit the model.
    """
    model = load_model(model_path)
    array = load_data(data_path, key)
    array = fit_to_model(
        model, array, data_path, from_csv=Path(data_path).suffix.lower() == ".csv"
    )
    array = sample(array, probe)

    from keras_relu_kit.diagnostics import find_rectifier_sites, measure

    sites = find_rectifier_sites(model)
    result = {
        "model": os.fspath(model_path),
        "model_name": model.name,
        "data": os.fspath(data_path),
        "examples": int(len(array)),
        "units": 0,
        "dead": 0,
        "dead_fraction": 0.0,
        "nonfinite": 0,
        "sites": [],
    }
    if not sites:
        return result
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = measure(model, array, batch_size=batch_size, sites=sites)
    except Exception as error:  # Shapes only show when the model runs.
        raise CommandError(
            f"data in '{data_path}' (shape {tuple(array.shape)}) does not fit "
            f"model '{model.name}': {_one_line(error)}"
        ) from None
    result.update(
        {
            "units": int(report.units),
            "dead": int(report.dead),
            "dead_fraction": float(report.dead_fraction),
            "nonfinite": int(report.nonfinite),
        }
    )
    kinds = {site.name: site for site in sites}
    for name, site in report.sites.items():
        result["sites"].append(
            {
                "name": name,
                "layer": site.layer.name,
                "class": type(site.layer).__name__,
                "kind": kinds[name].kind,
                "units": int(site.units),
                "dead": int(site.dead),
                "dead_fraction": float(site.dead_fraction),
                "dead_units": [int(i) for i in np.flatnonzero(site.dead_mask)],
                "nonfinite": int(site.nonfinite),
            }
        )
    return result


def _ranges(indices):
    """`[0, 1, 2, 5]` as `"0-2, 5"`."""
    parts, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        last = i + 1 == len(indices) or indices[i + 1] != value + 1
        if last:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts)


def format_text(result) -> str:
    """The `inspect` result as the text the command prints.

    Example:

    >>> from keras_relu_kit.inspect_model import format_text
    >>> print(format_text({
    ...     "model": "m.keras", "model_name": "m", "data": "x.npy",
    ...     "examples": 8, "units": 4, "dead": 2, "dead_fraction": 0.5,
    ...     "nonfinite": 0,
    ...     "sites": [{"name": "hidden", "class": "Dense", "units": 4,
    ...                "dead": 2, "dead_fraction": 0.5, "dead_units": [1, 2],
    ...                "nonfinite": 0}],
    ... }))
    Model 'm' (m.keras) on 8 examples from x.npy
      site    layer  units  dead  dead %  dead units
      hidden  Dense      4     2    50.0  1-2
    Total: 2 of 4 units dead (50.0%) in 1 rectifier site.
    """
    head = (
        f"Model '{result['model_name']}' ({result['model']}) on "
        f"{result['examples']} examples from {result['data']}"
    )
    sites = result["sites"]
    if not sites:
        return (
            f"{head}\nNo rectifier sites (ReLU-family layers or layers with a "
            "rectifier activation): nothing to measure."
        )
    name_w = max(4, *(len(s["name"]) for s in sites))
    class_w = max(5, *(len(s["class"]) for s in sites))
    show_nonfinite = result["nonfinite"] > 0
    header = (
        f"  {'site':<{name_w}}  {'layer':<{class_w}}  {'units':>5}  {'dead':>4}"
        f"  {'dead %':>6}"
    )
    if show_nonfinite:
        header += f"  {'NaN/inf':>7}"
    lines = [head, header + "  dead units"]
    for s in sites:
        line = (
            f"  {s['name']:<{name_w}}  {s['class']:<{class_w}}  {s['units']:>5}"
            f"  {s['dead']:>4}  {100 * s['dead_fraction']:>6.1f}"
        )
        if show_nonfinite:
            line += f"  {s['nonfinite']:>7}"
        lines.append(line + "  " + (_ranges(s["dead_units"]) or "-"))
    count = len(sites)
    lines.append(
        f"Total: {result['dead']} of {result['units']} units dead "
        f"({100 * result['dead_fraction']:.1f}%) in {count} rectifier "
        f"site{'s' if count != 1 else ''}."
    )
    if show_nonfinite:
        lines.append(
            f"Warning: {result['nonfinite']} NaN/inf activation values; they "
            "never count as alive."
        )
    return "\n".join(lines)
