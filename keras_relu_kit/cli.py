"""The `relu-kit` command line."""

import argparse
import sys


def build_parser():
    parser = argparse.ArgumentParser(
        prog="relu-kit",
        description="Rectifier activations for Keras 3: demos and diagnostics.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "demo",
        help="measure the claims about ReLU on built-in data",
        description="Measure the claims about ReLU on built-in data.",
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        print(
            "relu-kit demo: the study of the seed text's claims is coming "
            "(see the open demo issue). The layers and initializers are "
            "ready: see examples/."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
