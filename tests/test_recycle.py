import keras
import numpy as np
import pytest
from _helpers import InterruptAt, reset_slot

from keras_relu_kit import initializers, layers, recycling
from keras_relu_kit.callbacks import DeadReLUMonitor, Recycle
from keras_relu_kit.callbacks import _replacement as replacement
from keras_relu_kit.diagnostics import measure
from keras_relu_kit.errors import (
    UnreachableSitesWarning,
)
from keras_relu_kit.recycling import (
    SiteWrite,
    plan_recycling,
    recycle_sites,
    recycle_units,
)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 6)).astype("float32")
Y = RNG.normal(size=(32, 2)).astype("float32")
IMAGES = RNG.normal(size=(16, 6, 6, 2)).astype("float32")
IMAGE_Y = RNG.normal(size=(16, 2)).astype("float32")
DEAD = [1, 3]  # the planted dead units of every hidden layer


def _kill(producer, norm=None):
    """Make units `DEAD` of `producer` output 0 on every input, the others > 0."""
    kernel = keras.ops.convert_to_numpy(producer.kernel).copy()
    if isinstance(producer, keras.layers.Conv2DTranspose):
        kernel[..., DEAD, :] = 0.0  # Its kernel is `(h, w, filters, inputs)`.
    else:
        kernel[..., DEAD] = 0.0
    producer.kernel.assign(kernel)
    if norm is None:
        bias = keras.ops.convert_to_numpy(producer.bias).copy()
        bias[:] = 1.0
        bias[DEAD] = -10.0
        producer.bias.assign(bias)
        return
    # After batch norm: gamma 0 and a negative beta, in both modes.
    for name, alive, dead in (("gamma", 1.0, 0.0), ("beta", 1.0, -10.0)):
        variable = getattr(norm, name)
        array = np.full(variable.shape, alive, "float32")
        array[DEAD] = dead
        variable.assign(array)


def _mlp(batch_norm=False, optimizer=None):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, name="hidden", use_bias=not batch_norm)(inputs)
    norm = None
    if batch_norm:
        norm = keras.layers.BatchNormalization(name="norm")
        x = norm(x)
    x = layers.LeakyReLU(0.0, name="act")(x)
    x = keras.layers.Dense(4, activation="relu", name="fused")(x)
    outputs = keras.layers.Dense(2, name="out")(x)
    model = keras.Model(inputs, outputs)
    _kill(model.get_layer("hidden"), norm)
    _kill(model.get_layer("fused"))
    model.compile(optimizer or keras.optimizers.SGD(0.001, momentum=0.9), "mse")
    return model


def _cnn(batch_norm=False, head="flatten", optimizer=None):
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(5, 3, name="conv", use_bias=not batch_norm)(inputs)
    norm = None
    if batch_norm:
        norm = keras.layers.BatchNormalization(name="norm")
        x = norm(x)
    x = keras.layers.ReLU(name="act")(x)
    x = keras.layers.Conv2D(4, 2, activation="relu", name="conv_2")(x)
    if head == "flatten":
        x = keras.layers.MaxPooling2D(name="pool")(x)
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(2, name="out")(x)
    model = keras.Model(inputs, outputs)
    _kill(model.get_layer("conv"), norm)
    _kill(model.get_layer("conv_2"))
    model.compile(optimizer or keras.optimizers.SGD(0.001, momentum=0.9), "mse")
    return model


class Snapshot(keras.callbacks.Callback):
    """Predictions, weights and optimizer variables at the end of epoch 0."""

    def __init__(self, inputs):
        super().__init__()
        self.inputs = inputs
        self.taken = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch != 0:
            return
        model = self.model
        self.taken = {
            "predictions": keras.ops.convert_to_numpy(
                model.predict_on_batch(self.inputs)
            ),
            "weights": {v.path: keras.ops.convert_to_numpy(v) for v in model.weights},
            "slots": {
                v.path: keras.ops.convert_to_numpy(v) for v in model.optimizer.variables
            },
        }


def _fit(model, x, y, callbacks, epochs=1, **kwargs):
    return model.fit(
        x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=callbacks, **kwargs
    )


def _recycle_between_snapshots(model, x, y, **kwargs):
    before, after = Snapshot(x), Snapshot(x)
    recycle = Recycle(probe=x, **kwargs)
    history = _fit(model, x, y, [before, recycle, after])
    return before.taken, after.taken, recycle, history


