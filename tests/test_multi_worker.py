"""Two workers of `MultiWorkerMirroredStrategy` end in the same state.

Keras 3's `fit` does not support `MultiWorkerMirroredStrategy`
(keras-team/keras#20585), so `examples/multi_worker.py` trains in a custom
`strategy.run` loop and drives `DeadReLUMonitor` and `AutoLeak` by hand on
every worker. Here it is run as the README runs it (`--launch`: two worker
processes on 127.0.0.1, each with its own `TF_CONFIG`), once per module,
and what each worker saved is compared: the same alphas, the same raises,
the same measurements and, element by element, the same weights.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.tensorflow_only, pytest.mark.requires_tensorflow]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "multi_worker.py"
EPOCHS = 6
# A guard against a cluster that hangs (a worker waiting forever for a peer
# that never connects), not a limit on speed: the run takes about 20 s on
# an idle 2-core machine. The launcher stops its workers after
# LAUNCH_TIMEOUT; the test stops the launcher's whole process group a
# little later.
LAUNCH_TIMEOUT = 900
TIMEOUT = LAUNCH_TIMEOUT + 30
# AutoLeak's arguments in the example.
THRESHOLD, START, MAX_ALPHA = 0.1, 0.1, 0.3


def _worker_env():
    env = dict(os.environ)
    env.update(
        KERAS_BACKEND="tensorflow",
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join(
            [str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]
        ),
    )
    # The test session's settings, not the workers'.
    for name in ("TF_CONFIG", "XLA_FLAGS"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """What the two workers saved, and what the launcher printed."""
    out = tmp_path_factory.mktemp("multi_worker")
    command = [
        sys.executable,
        str(EXAMPLE),
        "--launch",
        "--out",
        str(out),
        "--epochs",
        str(EPOCHS),
        "--timeout",
        str(LAUNCH_TIMEOUT),
    ]
    # A session of its own, so that a timeout stops the workers too.
    process = subprocess.Popen(
        command,
        cwd=out,
        env=_worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(
            f"{EXAMPLE.name} --launch ran past {TIMEOUT} s.\n"
            f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr[-8000:]}"
        )
    if process.returncode != 0:
        pytest.fail(
            f"{EXAMPLE.name} --launch exited with {process.returncode}.\n"
            f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr[-8000:]}"
        )
    records, arrays = [], []
    for index in range(2):
        with open(out / f"worker_{index}.json") as f:
            records.append(json.load(f))
        with np.load(out / f"worker_{index}.npz") as saved:
            arrays.append({key: saved[key] for key in saved.files})
    return records, arrays, stdout


def _weights(arrays, which):
    count = sum(key.startswith(f"{which}_") for key in arrays)
    return [arrays[f"{which}_{i}"] for i in range(count)]


class TestMultiWorker:
    def test_two_workers_on_loopback(self, run):
        records, _, _ = run
        assert [r["task"] for r in records] == [
            {"type": "worker", "index": 0},
            {"type": "worker", "index": 1},
        ]
        cluster = records[0]["cluster"]
        assert records[1]["cluster"] == cluster
        hosts = cluster["worker"]
        assert len(hosts) == len(set(hosts)) == 2
        assert all(host.startswith("127.0.0.1:") for host in hosts)
        assert [r["num_replicas"] for r in records] == [2, 2]
        # Each worker trained on its own part of every batch: equal weights
        # come from the all-reduce, not from equal data.
        assert records[0]["first_part_sum"] != records[1]["first_part_sum"]

    def test_auto_leak_agrees(self, run):
        (first, second), (arrays, _), _ = run
        # AutoLeak raised something: the test cannot pass vacuously.
        assert first["changes"], "AutoLeak raised no alpha"
        assert second["changes"] == first["changes"]
        assert second["alphas"] == first["alphas"]
        managed = sorted(first["alphas"])
        assert managed == sorted(
            f"dense{suffix}_leaky_relu" for suffix in ("", "_1", "_2", "_3")
        )
        assert {change["layer"] for change in first["changes"]} <= set(managed)
        for change in first["changes"]:
            assert change["dead_fraction"] > THRESHOLD
            assert change["old"] < change["new"] <= MAX_ALPHA + 1e-7
            if change["old"] == 0:
                assert change["new"] == pytest.approx(START)
        # The last raise of each layer is the alpha it ended with, and the
        # alpha in the saved weights.
        last = {change["layer"]: change["new"] for change in first["changes"]}
        names = first["weight_names"]
        final = _weights(arrays, "final")
        for layer, alpha in first["alphas"].items():
            assert alpha == pytest.approx(last.get(layer, 0.0))
            saved = final[names.index(f"sequential/{layer}/alpha")]
            assert float(saved) == alpha

    def test_monitor_agrees(self, run):
        (first, second), _, _ = run
        history = first["history"]
        assert second["history"] == history
        assert [record["epoch"] for record in history] == list(range(EPOCHS))
        for record in history:
            for key, value in record.items():
                if key.startswith("dead_fraction"):
                    assert 0.0 <= value <= 1.0, (key, value)
            assert record["dead"] == round(record["dead_fraction"] * record["units"])
        # The poor initialization kills units; the raised leak revives them.
        assert history[0]["dead_fraction"] > THRESHOLD
        assert history[-1]["dead_fraction"] < history[0]["dead_fraction"]
        # The hooks filled in `logs`, alike on both workers.
        assert second["logs"] == first["logs"]
        for logs, record in zip(first["logs"], history, strict=True):
            assert logs["dead_fraction"] == record["dead_fraction"]
            assert set(first["alphas"]) == {
                key.split("/", 1)[1] for key in logs if key.startswith("alpha/")
            }

    def test_weights_identical(self, run):
        records, (first, second), _ = run
        assert records[0]["weight_names"] == records[1]["weight_names"]
        assert records[0]["optimizer_names"] == records[1]["optimizer_names"]
        for which, names in (
            ("initial", records[0]["weight_names"]),
            ("final", records[0]["weight_names"]),
            ("optimizer", records[0]["optimizer_names"]),
        ):
            a, b = _weights(first, which), _weights(second, which)
            assert len(a) == len(b) == len(names) > 0
            for name, x, y in zip(names, a, b, strict=True):
                np.testing.assert_array_equal(x, y, err_msg=f"{which} {name}")
        assert len(records[0]["weight_names"]) == 14
        # Both stepped the same number of times: every global batch of 64.
        optimizer = dict(
            zip(
                records[0]["optimizer_names"], _weights(first, "optimizer"), strict=True
            )
        )
        from keras_relu_kit.datasets import load_digits

        (x, _), _ = load_digits()
        assert int(optimizer["sgd/iteration"]) == EPOCHS * (len(x) // 64)
        # Training changed every weight, and learned.
        for name, before, after in zip(
            records[0]["weight_names"],
            _weights(first, "initial"),
            _weights(first, "final"),
            strict=True,
        ):
            assert np.all(np.isfinite(after)), name
            assert not np.array_equal(before, after), name
        losses = [logs["loss"] for logs in records[0]["logs"]]
        assert losses[-1] < 0.5 * losses[0]

    def test_no_kit_warnings(self, run):
        records, _, _ = run
        assert [r["user_warnings"] for r in records] == [[], []]

    def test_launcher_reports_agreement(self, run):
        *_, stdout = run
        for key in ("alphas", "changes", "history"):
            assert f"{key}: identical" in stdout
        assert "logs: identical" in stdout
        assert "weights and optimizer state: 26 arrays, identical" in stdout
        assert "AutoLeak raised alpha of" in stdout
