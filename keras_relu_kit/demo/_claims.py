"""From measurements to verdicts: the rules, fixed before the runs, and tables.

Every verdict follows from the numbers by the rules below; nothing is
judged by hand. A run *diverged* when its loss or its activations became
NaN/inf in any seed; a diverged run neither reduces nor prevents anything
(its NaN units count as dead, as the kit's definition says).
"""

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


def summarize_run(run, description, records):
    """Means over seeds of one run's records (the records are kept too)."""
    summary = {
        "key": run.key,
        "setup": run.setup.key,
        "variant": run.variant.key,
        "label": run.variant.label,
        "description": description,
        "val_accuracy": _mean(r["val_accuracy"] for r in records),
        "val_accuracy_range": [
            min(r["val_accuracy"] for r in records),
            max(r["val_accuracy"] for r in records),
        ],
        "zero_fraction": _mean(r["zero_fraction"] for r in records),
        "diverged_seeds": sum(bool(r["diverged"]) for r in records),
        "seeds": len(records),
    }
    if "dead_fraction" in records[0]:
        summary.update(
            {
                "dead_fraction": _mean(r["dead_fraction"] for r in records),
                "dead_fraction_range": [
                    min(r["dead_fraction"] for r in records),
                    max(r["dead_fraction"] for r in records),
                ],
                "dead_fraction_at_init": _mean(
                    r["dead_fraction_at_init"] for r in records
                ),
                "dead_fraction_per_layer": np.mean(
                    [r["dead_fraction_per_layer"] for r in records], axis=0
                ).tolist(),
                "dead_fraction_per_epoch": np.mean(
                    [r["dead_fraction_per_epoch"] for r in records], axis=0
                ).tolist(),
            }
        )
    summary["per_seed"] = records
    return summary


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


# Verdicts ----------------------------------------------------------------


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


def _verdict(good_all, good_any, why):
    if good_all:
        return f"supported: {why}"
    if good_any:
        return f"partly supported: {why}"
    return f"contradicted: {why}"


def _f(value):
    return "n/a" if value is None else f"{value:.2f}"


def _dead(run):
    text = _f(run["dead_fraction"])
    if run["diverged_seeds"]:
        text += " (diverged)"
    return text


def _setup_name(key):
    return {"poor_init": "poor init", "high_lr": "high LR", "sound": "sound"}[key]


def _context(base, run):
    """Where a comparison was made: one set-up, or from one to another."""
    if base["setup"] == run["setup"]:
        return _setup_name(run["setup"])
    return f"{_setup_name(base['setup'])} → {_setup_name(run['setup'])}"


