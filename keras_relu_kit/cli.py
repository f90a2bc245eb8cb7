"""The `relu-kit` command line (also `python -m keras_relu_kit`).

- `relu-kit demo`: measure the seed text's claims about ReLU on
  scikit-learn's bundled digits and write the table, plots and model.
- `relu-kit inspect MODEL.keras --data FILE`: the dead units of a saved
  model on your data.

Bad input gives one line on stderr, `relu-kit: error: ...`, and exit
status 2, as argparse does for usage errors.

The command line starts quietly: unless `--verbose` or `RELU_KIT_VERBOSE=1`
asks for them, the log lines the backend prints while it starts (on
TensorFlow: the oneDNN and CPU-feature notices, and on a machine without a
GPU, `failed call to cuInit`) are hidden, and `TF_CPP_MIN_LOG_LEVEL`
defaults to 3. `quiet_start()` does it; it has to run before Keras imports
its backend.
"""

import argparse
import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Sequence

from keras_relu_kit.errors import CommandError

PROG = "relu-kit"
VERBOSE_ENV = "RELU_KIT_VERBOSE"
VERBOSE_HELP = (
    "show the backend's start-up log lines and TensorFlow's warnings, "
    f"which {PROG} hides (also: {VERBOSE_ENV}=1)"
)

# `CommandError` lives in `keras_relu_kit.errors`; it stays importable from
# here for code written against earlier versions.
__all__ = ["PROG", "CommandError", "build_parser", "main"]


_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
# A C++ log line: absl's (TensorFlow 2.17+), or TSL's (2.16).
_LOG_LINE = re.compile(
    r"(?:(?P<absl>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: (?P<tsl>[IWEF]) \S+:\d+\])"
)
_ABSL_BANNER = (
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR"
)
# The second line of cpu_feature_guard's notice.
_CONTINUATIONS = ("To enable the following instructions:",)
# Errors dropped at any level: cuInit failing because the machine has no
# GPU (no driver, 303, or no device, 100), and CUDA plugins registering
# twice (TensorFlow's harmless start-up noise where CUDA libraries exist).
_HARMLESS = re.compile(
    r"failed call to cuInit: .*(?:\((?:100|303)\)|no CUDA-capable device)"
    r"|Unable to register cu\w+ factory: Attempting to register factory"
)


def _filter_startup_log(text, min_level):
    """`text` without the start-up log lines below `min_level` (0 info,
    1 warning, 2 error, 3 fatal, as `TF_CPP_MIN_LOG_LEVEL`) and without the
    harmless no-GPU errors; every other line is kept."""
    kept = []
    dropped = False
    for line in text.splitlines(keepends=True):
        content = line.rstrip("\r\n")
        match = _LOG_LINE.match(content)
        if match:
            severity = _SEVERITY[match.group("absl") or match.group("tsl")]
            dropped = severity < min_level or bool(_HARMLESS.search(content))
        elif content == _ABSL_BANNER:
            dropped = min_level >= 1
        else:
            dropped = dropped and content.startswith(_CONTINUATIONS)
        if not dropped:
            kept.append(line)
    return "".join(kept)


def _min_log_level():
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


@contextlib.contextmanager
def _startup_log_filter():
    """Send file descriptor 2 to a temporary file for the block, then
    write what it caught to stderr, less the start-up noise (all of it
    when the block raised)."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # No usable stderr: nothing to filter.
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        raised = True
        try:
            yield
            raised = False
        finally:
            with contextlib.suppress(OSError, ValueError):
                if sys.stderr is not None:
                    sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            if not raised:
                text = _filter_startup_log(text, _min_log_level())
            if text and sys.stderr is not None:
                sys.stderr.write(text)
                sys.stderr.flush()


def _verbose_requested(argv):
    """Whether `RELU_KIT_VERBOSE` or `--verbose` (or an abbreviation
    argparse accepts, from `--verb`) asks for the backend's log lines."""
    if os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false"):
        return True
    for arg in argv:
        if arg == "--":
            break
        if len(arg) >= 6 and "--verbose".startswith(arg):
            return True
    return False


