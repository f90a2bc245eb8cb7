"""From measurements to verdicts: the rules, fixed before the runs, and tables.

Every verdict follows from the numbers by the rules below; nothing is
judged by hand. A run *diverged* when its loss or its activations became
NaN/inf in any seed; a diverged run neither reduces nor prevents anything
(its NaN units count as dead, as the kit's definition says).

The claims are one table, `specs`: each row names a claim and the rule
that judges it, a function from the `Evidence` to a `Finding` (what was
measured, the verdict and its numbers). Claims 1-3 have rules of their
own; the remedies' claims share `comparison`, which compares variants
with a baseline run.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

#: A remedy *prevents* dying when at most this fraction of units is dead.
PREVENT_AT_MOST = 0.10
#: A change *reduces* dying when it lowers the dead fraction by this much.
REDUCE_BY = 0.10
#: Gradients *vanish* when the first hidden layer's gradient norm is below
#: this fraction of the last hidden layer's.
VANISH_BELOW = 0.1
#: ReLU activations are *sparse* when at least this fraction is exactly 0...
SPARSE_AT_LEAST = 0.25
#: ...and tanh's are not when fewer than this fraction is.
DENSE_BELOW = 0.01

RULES = (
    f"A remedy *prevents* dying when at most {PREVENT_AT_MOST:.0%} of hidden "
    f"units are dead after training; a change *reduces* it when it lowers "
    f"the dead fraction by at least {REDUCE_BY:.2f}. A run that produced "
    "NaN/inf (*diverged*) does neither.",
    "'Prevents' claims: supported when every measured set-up (and every "
    "slope, for LeakyReLU) prevents; partly supported when at least one "
    "prevents or reduces; else contradicted. 'Reduces' claims: supported "
    "when every measured set-up reduces (or prevents); partly when one "
    "does; else contradicted.",
    f"Gradients vanish when the first hidden layer's gradient norm is under "
    f"{VANISH_BELOW:g} x the last hidden layer's. Claim 1 is supported when "
    "ReLU's do not vanish and both sigmoid's and tanh's do; partly when one "
    "of them does.",
    f"Claim 2 is supported when at least {SPARSE_AT_LEAST:.0%} of ReLU's "
    f"hidden activations are exactly 0 and fewer than {DENSE_BELOW:.0%} of "
    "tanh's; partly when ReLU's zero fraction is still the larger.",
    "Claim 3 is supported when poor initialisation and a high learning rate "
    "each leave at least 0.10 more units dead than the sound set-up; partly "
    "when one of them does.",
)


# Aggregation -------------------------------------------------------------


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def mean_and_range(values):
    """The mean of `values` and `[min, max]`, as the summaries hold them."""
    values = list(values)
    return float(np.mean(values)), [min(values), max(values)]


def mean_per_item(records, key):
    """The mean over seeds of a list per record (per layer, epoch or task)."""
    return np.mean([r[key] for r in records], axis=0).tolist()


def summarize_run(run, description, records):
    """Means over seeds of one run's records (the records are kept too)."""
    accuracy, accuracy_range = mean_and_range(r["val_accuracy"] for r in records)
    summary = {
        "key": run.key,
        "setup": run.setup.key,
        "variant": run.variant.key,
        "label": run.variant.label,
        "description": description,
        "val_accuracy": accuracy,
        "val_accuracy_range": accuracy_range,
        "zero_fraction": _mean(r["zero_fraction"] for r in records),
        "diverged_seeds": sum(bool(r["diverged"]) for r in records),
        "seeds": len(records),
    }
    if "dead_fraction" in records[0]:
        summary.update(_summarize_dead(records))
    summary["per_seed"] = records
    return summary


def _summarize_dead(records):
    dead, dead_range = mean_and_range(r["dead_fraction"] for r in records)
    return {
        "dead_fraction": dead,
        "dead_fraction_range": dead_range,
        "dead_fraction_at_init": _mean(r["dead_fraction_at_init"] for r in records),
        "dead_fraction_per_layer": mean_per_item(records, "dead_fraction_per_layer"),
        "dead_fraction_per_epoch": mean_per_item(records, "dead_fraction_per_epoch"),
    }


