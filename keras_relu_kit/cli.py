"""The `relu-kit` command line (also `python -m keras_relu_kit`).

- `relu-kit demo`: measure the seed text's claims about ReLU on
  scikit-learn's bundled digits and write the table, plots and model.
- `relu-kit inspect MODEL.keras --data FILE`: the dead units of a saved
  model on your data.

Bad input gives one line on stderr, `relu-kit: error: ...`, and exit
status 2, as argparse does for usage errors.
"""

import argparse
import os
import sys

from keras_relu_kit.errors import CommandError

PROG = "relu-kit"

# `CommandError` lives in `keras_relu_kit.errors`; it stays importable from
# here for code written against earlier versions.
__all__ = ["PROG", "CommandError", "build_parser", "main"]


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `relu-kit` and its commands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Rectifier activations for Keras 3: demos and diagnostics.",
    )
    from keras_relu_kit import __version__

    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="measure the claims about ReLU on built-in data",
        description=(
            "Measure the seed text's claims about ReLU (vanishing gradients, "
            "sparsity, dying units and their remedies) on scikit-learn's "
            "bundled digits, with no download. Prints one table row per "
            "claim and writes results.md, results.json, dead_fraction.png, "
            "autoleak_heatmap.png, gradients.png and autoleak_model.keras "
            "into --out. Files appear only when the whole study succeeded."
        ),
    )
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
        help="one seed, and the high-LR set-up for ReLU only "
        "(about a minute on 2 CPU cores)",
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
    inspect = sub.add_parser(
        "inspect",
        help="report the dead units of a saved model on your data",
        description=(
            "Load a saved Keras model (kit layers included) and report, for "
            "every rectifier layer, how many of its units are dead on the "
            "given data (output <= 0 for every example) and which."
        ),
    )
    inspect.add_argument("model", metavar="MODEL.keras", help="a saved .keras model")
    inspect.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help="probe inputs: .npy, .npz (see --key) or .csv (one example per "
        "row, optional header; rows are reshaped to an image input)",
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
        "--json",
        action="store_true",
        help="print the report as JSON",
    )
    return parser


def _demo(args):
    from keras_relu_kit.demo import run_demo

    results = run_demo(
        args.out,
        epochs=args.epochs,
        quick=args.quick,
        seed=args.seed,
        repeats=args.repeats,
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

    result = inspect(args.model, args.data, key=args.key, probe=args.probe)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(result.to_text())
    return 0


def main(argv=None) -> int:
    """Run `relu-kit` with `argv` (defaults to `sys.argv[1:]`).

    Returns:
        The exit status: 0 on success, 2 for bad input (argparse's usage
        errors exit 2 through `SystemExit`), 1 when the demo's saved model
        does not reload to the same predictions, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