def _launched_as_command_line():
    """Whether this process is `relu-kit` or `python -m keras_relu_kit`, or
    a worker process of `relu-kit demo`."""
    from keras_relu_kit._parallel import is_worker

    if is_worker():
        return True
    argv = getattr(sys, "argv", None) or [""]
    name = os.path.basename(argv[0]).lower()
    if name in (PROG, f"{PROG}.exe", f"{PROG}-script.py"):
        return True
    if argv[0] != "-m":
        return False
    # While `python -m` imports the module's package, `argv[0]` is "-m".
    original = getattr(sys, "orig_argv", [])
    for i, arg in enumerate(original[1:], start=1):
        if arg.startswith("-m"):
            target = arg[2:] or (original[i + 1] if i + 1 < len(original) else "")
            return target.split(".")[0] == "keras_relu_kit"
    return False


_quieted = False


def pin_kernels(argv: Sequence[str]) -> None:
    """For `relu-kit demo`, turn TensorFlow's oneDNN off
    (`TF_ENABLE_ONEDNN_OPTS=0`) unless the caller set it.

    The demo's scoreboard is published from TensorFlow's own (Eigen) CPU
    kernels, which every x86 CPU runs alike, as `make test` runs them;
    oneDNN's kernels round otherwise, and at the demo's high learning
    rates and on its CNN that moves its numbers (`recommended()` on the
    CNN: 0.89 with them off, 0.82 on). It has to run before TensorFlow is
    imported; the demo's worker processes inherit it.
    """
    positional = [arg for arg in argv if not arg.startswith("-")]
    if positional[:1] == ["demo"]:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def quiet_start(argv: Sequence[str] | None = None) -> None:
    """Import Keras and its backend with their start-up log lines hidden.

    Sets `TF_CPP_MIN_LOG_LEVEL=3` unless it is set, imports Keras (and so
    its backend) and lets TensorFlow look for devices, with file
    descriptor 2 filtered: log lines below that level, and the errors
    that only say the machine has no GPU, are dropped, and everything else
    goes to stderr. Python warnings raised by those imports are ignored,
    and the `tensorflow` and absl loggers show errors only. Nothing
    happens when `--verbose` is in `argv` or `RELU_KIT_VERBOSE=1` is set,
    or after the first call.

    Args:
        argv: list of str, or `None`: the command's arguments. `None`
            (the package's start-up) uses `sys.argv[1:]`, and does
            nothing unless the process is `relu-kit` or
            `python -m keras_relu_kit`.
    """
    global _quieted
    if _quieted:
        return
    if argv is None:
        if not _launched_as_command_line():
            return
        argv = sys.argv[1:]
    _quieted = True
    pin_kernels(argv)
    if _verbose_requested(argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _startup_log_filter(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import keras  # noqa: F401 - imports the backend, which logs.

        tensorflow = sys.modules.get("tensorflow")
        if tensorflow is not None:
            # Finding devices is what logs `failed call to cuInit`.
            tensorflow.config.list_physical_devices()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.set_verbosity(absl_logging.ERROR)


def _number(convert, expected, accept):
    """An argparse `type`: `convert(text)` if `accept` takes it, else an
    error saying `expected`."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {expected}, got {text!r}"
            ) from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


_positive_int = _number(int, "a positive integer", lambda value: value >= 1)
_nonnegative_float = _number(
    float, "a finite number >= 0", lambda value: 0 <= value < float("inf")
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `relu-kit` and its commands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Rectifier activations for Keras 3: demos and diagnostics.",
        epilog=(
            "The backend's start-up log lines (TensorFlow's oneDNN and "
            "CUDA notices) are hidden; --verbose or "
            f"{VERBOSE_ENV}=1 shows them and TensorFlow's warnings."
        ),
    )
    from keras_relu_kit._version import __version__

    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    # `--verbose` after the command too; SUPPRESS keeps the command's
    # parser from resetting a `--verbose` given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, description, add_options) in _COMMANDS.items():
        add_options(
            sub.add_parser(
                name, parents=[common], help=summary, description=description
            )
        )
    return parser


def _demo_options(demo):
    """The options of `relu-kit demo`."""
    demo.add_argument(
        "--out",
        default="demo_out",
        metavar="DIR",
        help="folder for the table, plots and model (default: demo_out)",
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="epochs per training run (default: 10)",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="one seed, and the high-LR, Adam and CNN set-ups for ReLU and "
        "the recommendation only (under a minute on 2 CPU cores)",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="first seed; repeats use S+1, S+2 (default: 0)",
    )
    demo.add_argument(
        "--repeats",
        type=_positive_int,
        default=None,
        metavar="R",
        help="seeds per model, reported as means and ranges "
        "(default: 3, or 1 with --quick)",
    )
    demo.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="processes that train the continual runs beside the rest; 1 "
        "trains everything in one process, with the same numbers "
        "(default: the usable cores, at most 4)",
    )


def _inspect_options(inspect):
    """The options of `relu-kit inspect`."""
    inspect.add_argument("model", metavar="MODEL.keras", help="a saved .keras model")
    inspect.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help="probe inputs: .npy, .npz (see --key; for a model of several "
        "inputs, an array named after each) or .csv (one example per row, "
        "optional header; rows are reshaped to an image input)",
    )
    inspect.add_argument(
        "--key",
        default=None,
        metavar="NAME",
        help="the array to use in a .npz file (needed when it holds several)",
    )
    inspect.add_argument(
        "--probe",
        type=_positive_int,
        default=None,
        metavar="N",
        help="measure on a fixed random sample of at most N examples (default: all)",
    )
    inspect.add_argument(
        "--tau",
        type=_nonnegative_float,
        default=None,
        metavar="T",
        help="also report dormant units: a unit whose mean |output|, divided "
        "by the mean over its layer's units, is <= T (ReDo's tau, e.g. 0.1)",
    )
    inspect.add_argument(
        "--plasticity",
        action="store_true",
        help="also report each layer's effective rank (of its units' outputs "
        "on the data) and the mean |weight| of the layer producing them",
    )
    inspect.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON (every dead unit's index)",
    )
    inspect.add_argument(
        "--all",
        action="store_true",
        help="list every dead unit's index in the text report (by default "
        "each layer lists at most 8 index ranges, then '... (+N more)')",
    )


# Each command: its one-line help, its description and its options.
_COMMANDS = {
    "demo": (
        "measure the claims about ReLU on built-in data",
        "Measure the seed text's claims about ReLU (vanishing gradients, "
        "sparsity, dying units and their remedies) on scikit-learn's "
        "bundled digits, with no download. Prints one table row per "
        "claim and writes results.md, results.json, dead_fraction.png, "
        "autoleak_heatmap.png, gradients.png and autoleak_model.keras "
        "into --out. Files appear only when the whole study succeeded.",
        _demo_options,
    ),
    "inspect": (
        "report the dead units of a saved model on your data",
        "Load a saved Keras model (kit layers included) and report, for "
        "every rectifier layer, how many of its units are dead on the "
        "given data (output <= 0 for every example) and which; with --tau "
        "also the dormant ones, with --plasticity the effective rank and "
        "weight magnitude.",
        _inspect_options,
    ),
}


def _demo(args):
    from keras_relu_kit.demo import run_demo

    results = run_demo(
        args.out,
        epochs=args.epochs,
        quick=args.quick,
        seed=args.seed,
        repeats=args.repeats,
        workers=args.workers,
    )
    print(results["markdown"], end="")
    print("\nWrote:")
    for path in results["files"]:
        print(f"  {path}")
    if not results["model"]["predictions_match"]:
        print(
            f"{PROG}: the reloaded AutoLeak model's predictions differ from "
            "the trained model's",
            file=sys.stderr,
        )
        return 1
    return 0


def _inspect(args):
    import json

    from keras_relu_kit.inspect_model import inspect

    result = inspect(
        args.model,
        args.data,
        key=args.key,
        probe=args.probe,
        tau=args.tau,
        plasticity=args.plasticity,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(result.to_text(max_ranges=None) if args.all else result.to_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run `relu-kit` with `argv` (defaults to `sys.argv[1:]`).

    Returns:
        The exit status: 0 on success, 2 for bad input (argparse's usage
        errors exit 2 through `SystemExit`), 1 when the demo's saved model
        does not reload to the same predictions, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    if not args.verbose:
        # Started by the package's import when run as `relu-kit`; here for
        # a `main()` called otherwise, before the command finds devices.
        quiet_start(sys.argv[1:] if argv is None else [str(a) for a in argv])
    command = {"demo": _demo, "inspect": _inspect}[args.command]
    try:
        return command(args)
    except CommandError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