def summarize_gradients(per_seed):
    """Geometric means over seeds of per-layer norms and first/last ratios.

    Args:
        per_seed: dict from model key to a list (one per seed) of per-layer
            gradient norms.
    """
    out = {}
    for key, runs in per_seed.items():
        norms = np.asarray(runs, dtype=np.float64)
        ratios = norms[:, 0] / norms[:, -1]
        out[key] = {
            "first_over_last": float(np.exp(np.mean(np.log(ratios)))),
            "first_over_last_per_seed": ratios.tolist(),
            "norm_per_layer": np.exp(np.mean(np.log(norms), axis=0)).tolist(),
        }
    return out


# Words -------------------------------------------------------------------

#: The set-ups' names in the tables and progress lines.
SETUP_NAMES = {
    "poor_init": "poor init",
    "high_lr": "high LR",
    "adam": "Adam",
    "cnn": "CNN",
    "sound": "sound",
}


def setup_name(key):
    """The name of set-up `key` in the tables (`"poor init"`)."""
    return SETUP_NAMES[key]


def _f(value):
    return "n/a" if value is None else f"{value:.2f}"


def with_range(value, bounds, seeds):
    """`value`, and its range over seeds in brackets when there are several."""
    if value is None:
        return "n/a"
    if seeds <= 1:
        return f"{value:.2f}"
    return f"{value:.2f} ({bounds[0]:.2f}–{bounds[1]:.2f})"


def _dead(run):
    text = _f(run["dead_fraction"])
    if run["diverged_seeds"]:
        text += " (diverged)"
    return text


def _verdict(good_all, good_any, why):
    if good_all:
        return f"supported: {why}"
    if good_any:
        return f"partly supported: {why}"
    return f"contradicted: {why}"