def _comparison_claim(number, claim_id, text, kind, pairs, runs):
    """A claim judged by comparing variants with a baseline run.

    `pairs` lists `(baseline key, variant key)`; pairs whose runs were not
    made (`--quick` leaves some out) are skipped. The measured text groups
    the variants compared with one baseline.
    """
    pairs = [(b, v) for b, v in pairs if b in runs and v in runs]
    several = len({runs[v]["label"] for _, v in pairs}) > 1
    groups: dict = {}
    numbers: dict = {}
    reasons: list = []
    for base_key, key in pairs:
        base, run = runs[base_key], runs[key]
        result = effect(run, base)
        numbers[key] = {
            "baseline": base_key,
            "dead_fraction": run["dead_fraction"],
            "baseline_dead_fraction": base["dead_fraction"],
            "val_accuracy": run["val_accuracy"],
            "baseline_val_accuracy": base["val_accuracy"],
            "effect": result,
        }
        groups.setdefault(base_key, []).append(key)
        reason = _context(base, run)
        if several:
            reason += f", {run['label'].split(',')[0]}"
        reasons.append(f"{result} ({reason})")
    parts = []
    for base_key, keys in groups.items():
        base = runs[base_key]
        if all(runs[k]["setup"] == base["setup"] for k in keys):
            before = f"{_setup_name(base['setup'])}: {base['label']} {_dead(base)}"
            after = [f"{runs[k]['label']} {_dead(runs[k])}" for k in keys]
        else:
            before = f"{base['label']}: {_setup_name(base['setup'])} {_dead(base)}"
            after = [f"{_setup_name(runs[k]['setup'])} {_dead(runs[k])}" for k in keys]
        parts.append(
            f"{before} → {', '.join(after)} dead; val acc "
            f"{_f(base['val_accuracy'])} → "
            + ", ".join(_f(runs[k]["val_accuracy"]) for k in keys)
        )
    effects = [n["effect"] for n in numbers.values()]
    if kind == "prevents":
        good = [e == "prevents" for e in effects]
        some = [e in ("prevents", "reduces") for e in effects]
    else:
        good = [e in ("prevents", "reduces") for e in effects]
        some = good
    return {
        "number": number,
        "id": claim_id,
        "claim": text,
        "measured": "; ".join(parts),
        "verdict": _verdict(all(good), any(some), ", ".join(reasons)),
        "numbers": numbers,
    }


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
    claims = []
    ratio = {k: v["first_over_last"] for k, v in gradients.items()}
    vanish = {k: r < VANISH_BELOW for k, r in ratio.items()}
    squashing = [k for k in ("sigmoid", "tanh") if vanish[k]]
    depth = settings.gradient_depth
    claims.append(
        {
            "number": 1,
            "id": "vanishing_gradients",
            "claim": "ReLU avoids the vanishing gradients of sigmoid and tanh",
            "measured": (
                f"‖∇W‖ of hidden layer 1 / layer {depth} at init, {depth}-layer "
                f"MLP, Glorot init: sigmoid {ratio['sigmoid']:.2g}, tanh "
                f"{ratio['tanh']:.2g}, ReLU {ratio['relu']:.2g} "
                f"(ReLU with He: {ratio['relu_he']:.2g})"
            ),
            "verdict": _verdict(
                not vanish["relu"] and len(squashing) == 2,
                not vanish["relu"] and len(squashing) == 1,
                ", ".join(
                    f"{name}'s {'vanish' if vanish[key] else 'do not vanish'}"
                    for key, name in (
                        ("relu", "ReLU"),
                        ("sigmoid", "sigmoid"),
                        ("tanh", "tanh"),
                    )
                ),
            ),
            "numbers": {"first_over_last": ratio},
        }
    )
    relu, tanh = runs["sound/relu_he"], runs["sound/tanh"]
    z_relu, z_tanh = relu["zero_fraction"], tanh["zero_fraction"]
    claims.append(
        {
            "number": 2,
            "id": "sparsity",
            "claim": "ReLU gives sparse activations",
            "measured": (
                f"exact zeros among hidden activations on validation data after "
                f"training (sound set-up): ReLU {z_relu:.2f}, tanh {z_tanh:.2f} "
                f"(val acc {_f(relu['val_accuracy'])} vs "
                f"{_f(tanh['val_accuracy'])})"
            ),
            "verdict": _verdict(
                z_relu >= SPARSE_AT_LEAST and z_tanh < DENSE_BELOW,
                z_relu > z_tanh,
                f"{z_relu:.0%} of ReLU's activations are 0, {z_tanh:.0%} of tanh's",
            ),
            "numbers": {"relu": z_relu, "tanh": z_tanh},
        }
    )
    sound = runs["sound/relu_he"]
    poor, high = runs["poor_init/relu_he"], runs["high_lr/relu_he"]
    kills = {
        key: runs[key]["dead_fraction"] >= sound["dead_fraction"] + REDUCE_BY
        for key in ("poor_init/relu_he", "high_lr/relu_he")
    }
    claims.append(
        {
            "number": 3,
            "id": "dying",
            "claim": "ReLU units die with poor initialisation or a high learning rate",
            "measured": (
                f"ReLU, He, dead at init → after training: poor init "
                f"{_f(poor['dead_fraction_at_init'])} → {_dead(poor)}, high LR "
                f"{_f(high['dead_fraction_at_init'])} → {_dead(high)}, sound "
                f"{_f(sound['dead_fraction_at_init'])} → {_dead(sound)} (val acc "
                f"{_f(poor['val_accuracy'])} / {_f(high['val_accuracy'])} / "
                f"{_f(sound['val_accuracy'])})"
            ),
            "verdict": _verdict(
                all(kills.values()),
                any(kills.values()),
                ", ".join(
                    f"{_setup_name(k.split('/')[0])} "
                    f"{'kills units' if v else 'does not'}"
                    for k, v in kills.items()
                ),
            ),
            "numbers": {
                "poor_init": poor["dead_fraction"],
                "high_lr": high["dead_fraction"],
                "sound": sound["dead_fraction"],
            },
        }
    )
    setups_with = ("poor_init", "high_lr")

    def pairs(variant_keys, where=setups_with):
        return [(f"{s}/relu_he", f"{s}/{v}") for s in where for v in variant_keys]

    leaky = [f"leaky_relu_{a:g}" for a in settings.leaky_alphas]
    specs = [
        (
            "he_init",
            "He initialisation reduces dying",
            "reduces",
            [("poor_init/relu_glorot", "poor_init/relu_he")],
        ),
        (
            "lower_learning_rate",
            "A lower learning rate reduces dying",
            "reduces",
            [("high_lr/relu_he", "sound/relu_he")],
        ),
        (
            "batch_norm",
            "Batch normalisation reduces dying",
            "reduces",
            pairs(["relu_batch_norm"]),
        ),
        ("leaky_relu", "Leaky ReLU prevents dying", "prevents", pairs(leaky)),
        ("prelu", "PReLU prevents dying", "prevents", pairs(["prelu"])),
        ("elu", "ELU prevents dying", "prevents", pairs(["elu"])),
        (
            "autoleak",
            "(kit) leakify + AutoLeak prevents dying",
            "prevents",
            pairs(["autoleak"]),
        ),
        (
            "recycle",
            "(kit) Recycle prevents dying",
            "prevents",
            pairs(["recycle"]),
        ),
    ]
    for number, (claim_id, text, kind, claim_pairs) in enumerate(specs, start=4):
        claims.append(
            _comparison_claim(number, claim_id, text, kind, claim_pairs, runs)
        )
    return claims


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


def _with_range(value, bounds, repeats):
    if value is None:
        return "n/a"
    if repeats <= 1:
        return f"{value:.2f}"
    return f"{value:.2f} ({bounds[0]:.2f}–{bounds[1]:.2f})"


def runs_table(runs, settings):
    """Every run as a Markdown table (means over seeds, ranges in brackets)."""
    lines = [
        f"| Set-up | Model | dead at init | dead after {settings.epochs} "
        "epochs | dead per layer | zeros | val acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs.values():
        per_layer = run.get("dead_fraction_per_layer")
        dead = _with_range(
            run.get("dead_fraction"), run.get("dead_fraction_range"), run["seeds"]
        )
        if run["diverged_seeds"]:
            dead += f", diverged in {run['diverged_seeds']}/{run['seeds']}"
        lines.append(
            "| "
            + " | ".join(
                [
                    _setup_name(run["setup"]),
                    _cell(run["label"]),
                    _f(run.get("dead_fraction_at_init")),
                    dead,
                    " ".join(f"{v:.2f}" for v in per_layer) if per_layer else "n/a",
                    f"{run['zero_fraction']:.2f}",
                    _with_range(
                        run["val_accuracy"], run["val_accuracy_range"], run["seeds"]
                    ),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


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