class TestRecycle:
    @pytest.mark.parametrize("batch_norm", [False, True])
    @pytest.mark.parametrize(
        "build, x, y",
        [
            (_mlp, X, Y),
            (_cnn, IMAGES, IMAGE_Y),
            (lambda **k: _cnn(head="global", **k), IMAGES, IMAGE_Y),
        ],
        ids=["dense", "conv_flatten", "conv_global_pool"],
    )
    def test_function_is_preserved_and_units_revived(self, build, x, y, batch_norm):
        model = build(batch_norm=batch_norm)
        before, after, recycle, history = _recycle_between_snapshots(model, x, y)
        # Exactly the planted units, at both sites.
        assert [(c["layer"], c["units"]) for c in recycle.changes] == [
            (recycle.sites_recycled[0], DEAD),
            (recycle.sites_recycled[1], DEAD),
        ]
        assert history.history["recycled"] == [4.0]
        np.testing.assert_array_equal(before["predictions"], after["predictions"])
        producer = model.layers[1]
        consumer = model.get_layer(recycle.sites_recycled[1])
        kernel = after["weights"][producer.kernel.path]
        old = before["weights"][producer.kernel.path]
        # Incoming: the dead columns are re-drawn, the others untouched.
        np.testing.assert_array_equal(kernel[..., [0, 2, 4]], old[..., [0, 2, 4]])
        assert np.all(
            np.abs(kernel[..., DEAD]).sum(axis=tuple(range(kernel.ndim - 1))) > 0
        )
        # Outgoing: the consumer's input rows of the dead units are 0 (its
        # own dead columns were re-drawn as it is a recycled site too).
        outgoing = after["weights"][consumer.kernel.path][..., [0, 2]]
        assert not np.any(outgoing[..., DEAD, :])
        old = before["weights"][consumer.kernel.path][..., [0, 2]]
        np.testing.assert_array_equal(
            outgoing[..., [0, 2, 4], :], old[..., [0, 2, 4], :]
        )
        if batch_norm:
            norm = model.get_layer("norm")
            for name, value in (
                ("gamma", 1.0),
                ("beta", 0.0),
                ("moving_mean", 0.0),
                ("moving_variance", 1.0),
            ):
                np.testing.assert_array_equal(
                    after["weights"][getattr(norm, name).path][DEAD], value
                )
        # The revived units are alive on the probe.
        report = measure(model, x)
        assert report.sites["act"].dead == 0

    @pytest.mark.parametrize(
        "optimizer, rule",
        [("sgd_momentum", "zero"), ("adam", "zero"), ("adam", "scaled")],
    )
    def test_slots_are_reset_exactly_for_recycled_entries(self, optimizer, rule):
        make, slot_names = {
            "sgd_momentum": (
                lambda: keras.optimizers.SGD(0.001, momentum=0.9),
                ["momentum"],
            ),
            "adam": (lambda: keras.optimizers.Adam(0.001), ["momentum", "velocity"]),
        }[optimizer]
        model = _mlp(optimizer=make())
        # Every unit alive for an epoch: non-zero slots everywhere.
        for name in ("hidden", "fused"):
            layer = model.get_layer(name)
            layer.kernel.assign(RNG.normal(size=layer.kernel.shape) * 0.3)
            layer.bias.assign(np.ones(layer.bias.shape))
        _fit(model, X, Y, [])
        _kill(model.get_layer("hidden"))
        _kill(model.get_layer("fused"))
        before, after, _, _ = _recycle_between_snapshots(
            model, X, Y, optimizer_slots=rule
        )
        hidden, fused, out = (model.get_layer(n) for n in ("hidden", "fused", "out"))
        columns = {
            v.path for v in (hidden.kernel, hidden.bias, fused.kernel, fused.bias)
        }
        rows = {fused.kernel.path, out.kernel.path}
        for variable in model.trainable_variables:
            for slot_name in slot_names:
                path = next(
                    p
                    for p in after["slots"]
                    if p.endswith(
                        "/" + variable.path.replace("/", "_") + "_" + slot_name
                    )
                )
                old, new = before["slots"][path], after["slots"][path]
                # In the sites' order: `act` resets the rows of `fused`'s
                # kernel, then `fused` its columns.
                expected = old
                if variable.path in rows:
                    expected = reset_slot(path, expected, (DEAD, slice(None)), rule)
                if variable.path in columns:
                    expected = reset_slot(path, expected, (..., DEAD), rule)
                if variable.path in columns | rows and (
                    slot_name == "momentum" or rule == "zero"
                ):
                    assert np.any(old != expected)  # something to reset
                np.testing.assert_allclose(new, expected, rtol=1e-6, atol=0)

    @pytest.mark.xla
    def test_no_retrace_under_xla(self):
        class Counting(layers.LeakyReLU):
            traces = 0

            def call(self, inputs):
                Counting.traces += 1
                return super().call(inputs)

        counts = []
        for kill in (True, False):
            Counting.traces = 0
            inputs = keras.Input((6,))
            hidden = keras.layers.Dense(5, name="hidden")
            x = Counting(0.0, name="act")(hidden(inputs))
            model = keras.Model(inputs, keras.layers.Dense(2)(x))
            if kill:
                _kill(hidden)
            model.compile(keras.optimizers.SGD(0.001), "mse", jit_compile=True)
            recycle = Recycle(probe=X)
            _fit(model, X, Y, [recycle], epochs=3)
            counts.append(Counting.traces)
            assert bool(recycle.changes) == kill
        assert counts[0] == counts[1]

    def test_mirrored_replicas_stay_equal(self, mirrored_strategy):
        with mirrored_strategy.scope():
            model = _mlp()
        recycle = Recycle(probe=X)
        _fit(model, X, Y, [recycle])
        assert [c["units"] for c in recycle.changes] == [DEAD, DEAD]
        for variable in [*model.weights, *model.optimizer.variables]:
            replicas = [np.asarray(v) for v in variable.value.values]
            assert len(replicas) == 2
            np.testing.assert_array_equal(replicas[0], replicas[1])
        kernel = keras.ops.convert_to_numpy(model.get_layer("out").kernel)
        assert not np.any(kernel[DEAD])

    @pytest.mark.parametrize("order", ["recycle_first", "backup_first"])
    def test_resume_equals_an_uninterrupted_run(self, order, tmp_path):
        def run(callbacks, backup):
            keras.utils.set_random_seed(0)
            model = _mlp()
            recycle = Recycle(probe=X, backup_dir=backup)
            pair = [recycle, keras.callbacks.BackupAndRestore(backup)]
            if order == "backup_first":
                pair.reverse()
            _fit(model, X, Y, [*pair, *callbacks], epochs=3, shuffle=False)
            return model, recycle

        with pytest.raises(RuntimeError, match="interrupted"):
            run([InterruptAt(1)], tmp_path / "a")
        assert (tmp_path / "a" / "recycle.json").exists()
        resumed, recycle = run([], tmp_path / "a")
        reference, expected = run([], tmp_path / "b")
        assert recycle.changes == expected.changes
        assert expected.changes[0]["epoch"] == 0
        for a, b in zip(resumed.weights, reference.weights, strict=True):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
            )
        assert not (tmp_path / "a" / "recycle.json").exists()

    def test_reuses_the_monitor_and_serves_many_fits(self):
        model = _mlp()
        monitor = DeadReLUMonitor()
        recycle = Recycle(dead_relu_monitor=monitor, frequency=2)
        history = _fit(model, X, Y, [recycle, monitor], validation_data=(X, Y))
        # Measured at steps 2 and 4: the planted units go at step 2.
        assert [c["step"] for c in recycle.changes] == [2, 2]
        assert history.history["recycled/act"] == [2.0]
        assert history.history["recycled/fused"] == [2.0]
        # A second fit on other data: its own (default) probe, from it.
        _kill(model.get_layer("hidden"))
        other = X[:16] * 2.0
        history = _fit(model, other, Y[:16], [recycle, monitor])
        assert [c["units"] for c in recycle.changes if c["layer"] == "act"] == [DEAD]

    def test_planned_once_per_model(self, monkeypatch):
        calls = []
        plan = recycling.plan_recycling

        def counting(*args, **kwargs):
            calls.append(1)
            return plan(*args, **kwargs)

        monkeypatch.setattr(replacement, "plan_recycling", counting)

        def mlp():
            model = keras.Sequential(
                [
                    keras.Input((6,)),
                    keras.layers.Dense(5, activation="relu", name="hidden"),
                    keras.layers.Dense(2, name="out", kernel_initializer="ones"),
                ]
            )
            model.compile(keras.optimizers.SGD(0.0), "mse")
            return model

        recycle = Recycle(probe=X)
        first = mlp()
        for _ in range(2):
            _kill(first.get_layer("hidden"))
            _fit(first, X, Y, [recycle])
        assert len(calls) == 1
        assert [c["units"] for c in recycle.changes] == [DEAD]
        # Another model with the same callback: its own plan, its own head.
        second = mlp()
        _kill(second.get_layer("hidden"))
        _fit(second, X, Y, [recycle])
        assert len(calls) == 2
        alive = [i for i in range(5) if i not in DEAD]
        for model in (first, second):
            kernel = keras.ops.convert_to_numpy(model.get_layer("out").kernel)
            np.testing.assert_array_equal(kernel[DEAD], 0.0)
            np.testing.assert_array_equal(kernel[alive], 1.0)

    def test_logs_and_changes_without_dead_units(self):
        model = _mlp()
        # A bias of 1 keeps the fresh units alive whatever their draw.
        recycle = Recycle(probe=X, layers=["fused"], bias_initializer="ones")
        history = _fit(model, X, Y, [recycle], epochs=2)
        assert recycle.sites_recycled == ["fused"]
        assert history.history["recycled/fused"] == [2.0, 0.0]
        assert history.history["recycled"] == [2.0, 0.0]
        assert "recycled/act" not in history.history

    def test_tau_recycles_dormant_units(self):
        def plant(model):
            _kill(model.get_layer("hidden"))
            hidden = model.get_layer("hidden")
            bias = keras.ops.convert_to_numpy(hidden.bias).copy()
            kernel = keras.ops.convert_to_numpy(hidden.kernel).copy()
            kernel[:, 0] = 0.0
            bias[0] = 1e-4  # alive, but tiny: dormant
            hidden.kernel.assign(kernel)
            hidden.bias.assign(bias)

        model = _mlp()
        model.compile(keras.optimizers.SGD(0.0), "mse")
        dead_only, dormant = Recycle(probe=X), Recycle(probe=X, tau=0.01)
        plant(model)
        _fit(model, X, Y, [dead_only])
        assert dead_only.changes[0]["units"] == DEAD
        plant(model)
        _fit(model, X, Y, [dormant])
        assert dormant.changes[0]["units"] == [0, *DEAD]

    def test_unmappable_sites_are_named_in_one_warning(self):
        inputs = keras.Input((6,))
        x = keras.layers.Dense(6, activation="relu", name="residual")(inputs)
        x = keras.layers.Add(name="add")([x, inputs])
        x = keras.layers.Dense(5, name="hidden")(x)
        x = keras.layers.ReLU(name="act")(x)
        x = keras.layers.Dense(2, activation="relu", name="head")(x)
        model = keras.Model(inputs, x)
        model.compile("sgd", "mse")
        recycle = Recycle(probe=X)
        with pytest.warns(UnreachableSitesWarning, match="cannot recycle") as caught:
            _fit(model, X, Y, [recycle])
        ours = [w for w in caught if issubclass(w.category, UserWarning)]
        assert len(ours) == 1, [str(w.message) for w in ours]
        message = str(ours[0].message)
        assert "residual: 'add' reads it together with other tensors" in message
        assert "head: its output is a model output" in message
        assert recycle.sites_recycled == ["act"]
        assert set(recycle.unmapped) == {"residual", "head"}

    def test_plan_maps_flatten_rows_channels_first(self):
        inputs = keras.Input((2, 4, 4))
        x = keras.layers.Conv2D(3, 3, data_format="channels_first", name="conv")(inputs)
        x = keras.layers.ReLU(name="act")(x)
        x = keras.layers.Flatten(data_format="channels_last", name="flat")(x)
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
        plans, unmapped = plan_recycling(model)
        assert unmapped == {}
        # (channels, 2, 2) flattened as stored: 4 rows per channel.
        np.testing.assert_array_equal(
            plans["act"].consumers[0].channel_of_row, np.repeat([0, 1, 2], 4)
        )


