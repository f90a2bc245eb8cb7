"""`python -m benchmarks [--quick] [--no-write]`: run every section.

Each section is a module of this package with `run(quick: bool) -> str`
returning Markdown (a `## ` heading, a table, and a line per target saying
whether it is met, with the numbers). They run in order, print as they
finish, and together with a header (the command, the versions, the
machine) are written to `benchmarks/README.md`.
"""

import argparse
import datetime
import importlib
import os
import pathlib
import platform
import sys
import time

SECTIONS = ("layers", "training", "memory", "callbacks")
# Sections another module may not provide yet: skipped with a note.
OPTIONAL = ("callbacks",)
README = pathlib.Path(__file__).with_name("README.md")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the kit against Keras' built-in layers and "
        "write benchmarks/README.md.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and few rounds: a smoke test, not a measurement",
    )
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="print the tables only; leave benchmarks/README.md alone",
    )
    return parser


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib():
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def header(command, quick):
    import keras
    import numpy as np
    import tensorflow as tf

    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    memory = _memory_gib()
    gpus = tf.config.list_physical_devices("GPU")
    lines = [
        "# Benchmarks",
        "",
        "Ratios of the kit against Keras' built-in layers, measured side by "
        "side in one process (absolute times on a shared machine are noise; "
        "the ratios are what to read). Regenerate this file with:",
        "",
        "```",
        command,
        "```",
        "",
        "(`make bench` runs the same.)",
        "",
    ]
    if quick:
        lines += [
            "**This is a `--quick` smoke run: tiny sizes, few rounds; its "
            "numbers measure overheads, not the layers.**",
            "",
        ]
    now = datetime.datetime.now(datetime.timezone.utc)
    lines += [
        f"- Date: {now:%Y-%m-%d %H:%M} UTC",
        f"- Python {platform.python_version()}, Keras {keras.__version__}, "
        f"TensorFlow {tf.__version__}, NumPy {np.__version__}",
        f"- Machine: {_cpu_model()}, {cores} cores ({usable} usable)"
        + (f", {memory:.0f} GiB RAM" if memory else "")
        + f", {platform.system()} {platform.release()}",
        "- GPU: " + (", ".join(gpu.name for gpu in gpus) if gpus else "none"),
    ]
    load = _load()
    if load:
        lines.append(f"- Load average when the run started: {load}")
    return "\n".join(lines)


def _load():
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except (AttributeError, OSError):
        return None


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    flags = [
        flag
        for flag, on in (("--quick", args.quick), ("--no-write", args.no_write))
        if on
    ]
    command = " ".join(["python -m benchmarks", *flags])
    parts = [header(command, args.quick)]
    print(parts[0], flush=True)
    for name in SECTIONS:
        module_name = f"{__package__ or 'benchmarks'}.{name}"
        try:
            module = importlib.import_module(module_name)
        except Exception as error:
            if name not in OPTIONAL:
                raise
            note = (
                f"Section `{name}` skipped: `{module_name}` could not be "
                f"imported ({type(error).__name__}: {error})."
            )
            print(f"\n{note}", flush=True)
            parts.append(note)
            continue
        start = time.perf_counter()
        section = module.run(quick=args.quick).strip()
        elapsed = time.perf_counter() - start
        section += f"\n\n_Section run time: {elapsed:.0f} s._"
        print(f"\n{section}", flush=True)
        parts.append(section)
    if not args.no_write:
        README.write_text("\n\n".join(parts) + "\n")
        print(f"\nWrote {README}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
