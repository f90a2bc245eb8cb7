"""What the callbacks share, alone: `StepSchedule`, `ProbeOptions`,
`print_msg`, and the layout of `keras_relu_kit/callbacks/`."""

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_relu_kit.callbacks._fit import ProbeOptions, StepSchedule
from keras_relu_kit.callbacks._printing import print_msg
from keras_relu_kit.diagnostics import Measurement

CALLBACKS = Path(__file__).resolve().parent.parent / "keras_relu_kit" / "callbacks"


class TestStepSchedule:
    def test_epoch_schedule_counts_no_batches(self):
        schedule = StepSchedule("epoch", owner="Owner", action="measure")
        assert schedule.frequency == "epoch"
        assert not schedule.per_batch

    @pytest.mark.parametrize(
        "frequency, epochs, expected",
        [
            # Batches 0..4 of two epochs, one batch at a time.
            (2, [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]], [2, 4, 6, 8, 10]),
            (3, [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]], [3, 6, 9]),
            # steps_per_execution=4: Keras reports the last batch run.
            (3, [[3, 7], [3, 7]], [4, 8, 12, 16]),
            (5, [[3, 7], [3, 7]], [8, 12, 16]),
        ],
    )
    def test_crossed_steps(self, frequency, epochs, expected):
        schedule = StepSchedule(frequency, owner="Owner", action="measure")
        assert schedule.per_batch
        crossed = []
        for epoch, batches in enumerate(epochs):
            schedule.begin_epoch(epoch)
            for batch in batches:
                if schedule.end_batch(batch):
                    crossed.append(schedule.step)
        assert crossed == expected
        assert schedule.epoch == len(epochs) - 1
        schedule.reset()
        assert (schedule.epoch, schedule.epoch_start, schedule.step) == (0, 0, 0)

    @pytest.mark.backend_independent
    @settings(derandomize=True, max_examples=200, deadline=None)
    @given(
        lengths=st.lists(st.integers(1, 50), min_size=1, max_size=3),
        per_call=st.integers(1, 40),
        frequency=st.integers(1, 60),
    )
    def test_counts_the_steps_run_with_steps_per_execution(
        self, lengths, per_call, frequency
    ):
        # Keras' report of each call of `per_call` steps: the index of its
        # last batch as if it were full, past the end of an epoch whose
        # last call is not. The count is the steps run, and `due` the
        # multiples of `frequency` each call crossed.
        schedule = StepSchedule(frequency, owner="Owner", action="measure")
        run = 0
        for epoch, length in enumerate(lengths):
            schedule.begin_epoch(epoch, length)
            for start in range(0, length, per_call):
                before = run
                run += min(per_call, length - start)
                crossed = schedule.end_batch(start + per_call - 1)
                assert schedule.step == run
                assert schedule.due == run // frequency - before // frequency
                assert crossed == (schedule.due > 0)

    @pytest.mark.parametrize("frequency", [0, -1, 1.5, "batch", True, None])
    def test_invalid_frequency(self, frequency):
        with pytest.raises(ValueError) as info:
            StepSchedule(frequency, owner="Owner", action="recycle")
        assert str(info.value) == (
            "`Owner` argument `frequency` must be 'epoch' or a positive "
            f"integer (recycle every N batches). Received: frequency={frequency!r}"
        )

    def test_numpy_integer_frequency(self):
        schedule = StepSchedule(np.int64(4), owner="Owner", action="measure")
        assert schedule.frequency == 4 and type(schedule.frequency) is int


class TestProbeOptions:
    def test_defaults_are_the_callbacks(self):
        options = ProbeOptions(owner="Owner")
        assert (
            options.probe,
            options.probe_size,
            options.batch_size,
            options.data_format,
            options.seed,
            options.mode,
        ) == (None, 1024, 256, None, 0, "training")

    def test_frozen_and_normalised(self):
        options = ProbeOptions(None, np.int64(8), np.int32(4), seed=np.int64(3))
        assert (options.probe_size, options.batch_size, options.seed) == (8, 4, 3)
        assert all(
            type(v) is int
            for v in (options.probe_size, options.batch_size, options.seed)
        )
        with pytest.raises(dataclasses.FrozenInstanceError):
            options.seed = 1  # type: ignore[misc]

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            (
                {"probe_size": 0},
                "`Owner` argument `probe_size` must be a positive integer. "
                "Received: probe_size=0",
            ),
            (
                {"batch_size": 1.5},
                "`Owner` argument `batch_size` must be a positive integer. "
                "Received: batch_size=1.5",
            ),
            (
                {"seed": -1},
                "`Owner` argument `seed` must be an integer >= 0. Received: seed=-1",
            ),
            (
                {"data_format": "NHWC"},
                "`Owner` argument `data_format` must be None, 'channels_last' or "
                "'channels_first'. Received: data_format='NHWC'",
            ),
            (
                {"mode": "eval"},
                "`Owner` argument `mode` must be 'training' or 'inference'. "
                "Received: mode='eval'",
            ),
        ],
    )
    def test_invalid_args(self, kwargs, message):
        with pytest.raises(ValueError) as info:
            ProbeOptions(owner="Owner", **kwargs)
        assert str(info.value) == message

    @pytest.mark.parametrize("given", [False, True])
    def test_measurement(self, given):
        probe = np.zeros((10, 3), "float32") if given else None
        options = ProbeOptions(
            probe,
            probe_size=7,
            batch_size=5,
            data_format="channels_first",
            seed=2,
            mode="inference",
            owner="Owner",
        )
        measurement = options.measurement(tau=0.1)
        assert isinstance(measurement, Measurement)
        assert (measurement.tau, measurement.data_format, measurement.mode) == (
            0.1,
            "channels_first",
            "inference",
        )
        # A given probe is used whole; fit's data is sampled to probe_size.
        assert measurement.probe.size == (None if given else 7)
        assert (measurement.probe.batch_size, measurement.probe.seed) == (5, 2)
        assert measurement.owner == measurement.probe.owner == "Owner"
        assert options.measurement() is not measurement


def test_print_msg(capsys):
    print_msg("\nEpoch 3: AutoLeak raising alpha of dense_1 to 0.02.")
    assert capsys.readouterr().out == (
        "\nEpoch 3: AutoLeak raising alpha of dense_1 to 0.02.\n"
    )


def _sibling_imports(path):
    """The modules of `keras_relu_kit.callbacks` that `path` imports."""
    prefix = "keras_relu_kit.callbacks."
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        names.update(m[len(prefix) :] for m in modules if m.startswith(prefix))
    return names


def test_modules_import_only_what_sits_below_them():
    graph = {
        path.stem: _sibling_imports(path)
        for path in CALLBACKS.glob("*.py")
        if path.stem != "__init__"
    }
    assert set(graph) >= {"_fit", "_remedy", "_printing", "_state_file"}
    assert "_base" not in graph
    # A topological order exists: no module imports one that imports it.
    order = []
    while graph:
        ready = sorted(name for name, needs in graph.items() if needs <= set(order))
        assert ready, f"import cycle among {sorted(graph)}"
        order.extend(ready)
        for name in ready:
            del graph[name]
    assert order.index("_fit") < order.index("dead_relu_monitor")
    assert order.index("dead_relu_monitor") < order.index("_remedy")
    assert order.index("_remedy") < order.index("auto_leak")