class TestOneWritePerEvent:
    """The sites recycled at one event are passed in one call, and written
    in one compiled write once that combination of sites recurs."""

    @staticmethod
    def _trained():
        optimizer = keras.optimizers.Adam(0.001)
        model = _mlp(optimizer=optimizer)
        # Every unit alive for an epoch: non-zero slots everywhere.
        for name in ("hidden", "fused"):
            layer = model.get_layer(name)
            layer.kernel.assign(RNG.normal(size=layer.kernel.shape) * 0.3)
            layer.bias.assign(np.ones(layer.bias.shape))
        _fit(model, X, Y, [])
        return model

    @staticmethod
    def _state(model):
        return [
            keras.ops.convert_to_numpy(v)
            for v in [*model.weights, *model.optimizer.variables]
        ]

    @staticmethod
    def _spy(monkeypatch):
        """The sites of each `_apply_updates` call, outer and inner."""
        calls = []
        apply = recycling._apply_updates

        def spy(groups, *args, **kwargs):
            calls.append(sorted(group[0].producer.name for group in groups))
            return apply(groups, *args, **kwargs)

        monkeypatch.setattr(recycling, "_apply_updates", spy)
        return calls

    @pytest.mark.parametrize("rule", ["zero", "scaled", "auto"])
    def test_equals_one_site_after_the_other(self, rule, monkeypatch):
        # `fused` reads `act` and produces its own site: its rows are zeroed
        # for `act`, then its columns re-drawn for `fused`, in one write as
        # in two. Two events: the first combination of sites goes site by
        # site, the second (the same sites) through one write.
        means = np.linspace(0.5, 1.5, 5)
        models = [self._trained() for _ in range(2)]
        for model in models:
            for a, b in zip(models[0].weights, model.weights, strict=True):
                b.assign(a)
            for a, b in zip(
                models[0].optimizer.variables, model.optimizer.variables, strict=True
            ):
                b.assign(a)
        events = []
        for model in models:
            plans, _ = plan_recycling(model)
            events.append(
                [
                    [
                        SiteWrite(plans["act"], DEAD, seed=3, outgoing_means=means),
                        SiteWrite(
                            plans["fused"],
                            [0, 2],
                            seed=4,
                            kernel_initializer="he_normal",
                        ),
                    ],
                    [
                        SiteWrite(plans["act"], [0], seed=5, outgoing_means=means),
                        SiteWrite(plans["fused"], [1, 2], seed=6),
                    ],
                ]
            )
        one, two = models
        before = self._state(one)
        calls = self._spy(monkeypatch)
        for writes in events[0]:
            recycle_sites(writes, optimizer=one.optimizer, slot_rule=rule)
        both = ["fused", "hidden"]
        assert calls == [both, ["hidden"], ["fused"], both]
        for writes in events[1]:
            for write in writes:
                recycle_units(
                    write.plan,
                    write.units,
                    optimizer=two.optimizer,
                    seed=write.seed,
                    kernel_initializer=write.kernel_initializer,
                    outgoing_means=write.outgoing_means,
                    slot_rule=rule,
                )
        changed = 0
        for old, a, b in zip(before, self._state(one), self._state(two), strict=True):
            np.testing.assert_array_equal(a, b)
            changed += int(np.any(old != a))
        # Kernels and biases of three layers, and their slots, changed.
        assert changed >= 6

    @pytest.mark.tensorflow_only
    def test_models_of_one_layout_share_the_write(self):
        # The write of a site takes its variables as arguments: a second
        # model of the same layout reuses the first one's trace, and a
        # whole-kernel draw (every unit recycled) and a block draw of 2
        # units share it too (traced on shapes of any number of units).
        from keras_relu_kit import _compiled

        models = [_mlp() for _ in range(2)]
        for a, b in zip(models[0].weights, models[1].weights, strict=True):
            b.assign(a)
        traced = []
        for units in ([0, 1, 2, 3, 4], [1, 3]):
            for model in models:
                plans, _ = plan_recycling(model)
                recycle_sites([SiteWrite(plans["act"], units, seed=7)], optimizer=None)
                traced.append(
                    sum(
                        shared.function.experimental_get_tracing_count()
                        for shared in _compiled._SHARED_GRAPHS.values()
                    )
                )
            for a, b in zip(models[0].weights, models[1].weights, strict=True):
                np.testing.assert_array_equal(
                    keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
                )
        # No trace after the first write (which traces, unless an earlier
        # test traced this layout).
        assert len(set(traced)) == 1

    def test_events_of_one_layout_that_alias_other_kernels(self):
        # Four hidden layers of one shape: an event on sites (h1, h2) and
        # one on (h1, h3) have the same layout of shapes, but in the first
        # h2's kernel is written twice (h1's rows zeroed, its own columns
        # re-drawn). Each event, repeated so that it goes through the
        # shared write, gives the weights of its sites written one by one.
        from keras_relu_kit import _compiled

        _compiled._SHARED_GRAPHS.clear()

        def deep():
            keras.utils.set_random_seed(3)
            return keras.Sequential(
                [keras.Input((6,))]
                + [
                    keras.layers.Dense(8, activation="relu", name=f"h{i}")
                    for i in range(1, 5)
                ]
                + [keras.layers.Dense(2, name="out")]
            )

        model, reference = deep(), deep()
        events = [("h1", "h2"), ("h1", "h3")] * 2
        for step, sites in enumerate(events):
            for target, together in ((model, True), (reference, False)):
                plans, _ = plan_recycling(target)
                writes = [
                    SiteWrite(plans[name], [i, 5], seed=100 * step + i)
                    for i, name in enumerate(sites)
                ]
                if together:
                    recycle_sites(writes, optimizer=None)
                else:
                    for write in writes:
                        recycle_sites([write], optimizer=None)
            for a, b in zip(model.weights, reference.weights, strict=True):
                np.testing.assert_array_equal(
                    keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
                )

    @pytest.mark.tensorflow_only
    def test_the_write_makes_no_sparse_access_to_a_variable(self):
        # TensorFlow's in-place scatters and gathers on a variable switch it
        # to copy-on-read for good: every later read in the train step
        # copies it. The write scatters into a value and assigns it.
        from keras_relu_kit import _compiled

        _compiled._SHARED_GRAPHS.clear()
        model = _mlp()
        model.compile(keras.optimizers.Adam(), "mse")
        model.fit(X, Y, epochs=1, verbose=0)
        plans, _ = plan_recycling(model)
        writes = [
            SiteWrite(plans["act"], [0, 2], outgoing_means=np.ones(plans["act"].units))
        ]
        recycle_sites(writes, optimizer=model.optimizer, slot_rule="auto")
        ops = {
            op.type
            for shared in _compiled._SHARED_GRAPHS.values()
            for function in shared.function._list_all_concrete_functions()
            for op in function.graph.get_operations()
        }
        assert "TensorScatterUpdate" in ops
        assert "AssignVariableOp" in ops
        sparse = ("ResourceScatter", "ResourceGather")
        assert not [op for op in ops if op.startswith(sparse)]

    @pytest.mark.tensorflow_only
    def test_the_shared_write_keeps_no_model_alive(self):
        # The process keeps the shared writes; they take the variables as
        # arguments and must hold none of them (nor their model).
        import gc
        import weakref

        model = _mlp()
        model.compile(keras.optimizers.Adam(), "mse")
        model.fit(X, Y, epochs=1, verbose=0)
        plans, _ = plan_recycling(model)
        writes = [SiteWrite(plans["act"], [1], outgoing_means=np.ones(5))]
        recycle_sites(writes, optimizer=model.optimizer)
        # The `tf.Variable` behind the kernel, which the write was given.
        kernel = weakref.ref(model.get_layer("hidden").kernel.value)
        alive = weakref.ref(model)
        del model, plans, writes
        gc.collect()
        assert alive() is None
        assert kernel() is None

    def test_recycle_passes_every_site_of_an_epoch_at_once(self, monkeypatch):
        calls = self._spy(monkeypatch)
        model = _mlp()
        _, after, recycle, _ = _recycle_between_snapshots(model, X, Y)
        # Both sites had dead units at the first epoch's end: one event, the
        # sites then written one by one (a first combination).
        assert calls == [["fused", "hidden"], ["hidden"], ["fused"]]
        assert [c["layer"] for c in recycle.changes] == ["act", "fused"]
        out = after["weights"][model.get_layer("out").kernel.path]
        np.testing.assert_array_equal(out[DEAD], 0.0)


