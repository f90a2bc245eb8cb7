"""`python -m benchmarks [SECTION ...] [--quick] [--no-write] [--section NAME]`.

Each section is a module of this package with `run(quick: bool) -> str`
returning Markdown (a `## ` heading, a table, and a line per target saying
whether it is met, with the numbers). They run in order, print as they
finish, and together with a header (the command, the versions, the
machine) are written to `benchmarks/README.md`.

`--section layers` (repeatable), or the names alone (`python -m
benchmarks layers plasticity`), runs only the sections named: each
replaces its own part of `benchmarks/README.md` (the part under the `## `
heading with the same first words) and ends with a line saying which
command produced it, when and on what machine; the rest of the file, the
header included, is kept as the last full run wrote it.

A section whose `run` takes more than `quick` gets what it accepts of
`write` (`False` with `--no-write`: it writes no file of its own either),
`methods` (`--methods a,b`), `seeds` (`--seeds N`) and `first_seed`
(`--first-seed K`).
"""

import argparse
import datetime
import importlib
import inspect
import os
import pathlib
import platform
import re
import sys
import time

SECTIONS = (
    "layers",
    "training",
    "memory",
    "callbacks",
    "step_writes",
    "plasticity",
    "slot_rules",
    "untuned",
    "scenarios",
)
#: The sections that compare accuracies. Their numbers are published with
#: TensorFlow's oneDNN off (`TF_ENABLE_ONEDNN_OPTS=0`, as `make test` runs):
#: its kernels round otherwise, and ten epochs of SGD at 0.2 or a small
#: CNN carry that into the accuracies. A run of these sections alone turns
#: it off unless the caller set the variable.
ACCURACY = ("plasticity", "slot_rules", "untuned", "scenarios")
# Sections another module may not provide yet: skipped with a note.
OPTIONAL = ("callbacks", "plasticity")
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
    parser.add_argument(
        "--section",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable) and replace only its part "
        "of benchmarks/README.md",
    )
    parser.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help=f"the same as --section SECTION; one of {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--methods",
        help="comma-separated methods for the sections that compare methods "
        "(plasticity, untuned); default: all",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        help="seeds for the sections that repeat over seeds (plasticity, slot_rules, "
        "untuned, scenarios)",
    )
    parser.add_argument(
        "--first-seed",
        type=int,
        help="the first seed of the sections that take one (plasticity, "
        "untuned): other seeds than the published ones check a verdict "
        "afresh; default 0",
    )
    return parser


def parse_args(argv=None):
    """The arguments, with the positional section names in `section`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(
            f"argument SECTION: invalid choice: {unknown[0]!r} "
            f"(choose from {', '.join(SECTIONS)})"
        )
    if args.sections:
        args.section = list(args.section or []) + [
            name for name in args.sections if name not in (args.section or [])
        ]
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"argument --seeds: must be >= 1. Received: {args.seeds}")
    if args.first_seed is not None and args.first_seed < 0:
        parser.error(
            f"argument --first-seed: must be >= 0. Received: {args.first_seed}"
        )
    return args


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
        f"TensorFlow {tf.__version__} ({onednn()}), NumPy {np.__version__}",
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


def _run_section(name, quick, **options):
    """The Markdown of section `name`, or a note if it cannot be imported.

    `options` (`write`, `methods`, `seeds`, `first_seed`) go to the
    section's `run` where it takes them and they are not `None`.
    """
    module_name = f"{__package__ or 'benchmarks'}.{name}"
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        if name not in OPTIONAL:
            raise
        return (
            f"Section `{name}` skipped: `{module_name}` could not be "
            f"imported ({type(error).__name__}: {error})."
        )
    accepted = inspect.signature(module.run).parameters
    kwargs = {
        key: value
        for key, value in options.items()
        if key in accepted and value is not None
    }
    start = time.perf_counter()
    section = module.run(quick=quick, **kwargs).strip()
    elapsed = time.perf_counter() - start
    return section + f"\n\n_Section run time: {elapsed:.0f} s._"


def provenance(command):
    """The line a section run alone ends with: what produced it, and where."""
    import keras
    import tensorflow as tf

    now = datetime.datetime.now(datetime.timezone.utc)
    load = _load()
    return (
        f"_This section alone was regenerated with `{command}` on "
        f"{now:%Y-%m-%d %H:%M} UTC (Keras {keras.__version__}, TensorFlow "
        f"{tf.__version__}, {onednn()}, {_cpu_model()}, {os.cpu_count()} cores"
        + (f", load average when it started: {load}" if load else "")
        + "); the header above describes the last full run._"
    )


def _key(section):
    """A section's heading up to its first colon: `## Layers: ...` -> `Layers`."""
    heading = section.split("\n", 1)[0]
    return heading.removeprefix("## ").split(":", 1)[0].strip()