# Verdicts ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What the claims are judged on.

    Attributes:
        gradients: the output of `summarize_gradients`.
        runs: dict from run key to the output of `summarize_run`.
        settings: the study's `Settings`.
    """

    gradients: dict
    runs: dict
    settings: Any


@dataclasses.dataclass(frozen=True)
class Finding:
    """What a rule found: the measured text, the verdict and its numbers."""

    measured: str
    verdict: str
    numbers: dict


@dataclasses.dataclass(frozen=True)
class ClaimSpec:
    """A row of the claims table: a claim and the rule that judges it.

    Attributes:
        id: str. The claim's key in `results.json`.
        claim: str. The claim, as the tables state it.
        rule: a function from the `Evidence` to a `Finding`.
    """

    id: str
    claim: str
    rule: Callable[[Evidence], Finding]


def effect(run, base):
    """How `run` compares with `base`, by the rules.

    Returns:
        One of `"prevents"`, `"reduces"`, `"no effect"`, `"worse"`,
        `"diverged"`.

    Example:

    >>> from keras_relu_kit.demo._claims import effect
    >>> base = {"dead_fraction": 0.66, "diverged_seeds": 0}
    >>> effect({"dead_fraction": 0.04, "diverged_seeds": 0}, base)
    'prevents'
    >>> effect({"dead_fraction": 0.40, "diverged_seeds": 0}, base)
    'reduces'
    >>> effect({"dead_fraction": 0.02, "diverged_seeds": 1}, base)
    'diverged'
    """
    if run["diverged_seeds"]:
        return "diverged"
    dead, before = run["dead_fraction"], base["dead_fraction"]
    if dead <= PREVENT_AT_MOST:
        return "prevents"
    if dead <= before - REDUCE_BY:
        return "reduces"
    if dead >= before + REDUCE_BY:
        return "worse"
    return "no effect"


def vanishing_gradients(evidence):
    """Claim 1: the first/last gradient-norm ratios of sigmoid, tanh, ReLU."""
    ratio = {k: v["first_over_last"] for k, v in evidence.gradients.items()}
    vanish = {k: r < VANISH_BELOW for k, r in ratio.items()}
    squashing = [k for k in ("sigmoid", "tanh") if vanish[k]]
    depth = evidence.settings.gradient_depth
    why = ", ".join(
        f"{name}'s {'vanish' if vanish[key] else 'do not vanish'}"
        for key, name in (("relu", "ReLU"), ("sigmoid", "sigmoid"), ("tanh", "tanh"))
    )
    return Finding(
        measured=(
            f"‖∇W‖ of hidden layer 1 / layer {depth} at init, {depth}-layer "
            f"MLP, Glorot init: sigmoid {ratio['sigmoid']:.2g}, tanh "
            f"{ratio['tanh']:.2g}, ReLU {ratio['relu']:.2g} "
            f"(ReLU with He: {ratio['relu_he']:.2g})"
        ),
        verdict=_verdict(
            not vanish["relu"] and len(squashing) == 2,
            not vanish["relu"] and len(squashing) == 1,
            why,
        ),
        numbers={"first_over_last": ratio},
    )


def sparsity(evidence):
    """Claim 2: exact zeros among the hidden activations, ReLU and tanh."""
    relu, tanh = evidence.runs["sound/relu_he"], evidence.runs["sound/tanh"]
    z_relu, z_tanh = relu["zero_fraction"], tanh["zero_fraction"]
    return Finding(
        measured=(
            f"exact zeros among hidden activations on validation data after "
            f"training (sound set-up): ReLU {z_relu:.2f}, tanh {z_tanh:.2f} "
            f"(val acc {_f(relu['val_accuracy'])} vs "
            f"{_f(tanh['val_accuracy'])})"
        ),
        verdict=_verdict(
            z_relu >= SPARSE_AT_LEAST and z_tanh < DENSE_BELOW,
            z_relu > z_tanh,
            f"{z_relu:.0%} of ReLU's activations are 0, {z_tanh:.0%} of tanh's",
        ),
        numbers={"relu": z_relu, "tanh": z_tanh},
    )


def dying(evidence):
    """Claim 3: dead ReLU units in the two dying-prone set-ups and the sound one."""
    runs = evidence.runs
    sound = runs["sound/relu_he"]
    poor, high = runs["poor_init/relu_he"], runs["high_lr/relu_he"]
    kills = {
        key: runs[key]["dead_fraction"] >= sound["dead_fraction"] + REDUCE_BY
        for key in ("poor_init/relu_he", "high_lr/relu_he")
    }
    why = ", ".join(
        f"{setup_name(k.split('/')[0])} {'kills units' if v else 'does not'}"
        for k, v in kills.items()
    )
    return Finding(
        measured=(
            f"ReLU, He, dead at init → after training: poor init "
            f"{_f(poor['dead_fraction_at_init'])} → {_dead(poor)}, high LR "
            f"{_f(high['dead_fraction_at_init'])} → {_dead(high)}, sound "
            f"{_f(sound['dead_fraction_at_init'])} → {_dead(sound)} (val acc "
            f"{_f(poor['val_accuracy'])} / {_f(high['val_accuracy'])} / "
            f"{_f(sound['val_accuracy'])})"
        ),
        verdict=_verdict(all(kills.values()), any(kills.values()), why),
        numbers={
            "poor_init": poor["dead_fraction"],
            "high_lr": high["dead_fraction"],
            "sound": sound["dead_fraction"],
        },
    )


def comparison(kind, pairs, evidence):
    """A remedy's claim: its variants compared with a baseline run.

    Args:
        kind: `"prevents"` or `"reduces"`, what the claim says.
        pairs: `(baseline key, variant key)` pairs; those whose runs were
            not made (`--quick` leaves some out) are skipped.
        evidence: the `Evidence`.
    """
    runs = evidence.runs
    pairs = [(b, v) for b, v in pairs if b in runs and v in runs]
    numbers = {key: _compared(runs[key], runs[base], base) for base, key in pairs}
    effects = [n["effect"] for n in numbers.values()]
    helped = [e in ("prevents", "reduces") for e in effects]
    good = [e == "prevents" for e in effects] if kind == "prevents" else helped
    return Finding(
        measured=_comparison_text(pairs, runs),
        verdict=_verdict(all(good), any(helped), _reasons(pairs, runs, numbers)),
        numbers=numbers,
    )


def _compared(run, base, base_key):
    return {
        "baseline": base_key,
        "dead_fraction": run["dead_fraction"],
        "baseline_dead_fraction": base["dead_fraction"],
        "val_accuracy": run["val_accuracy"],
        "baseline_val_accuracy": base["val_accuracy"],
        "effect": effect(run, base),
    }


def _context(base, run):
    """Where a comparison was made: one set-up, or from one to another."""
    if base["setup"] == run["setup"]:
        return setup_name(run["setup"])
    return f"{setup_name(base['setup'])} → {setup_name(run['setup'])}"


def _reasons(pairs, runs, numbers):
    """Each variant's effect, and where (and which, when several) it was."""
    several = len({runs[v]["label"] for _, v in pairs}) > 1
    reasons = []
    for base_key, key in pairs:
        reason = _context(runs[base_key], runs[key])
        if several:
            reason += f", {runs[key]['label'].split(',')[0]}"
        reasons.append(f"{numbers[key]['effect']} ({reason})")
    return ", ".join(reasons)