class TestRedrawnDistribution:
    """A few units are drawn as a block, with the whole draw's distribution."""

    @pytest.mark.parametrize(
        "initializer, std",
        [
            # (initializer of a 300 -> 400 kernel, its entries' std)
            (keras.initializers.GlorotUniform(), (2 / 700) ** 0.5),
            (keras.initializers.HeNormal(), (2 / 300) ** 0.5),
            (
                keras.initializers.VarianceScaling(
                    3.0, mode="fan_out", distribution="untruncated_normal"
                ),
                (3 / 400) ** 0.5,
            ),
            (keras.initializers.RandomNormal(stddev=0.3), 0.3),
            (initializers.HeNormal(negative_slope=0.3), (2 / 1.09 / 300) ** 0.5),
        ],
        ids=["glorot_uniform", "he_normal", "fan_out", "random_normal", "kit_he"],
    )
    def test_dense_columns(self, initializer, std):
        # Two of 400 columns: drawn alone, a fan of the (300, 2) block would
        # make Glorot's std 1.5 times, and fan_out's 14 times, the whole's.
        inputs = keras.Input((300,))
        hidden = keras.layers.Dense(400, kernel_initializer=initializer)
        x = keras.layers.ReLU(name="act")(hidden(inputs))
        model = keras.Model(inputs, keras.layers.Dense(2)(x))
        old = keras.ops.convert_to_numpy(hidden.kernel)
        plans, _ = plan_recycling(model)
        assert recycle_units(plans["act"], [7, 300], seed=3) == 2
        kernel = keras.ops.convert_to_numpy(hidden.kernel)
        drawn = kernel[:, [7, 300]]
        np.testing.assert_allclose(drawn.std(), std, rtol=0.1)
        assert abs(drawn.mean()) < 0.2 * std
        assert not np.any(drawn == old[:, [7, 300]])
        kept = np.setdiff1d(np.arange(400), [7, 300])
        np.testing.assert_array_equal(kernel[:, kept], old[:, kept])

    def test_conv_filters(self):
        # Glorot's fan of a (3, 3, 16, 64) kernel is (144 + 576) / 2 = 360;
        # of 8 filters alone (144 + 72) / 2 = 108.
        inputs = keras.Input((8, 8, 16))
        conv = keras.layers.Conv2D(64, 3, kernel_initializer="glorot_uniform")
        x = keras.layers.ReLU(name="act")(conv(inputs))
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(2)(x))
        plans, _ = plan_recycling(model)
        units = np.arange(0, 64, 8)
        recycle_units(plans["act"], units, seed=5)
        drawn = keras.ops.convert_to_numpy(conv.kernel)[..., units]
        limit = (3 / 360) ** 0.5
        np.testing.assert_allclose(drawn.std(), limit / 3**0.5, rtol=0.1)
        assert np.abs(drawn).max() <= limit

    @pytest.mark.parametrize(
        "initializer",
        [
            keras.initializers.GlorotUniform(1),
            initializers.HeNormal(1, negative_slope=0.2),
            keras.initializers.VarianceScaling(2.0, "fan_avg", "untruncated_normal", 1),
            keras.initializers.TruncatedNormal(0.1, 0.02, seed=1),
            keras.initializers.RandomUniform(-0.3, 0.1, seed=1),
            keras.initializers.RandomNormal(0.05, 0.2, seed=1),
        ],
        ids=["glorot", "kit_he", "fan_avg", "truncated", "uniform", "normal"],
    )
    def test_auto_rule_scale_is_the_whole_draws(self, initializer):
        # "auto" compares the learning rate with the RMS of the weights the
        # initializer draws: by formula, since a block of a few units has
        # too few weights to measure it; the RMS of a whole draw agrees.
        whole = keras.ops.convert_to_numpy(initializer((300, 400)))
        variable = keras.Variable(np.zeros((300, 400), "float32"))
        scale = recycling._draw_scale(initializer, variable, None)
        assert scale == pytest.approx(np.sqrt(np.mean(whole**2)), rel=0.01)

    def test_block_widths(self, monkeypatch):
        """The blocks drawn for k units: `(fan_in, k)`; on JAX, which
        compiles a draw for each new shape, powers of two of at least 64
        (at most the whole kernel), so a few shapes serve every event."""
        shapes = []
        seeded = recycling._seeded

        def recording(initializer, seed):
            draw = seeded(initializer, seed)

            def call(shape, dtype=None):
                shapes.append(shape)
                return draw(shape=shape, dtype=dtype)

            return call

        monkeypatch.setattr(recycling, "_seeded", recording)
        inputs = keras.Input((30,))
        hidden = keras.layers.Dense(200)
        x = keras.layers.ReLU(name="act")(hidden(inputs))
        model = keras.Model(inputs, keras.layers.Dense(2)(x))
        plans, _ = plan_recycling(model)
        counts = (1, 3, 70, 150)
        for seed, k in enumerate(counts):
            old = keras.ops.convert_to_numpy(hidden.kernel)
            assert recycle_units(plans["act"], np.arange(k), seed=seed) == k
            kernel = keras.ops.convert_to_numpy(hidden.kernel)
            assert not np.any(kernel[:, :k] == old[:, :k])
            np.testing.assert_array_equal(kernel[:, k:], old[:, k:])
        assert all(shape[0] == 30 for shape in shapes)
        widths = [shape[1] for shape in shapes]
        if keras.backend.backend() == "jax":
            assert widths == [64, 64, 128, 200]
        else:
            assert widths == list(counts)

    def test_same_seed_same_draw(self):
        def fresh(seed):
            keras.utils.set_random_seed(0)
            inputs = keras.Input((6,))
            hidden = keras.layers.Dense(40)
            x = keras.layers.ReLU(name="act")(hidden(inputs))
            model = keras.Model(inputs, keras.layers.Dense(2)(x))
            plans, _ = plan_recycling(model)
            recycle_units(plans["act"], [1, 5], seed=seed)
            return keras.ops.convert_to_numpy(hidden.kernel)

        np.testing.assert_array_equal(fresh(1), fresh(1))
        assert not np.array_equal(fresh(1)[:, [1, 5]], fresh(2)[:, [1, 5]])