def replace_sections(text, sections):
    """`text` (the README) with each of `sections` put in place of its part.

    A part runs from its `## ` heading to the next one; parts are
    separated by one blank line. A section whose heading matches no part
    is appended.
    """
    parts = [part.rstrip("\n") for part in re.split(r"(?m)^(?=## )", text)]
    for section in sections:
        section = section.rstrip("\n")
        matches = [i for i, part in enumerate(parts) if _key(part) == _key(section)]
        if matches:
            parts[matches[0]] = section
        else:
            parts.append(section)
    return "\n\n".join(part for part in parts if part) + "\n"


def onednn():
    """`"oneDNN off"` where `TF_ENABLE_ONEDNN_OPTS` is 0, else `"oneDNN on"`
    (TensorFlow's default on x86)."""
    off = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip() == "0"
    return "oneDNN off" if off else "oneDNN on"


def turn_onednn_off(sections):
    """Set `TF_ENABLE_ONEDNN_OPTS=0` when every section of `sections` (the
    names asked for) is an `ACCURACY` section and the caller left it unset;
    a full run (`sections=None`) has other sections and keeps TensorFlow's
    default."""
    if sections and all(name in ACCURACY for name in sections):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _onednn_note(name):
    """The line an accuracy section gets when it ran with oneDNN on."""
    if name not in ACCURACY or onednn() == "oneDNN off":
        return ""
    return (
        "\n\n**Measured with TensorFlow's oneDNN on: its rounding differs "
        "from the published numbers' (`TF_ENABLE_ONEDNN_OPTS=0`). Run "
        f"`python -m benchmarks {name}` alone (it turns oneDNN off) to "
        "compare.**"
    )


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Before TensorFlow is imported (the header imports it).
    turn_onednn_off(args.section)
    flags = [
        flag
        for flag, on in (("--quick", args.quick), ("--no-write", args.no_write))
        if on
    ]
    flags += [f"--section {name}" for name in args.section or []]
    if args.methods:
        flags.append(f"--methods {args.methods}")
    if args.seeds is not None:
        flags.append(f"--seeds {args.seeds}")
    if args.first_seed is not None:
        flags.append(f"--first-seed {args.first_seed}")
    command = " ".join(["python -m benchmarks", *flags])
    head = header(command, args.quick)
    print(head, flush=True)
    sections = []
    for name in SECTIONS:
        if args.section and name not in args.section:
            continue
        # Read before the run: the date and load the section started at.
        started = provenance(command) if args.section else None
        section = _run_section(
            name,
            args.quick,
            write=not args.no_write,
            methods=args.methods,
            seeds=args.seeds,
            first_seed=args.first_seed,
        )
        section += _onednn_note(name)
        if started:
            section += "\n\n" + started
        print(f"\n{section}", flush=True)
        sections.append(section)
    if not args.no_write:
        if args.section and README.exists():
            README.write_text(replace_sections(README.read_text(), sections))
        else:
            README.write_text("\n\n".join([head, *sections]) + "\n")
        print(f"\nWrote {README}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