def _comparison_text(pairs, runs):
    """The measured text: the variants compared with one baseline together."""
    groups: dict = {}
    for base_key, key in pairs:
        groups.setdefault(base_key, []).append(key)
    parts = []
    for base_key, keys in groups.items():
        base = runs[base_key]
        if all(runs[k]["setup"] == base["setup"] for k in keys):
            before = f"{setup_name(base['setup'])}: {base['label']} {_dead(base)}"
            after = [f"{runs[k]['label']} {_dead(runs[k])}" for k in keys]
        else:
            before = f"{base['label']}: {setup_name(base['setup'])} {_dead(base)}"
            after = [f"{setup_name(runs[k]['setup'])} {_dead(runs[k])}" for k in keys]
        parts.append(
            f"{before} → {', '.join(after)} dead; val acc "
            f"{_f(base['val_accuracy'])} → "
            + ", ".join(_f(runs[k]["val_accuracy"]) for k in keys)
        )
    return "; ".join(parts)


def _compare(kind, pairs):
    """The rule of a remedy's claim (see `comparison`)."""
    return functools.partial(comparison, kind, tuple(pairs))


def _in_both(variant_keys):
    """Each variant against ReLU in the poor-init and high-LR set-ups."""
    return [
        (f"{s}/relu_he", f"{s}/{v}")
        for s in ("poor_init", "high_lr")
        for v in variant_keys
    ]


def specs(settings):
    """The claims table: every claim in order, with the rule that judges it."""
    leaky = [f"leaky_relu_{a:g}" for a in settings.leaky_alphas]
    return (
        ClaimSpec(
            "vanishing_gradients",
            "ReLU avoids the vanishing gradients of sigmoid and tanh",
            vanishing_gradients,
        ),
        ClaimSpec("sparsity", "ReLU gives sparse activations", sparsity),
        ClaimSpec(
            "dying",
            "ReLU units die with poor initialisation or a high learning rate",
            dying,
        ),
        ClaimSpec(
            "he_init",
            "He initialisation reduces dying",
            _compare("reduces", [("poor_init/relu_glorot", "poor_init/relu_he")]),
        ),
        ClaimSpec(
            "lower_learning_rate",
            "A lower learning rate reduces dying",
            _compare("reduces", [("high_lr/relu_he", "sound/relu_he")]),
        ),
        ClaimSpec(
            "batch_norm",
            "Batch normalisation reduces dying",
            _compare("reduces", _in_both(["relu_batch_norm"])),
        ),
        ClaimSpec(
            "leaky_relu",
            "Leaky ReLU prevents dying",
            _compare("prevents", _in_both(leaky)),
        ),
        ClaimSpec(
            "prelu", "PReLU prevents dying", _compare("prevents", _in_both(["prelu"]))
        ),
        ClaimSpec("elu", "ELU prevents dying", _compare("prevents", _in_both(["elu"]))),
        ClaimSpec(
            "autoleak",
            "(kit) leakify + AutoLeak prevents dying",
            _compare("prevents", _in_both(["autoleak"])),
        ),
        ClaimSpec(
            "recycle",
            "(kit) Recycle prevents dying",
            _compare("prevents", _in_both(["recycle"])),
        ),
    )