class TestRecycleArguments:
    @pytest.mark.parametrize(
        "kwargs, error, match",
        [
            ({"tau": -0.1}, ValueError, "tau"),
            ({"tau": "0.1"}, ValueError, "tau"),
            ({"frequency": 0}, ValueError, "frequency"),
            ({"frequency": "batch"}, ValueError, "frequency"),
            ({"layers": 3}, TypeError, "layers"),
            ({"layers": []}, ValueError, "layers"),
            ({"probe_size": 0}, ValueError, "probe_size"),
            ({"batch_size": 0}, ValueError, "batch_size"),
            ({"mode": "eval"}, ValueError, "mode"),
            ({"seed": -1}, ValueError, "seed"),
            ({"verbose": 2}, ValueError, "verbose"),
            ({"backup_dir": ""}, ValueError, "backup_dir"),
            ({"dead_relu_monitor": "monitor"}, ValueError, "dead_relu_monitor"),
            ({"data_format": "nhwc"}, ValueError, "data_format"),
            (
                {"optimizer_slots": "keep"},
                ValueError,
                r"`optimizer_slots` must be one of \('auto', 'zero', 'scaled'\)",
            ),
        ],
    )
    def test_bad_arguments(self, kwargs, error, match):
        with pytest.raises(error, match=match):
            Recycle(**kwargs)

    def test_verbose_line_per_recycling(self, capsys):
        _fit(_mlp(), X, Y, [Recycle(probe=X, verbose=1)])
        assert capsys.readouterr().out.splitlines() == [
            "",
            "Epoch 1: Recycle re-initialised 2 of 5 units of act (40.0% dead).",
            "",
            "Epoch 1: Recycle re-initialised 2 of 4 units of fused (50.0% dead).",
        ]

    def test_unknown_layer_and_foreign_monitor_fail_before_training(self):
        model = _mlp()
        weights = [keras.ops.convert_to_numpy(w) for w in model.weights]
        with pytest.raises(ValueError, match="`layers` names 'nope'"):
            _fit(model, X, Y, [Recycle(probe=X, layers=["nope"])])
        with pytest.raises(ValueError, match="same `fit`"):
            _fit(model, X, Y, [Recycle(dead_relu_monitor=DeadReLUMonitor(probe=X))])
        for before, after in zip(weights, model.weights, strict=True):
            np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))


