"""Dead units and AutoLeak on two workers: `MultiWorkerMirroredStrategy`.

Keras 3's `fit` does not support `tf.distribute.MultiWorkerMirroredStrategy`
yet (keras-team/keras#20585). A custom loop does: the model and optimizer
are made in `strategy.scope()`, a `tf.function` steps with `strategy.run`
(the optimizer all-reduces the gradients across workers), and every worker
drives its own `DeadReLUMonitor` and `AutoLeak` by hand at the end of each
epoch, outside the scope. Their weights are identical after every step, so
every worker measures the same dead units and raises the same slopes; run
the callbacks on **every** worker, not only on the chief (an `assign` made
outside `strategy.run` changes only the worker that makes it).

Each worker is this script with its own `TF_CONFIG`. `--launch` starts two
of them on 127.0.0.1 (CPU only), waits, and checks that they agree:

    python examples/multi_worker.py --launch

One worker of a cluster you start yourself (TF_CONFIG set per machine):

    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python examples/multi_worker.py --out results/
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings

# Workers on one machine share it: TensorFlow only, quiet. Set before
# Keras is imported.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

GLOBAL_BATCH_SIZE = 64


def build_model():
    """A digits MLP whose -0.5 biases kill ReLU units early, leakified."""
    import keras

    import keras_relu_kit

    keras.utils.set_random_seed(0)
    dying = keras.Sequential(
        [keras.Input((64,))]
        + [
            keras.layers.Dense(
                64,
                activation="relu",
                kernel_initializer="he_normal",
                bias_initializer=keras.initializers.Constant(-0.5),
            )
            for _ in range(4)
        ]
        + [keras.layers.Dense(10, activation="softmax")]
    )
    return keras_relu_kit.leakify(dying)


def worker_dataset(x, y, strategy, seed=0):
    """Global batches, shuffled alike on every worker; each keeps its part.

    Every worker runs the same number of steps (`drop_remainder`), as the
    collective all-reduce needs.
    """
    import tensorflow as tf

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(GLOBAL_BATCH_SIZE)
        begin = context.input_pipeline_id * per_replica
        return (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
            .batch(GLOBAL_BATCH_SIZE, drop_remainder=True)
            .map(
                lambda xb, yb: (
                    xb[begin : begin + per_replica],
                    yb[begin : begin + per_replica],
                )
            )
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


def make_train_step(model, optimizer, strategy):
    """A `tf.function` stepping every replica with `strategy.run`."""
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)

    def step(xb, yb):
        with tf.GradientTape() as tape:
            per_example = loss_fn(yb, model(xb, training=True))
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=GLOBAL_BATCH_SIZE
            )
        grads = tape.gradient(loss, model.trainable_variables)
        # Keras' optimizer sums the gradients over all replicas.
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(batches):
        losses = strategy.run(step, args=batches)
        return strategy.reduce("SUM", losses, axis=None)

    return train_step


def train(model, train_step, dataset, strategy, callbacks, epochs):
    """The custom loop: steps, then every callback's hooks, by hand.

    Returns the per-epoch `logs` and the sum of this worker's part of the
    first batch (the parts differ between workers).
    """
    history, first_part = [], None
    for callback in callbacks:
        callback.set_model(model)
    for callback in callbacks:
        callback.on_train_begin()
    for epoch in range(epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        total, steps = 0.0, 0
        for batches in dataset:
            if first_part is None:
                local = strategy.experimental_local_results(batches[0])
                first_part = float(sum(np.sum(part) for part in local))
            total += float(train_step(batches))
            steps += 1
        logs = {"loss": total / steps}
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)  # They fill in `logs`.
        history.append(logs)
    for callback in callbacks:
        callback.on_train_end()
    return history, first_part


def train_worker(out_dir, epochs=8):
    """Train on this worker (as `TF_CONFIG` says) and save what it ended with.

    Writes `worker_<index>.json` (TF_CONFIG's task and cluster, final
    alphas, AutoLeak's `changes`, the monitor's `history`, the per-epoch
    logs, the warnings raised while training) and `worker_<index>.npz`
    (`initial_<i>` and `final_<i>` for every weight, `optimizer_<i>` for
    every optimizer variable). Returns the record.
    """
    import keras
    import tensorflow as tf

    from keras_relu_kit.callbacks import AutoLeak, DeadReLUMonitor
    from keras_relu_kit.datasets import load_digits

    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = tf_config.get("task", {"type": "worker", "index": 0})
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    (x, y), (x_val, _) = load_digits()
    with strategy.scope():
        model = build_model()
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
        optimizer.build(model.trainable_variables)
    initial = [np.array(w) for w in model.get_weights()]
    train_step = make_train_step(model, optimizer, strategy)
    dataset = worker_dataset(x, y, strategy)

    # Outside `fit`, the probe is given. Every worker drives its own
    # callbacks, outside `strategy.scope()`.
    monitor = DeadReLUMonitor(probe=x_val)
    auto = AutoLeak(threshold=0.1, start=0.1, dead_relu_monitor=monitor)
    callbacks = [monitor, auto]  # The monitor first: AutoLeak reuses it.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        logs, first_part = train(
            model, train_step, dataset, strategy, callbacks, epochs
        )

    alphas = {
        name: np.asarray(
            keras.ops.convert_to_numpy(model.get_layer(name).alpha)
        ).tolist()
        for name in auto.layers_managed
    }
    record = {
        "task": task,
        "cluster": tf_config.get("cluster", {}),
        "num_replicas": int(strategy.num_replicas_in_sync),
        "alphas": alphas,
        "changes": auto.changes,
        "history": monitor.history,
        "logs": logs,
        "first_part_sum": first_part,
        "user_warnings": [
            f"{w.category.__name__}: {w.message}"
            for w in caught
            if issubclass(w.category, UserWarning)
        ],
        "weight_names": [w.path for w in model.weights],
        "optimizer_names": [v.path for v in optimizer.variables],
    }
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"worker_{task['index']}")
    arrays = {f"initial_{i}": w for i, w in enumerate(initial)}
    arrays.update(
        {f"final_{i}": np.array(w) for i, w in enumerate(model.get_weights())}
    )
    # The optimizer's state too (step count, momentum slots).
    arrays.update(
        {
            f"optimizer_{i}": np.array(v.numpy())
            for i, v in enumerate(optimizer.variables)
        }
    )
    np.savez(stem + ".npz", **arrays)
    with open(stem + ".json", "w") as f:
        json.dump(record, f, indent=1)
    return record


def free_ports(count, host="127.0.0.1"):
    """`count` ports that were free on `host` a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch(out_dir, epochs=8, num_workers=2, timeout=300):
    """Run `num_workers` workers of this script on 127.0.0.1 and wait.

    Workers run on CPU; their output goes to `worker_<index>.log` in
    `out_dir`. Returns their JSON records, by task index. Raises
    `RuntimeError` with the workers' logs when one fails (the others,
    left waiting for it, are stopped) or when they run past `timeout`
    seconds.
    """
    os.makedirs(out_dir, exist_ok=True)
    hosts = [f"127.0.0.1:{port}" for port in free_ports(num_workers)]
    workers, logs = [], []
    try:
        for index in range(num_workers):
            env = dict(os.environ)
            env.update(
                KERAS_BACKEND="tensorflow",
                CUDA_VISIBLE_DEVICES="",
                TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "3"),
                TF_CONFIG=json.dumps(
                    {
                        "cluster": {"worker": hosts},
                        "task": {"type": "worker", "index": index},
                    }
                ),
            )
            command = [sys.executable, os.path.abspath(__file__)]
            command += ["--out", os.fspath(out_dir), "--epochs", str(epochs)]
            log = os.path.join(out_dir, f"worker_{index}.log")
            logs.append(log)
            with open(log, "w") as f:
                workers.append(
                    subprocess.Popen(
                        command, env=env, stdout=f, stderr=subprocess.STDOUT
                    )
                )
        deadline = time.monotonic() + timeout
        while True:
            codes = [worker.poll() for worker in workers]
            if all(code == 0 for code in codes) or any(codes):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
    codes = [worker.returncode for worker in workers]
    if any(codes):
        if any(code > 0 for code in codes):
            what = f"failed (exit codes {codes}; the others were stopped)"
        else:
            what = f"ran past {timeout} s and were stopped"
        raise RuntimeError(f"workers {what}:" + "".join(_tail(log) for log in logs))
    records = []
    for index in range(num_workers):
        with open(os.path.join(out_dir, f"worker_{index}.json")) as f:
            records.append(json.load(f))
    return records