def judge(gradients, runs, settings):
    """Every claim's row: its numbers and the verdict the rules give.

    Args:
        gradients: the output of `summarize_gradients`.
        runs: dict from run key to the output of `summarize_run`.
        settings: the study's `Settings`.

    Returns:
        A list of dicts with `"number"`, `"id"`, `"claim"`, `"measured"`
        (text), `"verdict"` (text starting with `"supported"`, `"partly
        supported"` or `"contradicted"`) and `"numbers"`.
    """
    evidence = Evidence(gradients, runs, settings)
    return [
        _row(number, spec, spec.rule(evidence))
        for number, spec in enumerate(specs(settings), start=1)
    ]


def _row(number, spec, finding):
    return {
        "number": number,
        "id": spec.id,
        "claim": spec.claim,
        "measured": finding.measured,
        "verdict": finding.verdict,
        "numbers": finding.numbers,
    }


# Tables ------------------------------------------------------------------


def _cell(text):
    return str(text).replace("|", "\\|")


def claims_table(claims):
    """The claims as a Markdown table."""
    lines = [
        "| # | Claim | Measured | Verdict |",
        "|---|---|---|---|",
    ]
    for claim in claims:
        lines.append(
            f"| {claim['number']} | {_cell(claim['claim'])} | "
            f"{_cell(claim['measured'])} | {_cell(claim['verdict'])} |"
        )
    return "\n".join(lines)


def runs_table(runs, settings):
    """Every run as a Markdown table (means over seeds, ranges in brackets)."""
    lines = [
        f"| Set-up | Model | dead at init | dead after {settings.epochs} "
        "epochs | dead per layer | zeros | val acc |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_run_row(run) for run in runs.values()]
    return "\n".join(lines)


def _run_row(run):
    per_layer = run.get("dead_fraction_per_layer")
    dead = with_range(
        run.get("dead_fraction"), run.get("dead_fraction_range"), run["seeds"]
    )
    if run["diverged_seeds"]:
        dead += f", diverged in {run['diverged_seeds']}/{run['seeds']}"
    cells = [
        setup_name(run["setup"]),
        _cell(run["label"]),
        _f(run.get("dead_fraction_at_init")),
        dead,
        " ".join(f"{v:.2f}" for v in per_layer) if per_layer else "n/a",
        f"{run['zero_fraction']:.2f}",
        with_range(run["val_accuracy"], run["val_accuracy_range"], run["seeds"]),
    ]
    return "| " + " | ".join(cells) + " |"


def settings_line(settings, num_train, num_val):
    """One sentence that states the set-up of the study."""
    seeds = settings.seeds
    seed_text = (
        f"seed {seeds[0]}"
        if len(seeds) == 1
        else f"seeds {seeds[0]}–{seeds[-1]} (means; ranges in brackets)"
    )
    return (
        f"scikit-learn digits ({num_train} train / {num_val} validation, 64 "
        f"features); MLP 64 → {settings.hidden_layers} × Dense({settings.width})"
        f" → softmax; SGD (momentum {settings.momentum:g}), batch "
        f"{settings.batch_size}, {settings.epochs} epochs; {seed_text}. Set-ups:"
        f" poor init = every hidden bias {settings.poor_bias:g} at the start, "
        f"LR {settings.learning_rate:g}; high LR = bias 0, LR "
        f"{settings.high_learning_rate:g}; sound = bias 0, LR "
        f"{settings.learning_rate:g}. Dead = output ≤ 0 on every validation "
        "example (DeadReLUMonitor); the train/validation split is fixed, the "
        "seed sets the weights and the batch order."
        + (
            " Quick run: the high-LR set-up has only the ReLU baseline and "
            "Recycle, the kit's recommendation."
            if settings.quick
            else ""
        )
    )


def markdown(claims, runs, settings, num_train, num_val, extra=(), lead=()):
    """The whole `results.md`: `lead` (the scoreboard) first."""
    parts = [
        "# What the numbers say about ReLU",
        "",
        *lead,
        "## The seed text's claims",
        "",
        settings_line(settings, num_train, num_val),
        "",
        claims_table(claims),
        "",
        "## Every run",
        "",
        runs_table(runs, settings),
        "",
        "## Rules",
        "",
        *[f"- {rule}" for rule in RULES],
        "",
        *extra,
    ]
    return "\n".join(parts).rstrip() + "\n"