class TestRecycleBias:
    @pytest.mark.parametrize(
        "bias_initializer, expected", [("zeros", 0.0), (None, -3.0), ("ones", 1.0)]
    )
    def test_bias_of_recycled_units(self, bias_initializer, expected):
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(
            5, bias_initializer=keras.initializers.Constant(-3.0), name="hidden"
        )
        x = keras.layers.ReLU(name="act")(hidden(inputs))
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
        _kill(hidden)
        model.compile(keras.optimizers.SGD(0.0), "mse")
        _fit(model, X, Y, [Recycle(probe=X, bias_initializer=bias_initializer)])
        bias = keras.ops.convert_to_numpy(hidden.bias)
        np.testing.assert_array_equal(bias[DEAD], expected)
        np.testing.assert_array_equal(bias[[0, 2, 4]], 1.0)

    def test_bad_bias_initializer(self):
        with pytest.raises(ValueError, match="bias_initializer"):
            Recycle(bias_initializer="nope")


class TestWhichUnits:
    def _leaky(self, alpha):
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(5, name="hidden")
        x = layers.LeakyReLU(alpha, name="act")(hidden(inputs))
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
        _kill(hidden)
        model.compile(keras.optimizers.SGD(0.0), "mse")
        return model

    def test_dead_units_of_a_leaking_layer_are_left_to_their_leak(self):
        # Dead (<= 0 everywhere) but not silent: alpha * x is not 0, so
        # zeroing the outgoing weights would change the model.
        model = self._leaky(0.1)
        recycle = Recycle(probe=X)
        _fit(model, X, Y, [recycle])
        assert recycle.changes == []
        # With alpha 0 the same units are silent, and recycled.
        model = self._leaky(0.0)
        recycle = Recycle(probe=X)
        _fit(model, X, Y, [recycle])
        assert recycle.changes[0]["units"] == DEAD

    def test_tau_takes_dormant_leaking_units(self):
        model = self._leaky(0.001)
        recycle = Recycle(probe=X, tau=0.05)
        _fit(model, X, Y, [recycle])
        assert recycle.changes[0]["units"] == DEAD

    def test_nonfinite_outputs_recycle_nothing(self):
        model = self._leaky(0.0)
        probe = X.copy()
        probe[0] = np.nan
        recycle = Recycle(probe=probe)
        _fit(model, X, Y, [recycle])
        assert recycle.changes == []


