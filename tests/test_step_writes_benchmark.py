"""`benchmarks/step_writes.py`: the per-step writes section, on every
backend (its worker runs in the suite's own process, `--quick`). It
asserts what the section reports, never a speed."""

import keras

from benchmarks import step_writes
from keras_relu_kit import _compiled
from keras_relu_kit.callbacks import l2_init, shrink_perturb


def test_worker_measures_every_variant_and_restores_the_writes():
    result = step_writes.worker(quick=True)
    assert result["keras"] == keras.__version__
    assert result["step_ms"] > 0
    assert set(result["ratios"]) == set(step_writes.VARIANTS[1:])
    assert all(ratio > 0 for ratio in result["ratios"].values())
    # The eager variants switched the compiled write off while their
    # callbacks made it; the modules are left as they ship.
    assert shrink_perturb.compiled is _compiled.compiled
    assert l2_init.compiled is _compiled.compiled


def test_section_table(monkeypatch):
    measured = {
        "keras": "3",
        "step_ms": 0.5,
        "ratios": {name: 1.0 + i for i, name in enumerate(step_writes.VARIANTS[1:])},
    }
    results = {"tensorflow": measured, "jax": measured, "torch": "no interpreter"}
    monkeypatch.setattr(
        step_writes, "_measure_backend", lambda backend, quick: results[backend]
    )
    text = step_writes.run(quick=True)
    assert text.startswith("## Per-step writes")
    assert "| jax | 0.500 | 1.00x | 2.00x | 3.00x | 4.00x | 5.00x |" in text
    assert "| torch | no interpreter |" in text
    # jax: (2.00 - 1) x 0.5 ms for ShrinkPerturb, as compiled.
    assert (
        "- jax: a step costs 0.500 ms; the per-batch hook adds 0.00 ms, "
        "ShrinkPerturb 0.50 ms (as eager ops 1.00), L2Init 1.50 ms (as eager "
        "ops 2.00)." in text
    )