def _tail(log, size=6000):
    with open(log) as f:
        text = f.read()
    return f"\n--- {os.path.basename(log)} ---\n{text[-size:]}"


def compare(out_dir, num_workers=2):
    """Lines saying whether the workers ended with the same state."""
    records, weights = [], []
    for index in range(num_workers):
        stem = os.path.join(out_dir, f"worker_{index}")
        with open(stem + ".json") as f:
            records.append(json.load(f))
        with np.load(stem + ".npz") as saved:
            weights.append(
                [saved[k] for k in saved.files if not k.startswith("initial_")]
            )
    first = records[0]
    lines = []
    for key in ("alphas", "changes", "history", "logs"):
        same = all(r[key] == first[key] for r in records[1:])
        lines.append(f"{key}: {'identical' if same else 'DIFFERENT'}")
    same = all(
        len(w) == len(weights[0])
        and all(np.array_equal(a, b) for a, b in zip(w, weights[0], strict=True))
        for w in weights[1:]
    )
    lines.append(
        f"weights and optimizer state: {len(weights[0])} arrays, "
        f"{'identical' if same else 'DIFFERENT'}"
    )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--out", default=None, help="directory for worker_<index>.json/.npz"
    )
    parser.add_argument(
        "--launch",
        action="store_true",
        help="start two workers on 127.0.0.1 and compare what they end with",
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    if not args.launch:
        if "TF_CONFIG" not in os.environ:
            parser.error("a worker needs TF_CONFIG (or run with --launch)")
        train_worker(args.out or ".", epochs=args.epochs)
        return None

    out_dir = args.out or tempfile.mkdtemp(prefix="multi_worker_")
    records = launch(out_dir, epochs=args.epochs, timeout=args.timeout)
    chief = records[0]
    for epoch, logs in enumerate(chief["logs"]):
        print(
            f"epoch {epoch + 1}: "
            + ", ".join(f"{k} {v:.3g}" for k, v in logs.items() if "/" not in k)
        )
    for change in chief["changes"]:
        print(
            f"epoch {change['epoch'] + 1}: AutoLeak raised alpha of "
            f"{change['layer']} to {change['new']:.3g} "
            f"({100 * change['dead_fraction']:.0f}% dead)"
        )
    print(f"{len(records)} workers, results in {out_dir}:")
    for line in compare(out_dir, len(records)):
        print("  " + line)
    return records


if __name__ == "__main__":
    main()