class TestMoreLayouts:
    @pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
    def test_mixed_precision(self, policy):
        keras.config.set_dtype_policy(policy)
        try:
            model = _mlp(optimizer=keras.optimizers.Adam(0.001))
            assert model.get_layer("act").compute_dtype != "float32"
            before, after, recycle, _ = _recycle_between_snapshots(model, X, Y)
        finally:
            keras.config.set_dtype_policy("float32")
        assert [c["units"] for c in recycle.changes] == [DEAD, DEAD]
        np.testing.assert_array_equal(before["predictions"], after["predictions"])
        kernel = after["weights"][model.get_layer("out").kernel.path]
        assert not np.any(kernel[DEAD])

    def test_conv1d_through_reshape(self):
        inputs = keras.Input((8, 2))
        conv = keras.layers.Conv1D(5, 3, name="conv")
        x = keras.layers.ReLU(name="act")(conv(inputs))
        x = keras.layers.Reshape((30,), name="flat")(x)
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
        _kill(conv)
        model.compile(keras.optimizers.SGD(0.001), "mse")
        plans, _ = plan_recycling(model)
        np.testing.assert_array_equal(
            plans["act"].consumers[0].channel_of_row, np.tile(np.arange(5), 6)
        )
        x = RNG.normal(size=(16, 8, 2)).astype("float32")
        y = RNG.normal(size=(16, 2)).astype("float32")
        before, after, recycle, _ = _recycle_between_snapshots(model, x, y)
        assert recycle.changes[0]["units"] == DEAD
        np.testing.assert_array_equal(before["predictions"], after["predictions"])
        kernel = after["weights"][model.get_layer("out").kernel.path]
        assert not np.any(kernel.reshape(6, 5, 2)[:, DEAD])

    def test_separable_convolutions_as_producer_and_consumer(self):
        # Xception's pattern: a ReLU between two SeparableConv2D (depth
        # multiplier 2): units are the pointwise columns, read by the next
        # depthwise kernel's `[..., c, :]`.
        inputs = keras.Input((6, 6, 2))
        first = keras.layers.SeparableConv2D(5, 3, depth_multiplier=2, name="first")
        x = keras.layers.ReLU(name="act")(first(inputs))
        second = keras.layers.SeparableConv2D(
            4, 2, depth_multiplier=2, activation="relu", name="second"
        )
        x = keras.layers.GlobalAveragePooling2D(name="pool")(second(x))
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
        for layer in (first, second):
            bias = np.ones(layer.bias.shape, "float32")
            bias[DEAD] = -1e3
            layer.bias.assign(bias)
        model.compile(keras.optimizers.Adam(0.001), "mse")
        plans, unmapped = plan_recycling(model)
        assert unmapped == {} and plans["act"].producer is first
        assert [c.layer for c in plans["act"].consumers] == [second]
        before, after, recycle, _ = _recycle_between_snapshots(model, IMAGES, IMAGE_Y)
        assert [(c["layer"], c["units"]) for c in recycle.changes] == [
            ("act", DEAD),
            ("second", DEAD),
        ]
        np.testing.assert_array_equal(before["predictions"], after["predictions"])
        weights = before["weights"], after["weights"]
        depthwise = [w[second.depthwise_kernel.path] for w in weights]
        assert not np.any(depthwise[1][:, :, DEAD, :])
        alive = [0, 2, 4]
        np.testing.assert_array_equal(
            depthwise[1][:, :, alive, :], depthwise[0][:, :, alive, :]
        )
        # The first layer's pointwise columns are re-drawn, its depthwise
        # kernel (shared by every unit) kept.
        pointwise = [w[first.pointwise_kernel.path] for w in weights]
        assert np.all(pointwise[1][..., DEAD] != pointwise[0][..., DEAD])
        np.testing.assert_array_equal(
            weights[1][first.depthwise_kernel.path],
            weights[0][first.depthwise_kernel.path],
        )
        np.testing.assert_array_equal(after["weights"][first.bias.path][DEAD], 0.0)

    def test_a_unet_with_transposed_convolutions_and_a_skip(self):
        # The decoder's Conv2DTranspose (kernel `(h, w, filters, inputs)`)
        # produces units and reads `mid`'s; `enc` is read by `mid` and,
        # through the skip's Concatenate, by the head.
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6, 6, 2))
        enc = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="enc")
        mid = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="mid")
        up = keras.layers.Conv2DTranspose(5, 2, strides=2, activation="relu", name="up")
        encoded = enc(inputs)
        x = up(mid(keras.layers.MaxPooling2D(name="pool")(encoded)))
        x = keras.layers.Concatenate(name="skip")([x, encoded])
        x = keras.layers.Conv2D(3, 1, name="head")(x)
        outputs = keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x))
        model = keras.Model(inputs, outputs)
        for layer in (enc, mid, up):
            _kill(layer)
        model.compile(keras.optimizers.Adam(0.001), "mse")
        plans, unmapped = plan_recycling(model)
        assert unmapped == {} and set(plans) == {"enc", "mid", "up"}
        np.testing.assert_array_equal(
            plans["up"].consumers[0].channel_of_row, [0, 1, 2, 3, 4] + [-1] * 5
        )
        assert [c.layer for c in plans["mid"].consumers] == [up]
        before, after, recycle, _ = _recycle_between_snapshots(model, IMAGES, IMAGE_Y)
        assert sorted((c["layer"], c["units"]) for c in recycle.changes) == [
            ("enc", DEAD),
            ("mid", DEAD),
            ("up", DEAD),
        ]
        np.testing.assert_array_equal(before["predictions"], after["predictions"])
        # `up` reads `mid`'s units on its last kernel axis: those rows are 0
        # for its own units that were not re-drawn.
        kernel = after["weights"][up.kernel.path]
        alive = [0, 2, 4]
        assert not np.any(kernel[:, :, alive][..., DEAD])
        head = after["weights"][model.get_layer("head").kernel.path]
        assert not np.any(head[:, :, DEAD]) and not np.any(head[:, :, [6, 8]])

    @pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
    def test_a_unet_with_upsampling_and_a_cropped_skip(self, interpolation):
        # The classic U-Net: the decoder upsamples, the skip is cropped to
        # the decoder's size; both keep each channel's values apart.
        keras.utils.set_random_seed(0)
        images = RNG.normal(size=(16, 8, 8, 2)).astype("float32")
        inputs = keras.Input((8, 8, 2))
        enc = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="enc")
        mid = keras.layers.Conv2D(5, 3, activation="relu", name="mid")
        encoded = enc(inputs)
        x = mid(keras.layers.MaxPooling2D(name="pool")(encoded))
        x = keras.layers.UpSampling2D(interpolation=interpolation, name="up")(x)
        skip = keras.layers.Cropping2D(2, name="crop")(encoded)
        x = keras.layers.Concatenate(name="skip")([skip, x])
        x = keras.layers.Conv2D(3, 1, name="head")(x)
        outputs = keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x))
        model = keras.Model(inputs, outputs)
        _kill(enc)
        _kill(mid)
        model.compile(keras.optimizers.Adam(0.001), "mse")
        plans, unmapped = plan_recycling(model)
        assert unmapped == {}
        head = model.get_layer("head")
        assert [c.layer for c in plans["mid"].consumers] == [head]
        np.testing.assert_array_equal(
            plans["mid"].consumers[0].channel_of_row, [-1] * 5 + [0, 1, 2, 3, 4]
        )
        before, after, recycle, _ = _recycle_between_snapshots(model, images, IMAGE_Y)
        units = {c["layer"]: c["units"] for c in recycle.changes}
        # `mid`'s 2 x 2 outputs leave more of its units dead than planted.
        assert units["enc"] == DEAD and set(DEAD) <= set(units["mid"])
        np.testing.assert_array_equal(before["predictions"], after["predictions"])
        kernel = after["weights"][head.kernel.path]
        assert not np.any(kernel[:, :, DEAD])
        assert not np.any(kernel[:, :, [5 + unit for unit in units["mid"]]])

    @pytest.mark.parametrize(
        "kind", ["separable", "depthwise", "transposed", "transposed_strided"]
    )
    def test_a_mean_contribution_through_another_consumer(self, kind):
        # Continual backprop's correction keeps the consumer's mean output
        # on the probe: exactly for a 1 x 1 consumer, and for a transposed
        # one whose kernel size is a multiple of its strides (2 x 2, stride
        # 2: each output position takes one tap). A separable consumer
        # reads the units through its depthwise kernel's `[..., c, :]`
        # (as a depthwise one, multiplier 2), a transposed one through its
        # kernel's last axis.
        inputs = keras.Input((6, 6, 2))
        x = keras.layers.Conv2D(5, 3, activation="relu", name="site")(inputs)
        consumer = {
            "separable": lambda: keras.layers.SeparableConv2D(3, 1, depth_multiplier=2),
            "depthwise": lambda: keras.layers.DepthwiseConv2D(1, depth_multiplier=2),
            "transposed": lambda: keras.layers.Conv2DTranspose(3, 1),
            "transposed_strided": lambda: keras.layers.Conv2DTranspose(3, 2, strides=2),
        }[kind]()
        model = keras.Model(inputs, consumer(x))
        hidden = keras.Model(inputs, x)
        means = keras.ops.convert_to_numpy(hidden(IMAGES)).mean(axis=(0, 1, 2))
        expected = keras.ops.convert_to_numpy(model(IMAGES)).mean(axis=(0, 1, 2))
        plan = plan_recycling(model)[0]["site"]
        recycle_units(plan, DEAD, seed=0, outgoing_means=means)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(model(IMAGES)).mean(axis=(0, 1, 2)),
            expected,
            atol=1e-5,
            rtol=0,
        )
        if kind in ("separable", "depthwise"):
            kernel = (
                consumer.depthwise_kernel if kind == "separable" else consumer.kernel
            )
            rows = keras.ops.convert_to_numpy(kernel)[:, :, DEAD]
        else:
            rows = keras.ops.convert_to_numpy(consumer.kernel)[..., DEAD]
        assert rows.size and not np.any(rows)

    def test_a_reshape_that_mixes_units_is_unmapped(self):
        inputs = keras.Input((4,))
        x = keras.layers.Dense(6, activation="relu", name="hidden")(inputs)
        x = keras.layers.Reshape((3, 2), name="fold")(x)
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
        plans, unmapped = plan_recycling(model)
        assert plans == {}
        assert "mix its units" in unmapped["hidden"]


class TestWhatRecycleLeavesAlone:
    def test_frozen_layers_are_not_recycled(self):
        model = _mlp()
        model.get_layer("hidden").trainable = False
        model.compile(keras.optimizers.SGD(0.001), "mse")
        kernel = keras.ops.convert_to_numpy(model.get_layer("hidden").kernel)
        recycle = Recycle(probe=X)
        with pytest.warns(UnreachableSitesWarning, match="'hidden' is frozen"):
            _fit(model, X, Y, [recycle])
        assert [c["layer"] for c in recycle.changes] == ["fused"]
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(model.get_layer("hidden").kernel), kernel
        )

    def test_ema_keeps_the_recycled_weights(self):
        # With use_ema, fit ends by copying the weights' moving averages
        # into them: the averages of recycled entries follow the new values.
        model = _mlp(optimizer=keras.optimizers.SGD(0.0, use_ema=True))
        recycle = Recycle(probe=X)
        _fit(model, X, Y, [recycle])
        kernel = keras.ops.convert_to_numpy(model.get_layer("hidden").kernel)
        assert np.all(np.abs(kernel[:, DEAD]).sum(axis=0) > 0)
        assert measure(model, X).sites["act"].dead == 0

    def test_a_plain_function_initializer(self):
        def init(shape, dtype=None):
            return keras.ops.ones(shape, dtype=dtype)

        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(5, kernel_initializer=init, name="hidden")
        x = keras.layers.ReLU(name="act")(hidden(inputs))
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
        _kill(hidden)
        model.compile(keras.optimizers.SGD(0.0), "mse")
        recycle = Recycle(probe=X)
        _fit(model, X, Y, [recycle])
        kernel = keras.ops.convert_to_numpy(hidden.kernel)
        np.testing.assert_array_equal(kernel[:, DEAD], 1.0)

    def test_fully_convolutional_model_with_pooling(self):
        inputs = keras.Input((None, None, 2))
        conv = keras.layers.Conv2D(5, 3, padding="same", name="conv")
        x = keras.layers.ReLU(name="act")(conv(inputs))
        x = keras.layers.MaxPooling2D(3, name="pool")(x)
        x = keras.layers.Conv2D(4, 1, name="head")(x)
        outputs = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, outputs)
        plans, unmapped = plan_recycling(model)
        assert unmapped == {}
        np.testing.assert_array_equal(
            plans["act"].consumers[0].channel_of_row, np.arange(5)
        )
