"""Recycle inside custom blocks: nested graph models, keras-hub's
transformer blocks, and the flows a user names with `links`.

Each model is a tiny classifier, `Embedding -> block -> pooling -> Dense`,
whose block holds one feed-forward rectifier site; half its units are
killed with a bias of -1e3, so exactly those units are dead.
"""

import keras
import keras_hub
import numpy as np
import pytest
from _helpers import reset_slot, to_numpy

from keras_relu_kit import recommended, recycling
from keras_relu_kit.callbacks import Recycle
from keras_relu_kit.diagnostics import measure
from keras_relu_kit.diagnostics.sites import layer_paths
from keras_relu_kit.errors import UnreachableSitesWarning
from keras_relu_kit.recycling import plan_recycling, recycle_units

VOCAB, SEQ, EMBED, FF = 20, 6, 16, 32
DEAD = np.arange(0, FF, 2)  # half the feed-forward units
ALIVE = np.arange(1, FF, 2)
RNG = np.random.default_rng(0)
IDS = RNG.integers(0, VOCAB, size=(16, SEQ)).astype("int32")
LABELS = (IDS[:, 0] % 2).astype("int32")


class TransformerBlock(keras.layers.Layer):
    """The keras.io text-classification block: its FFN a nested Sequential."""

    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, **kwargs):
        super().__init__(**kwargs)
        self.att = keras.layers.MultiHeadAttention(
            num_heads=num_heads, key_dim=embed_dim
        )
        self.ffn = keras.Sequential(
            [
                keras.layers.Dense(ff_dim, activation="relu", name="ffn_in"),
                keras.layers.Dense(embed_dim, name="ffn_out"),
            ],
            name="ffn",
        )
        self.layernorm1 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = keras.layers.Dropout(rate)
        self.dropout2 = keras.layers.Dropout(rate)

    def call(self, inputs, training=None):
        attention = self.dropout1(self.att(inputs, inputs), training=training)
        out1 = self.layernorm1(inputs + attention)
        ffn_output = self.dropout2(self.ffn(out1), training=training)
        return self.layernorm2(out1 + ffn_output)


class DenseBlock(keras.layers.Layer):
    """A custom FFN block, `ffn_out(act(bn(ffn_in(x))))`, whose flow the kit
    cannot read: with `fused`, `ffn_in` applies the ReLU itself; `bn` is
    there with `batch_norm`."""

    def __init__(self, fused=False, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        activation = "relu" if fused else None
        self.ffn_in = keras.layers.Dense(FF, activation=activation, name="ffn_in")
        self.bn = keras.layers.BatchNormalization(name="bn") if batch_norm else None
        self.act = None if fused else keras.layers.ReLU(name="act")
        self.ffn_out = keras.layers.Dense(EMBED, name="ffn_out")
        self.norm = keras.layers.LayerNormalization(name="norm")

    def call(self, x, training=None):
        hidden = self.ffn_in(x)
        if self.bn is not None:
            hidden = self.bn(hidden, training=training)
        if self.act is not None:
            hidden = self.act(hidden)
        return self.norm(x + self.ffn_out(hidden))


class UntraceableBlock(DenseBlock):
    """A `DenseBlock` whose `call` cannot run on `keras.Input`s (as Python
    code branching on values or a backend's own ops cannot)."""

    def call(self, x, training=None):
        if keras.utils.is_keras_tensor(x):
            raise TypeError("this block runs on concrete tensors only")
        return super().call(x, training=training)


class InlineBlock(keras.layers.Layer):
    """Applies its rectifier in its own `call`: no site to measure."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get("relu")

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], input_shape[-1]))

    def call(self, x):
        return self.activation(keras.ops.matmul(x, self.kernel))


# block, site, producer path, consumer path, links, batch norm path
CASES = {
    "keras_hub_encoder": (
        lambda: keras_hub.layers.TransformerEncoder(FF, num_heads=2, name="block"),
        "block/feedforward_intermediate_dense",
        "block/feedforward_intermediate_dense",
        "block/feedforward_output_dense",
        None,
        None,
    ),
    "nested_sequential": (
        lambda: TransformerBlock(EMBED, 2, FF, name="block"),
        "block/ffn/ffn_in",
        "block/ffn/ffn_in",
        "block/ffn/ffn_out",
        None,
        None,
    ),
    "links_relu_layer": (
        lambda: DenseBlock(name="block"),
        "block/act",
        "block/ffn_in",
        "block/ffn_out",
        {"block/act": {"producer": "block/ffn_in", "consumers": ["block/ffn_out"]}},
        None,
    ),
    "links_batch_norm": (
        lambda: DenseBlock(batch_norm=True, name="block"),
        "block/act",
        "block/ffn_in",
        "block/ffn_out",
        {
            "block/act": {
                "producer": "block/ffn_in",
                "norms": "block/bn",
                "consumers": "block/ffn_out",
            }
        },
        "block/bn",
    ),
    "links_fused": (
        lambda: DenseBlock(fused=True, name="block"),
        "block/ffn_in",
        "block/ffn_in",
        "block/ffn_out",
        {"block/ffn_in": "block/ffn_out"},
        None,
    ),
    # The same blocks without `links`: their `call` traced on symbolic
    # inputs gives the flow.
    "traced_relu_layer": (
        lambda: DenseBlock(name="block"),
        "block/act",
        "block/ffn_in",
        "block/ffn_out",
        None,
        None,
    ),
    "traced_batch_norm": (
        lambda: DenseBlock(batch_norm=True, name="block"),
        "block/act",
        "block/ffn_in",
        "block/ffn_out",
        None,
        "block/bn",
    ),
    "traced_fused": (
        lambda: DenseBlock(fused=True, name="block"),
        "block/ffn_in",
        "block/ffn_in",
        "block/ffn_out",
        None,
        None,
    ),
}


def _classifier(block, *extra):
    inputs = keras.Input((SEQ,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, EMBED, name="embedding")(inputs)
    for layer in (block, *extra):
        x = layer(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _layer(model, path):
    return layer_paths(model)[path]


def _set(variable, units, value):
    values = to_numpy(variable).copy()
    values[units] = value
    variable.assign(values)


def _killed_model(case):
    """The case's classifier, its producer's `DEAD` units killed: a bias of
    -1e3, or after batch norm a gamma of 0 and a beta of -10."""
    make_block, site, producer, consumer, links, norm = CASES[case]
    keras.utils.set_random_seed(0)
    model = _classifier(make_block())
    if norm is None:
        _set(_layer(model, producer).bias, DEAD, -1e3)
    else:
        # Not the bias: Keras' batch variance on torch, E[x^2] - E[x]^2,
        # cancels below 0 in float32 for values near -1e3 (NaN outputs).
        _set(_layer(model, norm).gamma, DEAD, 0.0)
        _set(_layer(model, norm).beta, DEAD, -10.0)
    return model, site, _layer(model, producer), _layer(model, consumer), links


def _snapshot(model, slots):
    return {
        "weights": {id(v): to_numpy(v) for v in model.trainable_variables},
        "slots": {id(s): to_numpy(s) for group in slots.values() for s in group},
    }


class TestRecycleInsideBlocks:
    @pytest.mark.parametrize("case", sorted(CASES))
    def test_plan_finds_producer_and_consumer(self, case):
        model, site, producer, consumer, links = _killed_model(case)
        plans, unmapped = plan_recycling(model, links=links)
        assert unmapped == {}
        assert list(plans) == [site]
        plan = plans[site]
        assert plan.producer is producer and plan.units == FF
        norm_path = CASES[case][-1]
        assert plan.norms == (() if norm_path is None else (_layer(model, norm_path),))
        assert [c.layer for c in plan.consumers] == [consumer]
        np.testing.assert_array_equal(plan.consumers[0].channel_of_row, np.arange(FF))

    @pytest.mark.parametrize("case", sorted(CASES))
    def test_recycle_units_keeps_predictions_and_zeroes_exactly(self, case):
        model, site, producer, consumer, links = _killed_model(case)
        model.train_on_batch(IDS, LABELS)  # Builds Adam's slots.
        slots = recycling.optimizer_slots(model.optimizer, model.trainable_variables)
        # Non-zero everywhere, so that zeroed entries show.
        for group in slots.values():
            for slot in group:
                slot.assign(RNG.uniform(0.5, 1.0, size=slot.shape))
        assert all(len(slots[id(v)]) == 2 for v in model.trainable_variables)
        before = _snapshot(model, slots)
        predictions = to_numpy(model(IDS, training=False))
        plan = plan_recycling(model, links=links)[0][site]
        assert recycle_units(plan, DEAD, slots=slots, seed=1) == len(DEAD)
        after = _snapshot(model, slots)
        np.testing.assert_allclose(
            to_numpy(model(IDS, training=False)), predictions, atol=1e-5, rtol=0
        )
        kernel = producer.kernel
        old, new = before["weights"][id(kernel)], after["weights"][id(kernel)]
        assert (old[:, DEAD] != new[:, DEAD]).any(axis=0).all()
        np.testing.assert_array_equal(new[:, ALIVE], old[:, ALIVE])
        bias = after["weights"][id(producer.bias)]
        np.testing.assert_array_equal(bias[DEAD], 0.0)
        np.testing.assert_array_equal(
            bias[ALIVE], before["weights"][id(producer.bias)][ALIVE]
        )
        rows = after["weights"][id(consumer.kernel)]
        np.testing.assert_array_equal(rows[DEAD], 0.0)
        np.testing.assert_array_equal(
            rows[ALIVE], before["weights"][id(consumer.kernel)][ALIVE]
        )
        # Adam's m and v: exactly the changed entries are 0.
        changed = {
            id(kernel): (slice(None), DEAD),
            id(producer.bias): (DEAD,),
            id(consumer.kernel): (DEAD,),
        }
        norm_path = CASES[case][-1]
        if norm_path is not None:
            norm = _layer(model, norm_path)
            for variable in (norm.gamma, norm.beta):
                changed[id(variable)] = (DEAD,)
            # Reset to their initializers: gamma 1 and beta 0.
            np.testing.assert_array_equal(to_numpy(norm.gamma)[DEAD], 1.0)
            np.testing.assert_array_equal(to_numpy(norm.beta)[DEAD], 0.0)
            np.testing.assert_array_equal(to_numpy(norm.moving_variance)[DEAD], 1.0)
        for variable in model.trainable_variables:
            for slot in slots[id(variable)]:
                expected = before["slots"][id(slot)]
                if id(variable) in changed:
                    expected = reset_slot(slot.name, expected, changed[id(variable)])
                np.testing.assert_allclose(
                    after["slots"][id(slot)], expected, rtol=1e-6, atol=0
                )

    @pytest.mark.parametrize("case", sorted(CASES))
    def test_fit_with_recycle_revives_the_dead_half(self, case):
        model, site, _, _, links = _killed_model(case)
        report = measure(model, IDS).sites[site]
        assert report.dead_fraction == 0.5
        np.testing.assert_array_equal(np.flatnonzero(report.dead_mask), DEAD)
        recycle = Recycle(probe=IDS, links=links)
        history = model.fit(
            IDS, LABELS, batch_size=8, epochs=1, verbose=0, callbacks=[recycle]
        )
        assert recycle.unmapped == {} and recycle.sites_recycled == [site]
        assert [(c["layer"], c["units"]) for c in recycle.changes] == [
            (site, DEAD.tolist())
        ]
        assert history.history[f"recycled/{site}"] == [float(len(DEAD))]
        assert measure(model, IDS).sites[site].dead_fraction <= 1 / FF


# Other optimizers: each keeps per-entry slots (momentum, accumulators,
# moving averages) that are reset for the recycled entries, exactly those.
OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.01, momentum=0.9),
    "rmsprop": lambda: keras.optimizers.RMSprop(1e-3, momentum=0.5),
    "adamw": lambda: keras.optimizers.AdamW(1e-3),
    "nadam": lambda: keras.optimizers.Nadam(1e-3),
    "lion": lambda: keras.optimizers.Lion(1e-4),
    "adagrad": lambda: keras.optimizers.Adagrad(1e-2),
}


def _recycle_with_slots(optimizer, rule):
    """Recycle `DEAD` of the keras-hub encoder's feed-forward site, every
    optimizer slot filled with random values first; checks the
    predictions are unchanged. Returns `(slots, before, after, producer,
    consumer)`."""
    model, site, producer, consumer, _ = _killed_model("keras_hub_encoder")
    model.compile(
        optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.train_on_batch(IDS, LABELS)
    slots = recycling.optimizer_slots(model.optimizer, model.trainable_variables)
    assert slots[id(consumer.kernel)], "no optimizer slot for the kernel"
    for group in slots.values():
        for slot in group:
            slot.assign(RNG.uniform(0.5, 1.0, size=slot.shape))
    before = _snapshot(model, slots)
    predictions = to_numpy(model(IDS, training=False))
    plan = plan_recycling(model)[0][site]
    recycle_units(plan, DEAD, optimizer=model.optimizer, seed=2, slot_rule=rule)
    after = _snapshot(model, slots)
    np.testing.assert_allclose(
        to_numpy(model(IDS, training=False)), predictions, atol=1e-5, rtol=0
    )
    return slots, before, after, producer, consumer


def _check_recycled_slots(slots, before, after, producer, consumer, rule):
    """The recycled entries' slots are reset by `rule`, the others kept."""
    for variable, changed in (
        (consumer.kernel, DEAD),
        (producer.kernel, (slice(None), DEAD)),
    ):
        for slot in slots[id(variable)]:
            expected = reset_slot(slot.name, before["slots"][id(slot)], changed, rule)
            np.testing.assert_allclose(
                after["slots"][id(slot)], expected, rtol=1e-6, atol=0
            )


@pytest.mark.parametrize("rule", ["zero", "scaled"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_other_optimizers_reset_exactly_the_recycled_slots(name, rule):
    recycled = _recycle_with_slots(OPTIMIZERS[name](), rule)
    _check_recycled_slots(*recycled, rule)


@pytest.mark.parametrize("scale", [0.5, 2.0, "schedule"])
def test_auto_slot_rule_follows_the_learning_rate_against_the_kernel(scale):
    # "auto" zeroes Adam's v while the learning rate is at most
    # AUTO_RATE_RATIO x the RMS of the weights the producer's kernel
    # initializer draws, else "scaled"; a schedule counts by its value at
    # the optimizer's current step (1 after the one training step). The
    # RMS of another draw of the same size is within a few percent of the
    # one recycling draws.
    _, _, producer, _, _ = _killed_model("keras_hub_encoder")
    initializer = keras.initializers.get(producer.kernel_initializer)
    draw = to_numpy(initializer(tuple(producer.kernel.shape))).astype(np.float64)
    assert draw.size >= 256
    bound = recycling.AUTO_RATE_RATIO * np.sqrt(np.mean(draw**2))
    rate = keras.optimizers.schedules.ExponentialDecay(
        4 * bound, decay_steps=1, decay_rate=0.2, staircase=True
    )  # 4x the bound at step 0, 0.8x at step 1
    if scale != "schedule":
        rate = float(scale * bound)
    recycled = _recycle_with_slots(keras.optimizers.Adam(rate), "auto")
    _check_recycled_slots(*recycled, "scaled" if scale == 2.0 else "zero")


def test_learning_rate_read_for_the_auto_rule():
    # A schedule's value at the optimizer's step, through a loss-scale
    # wrapper; 0 without an optimizer; infinity ("scaled") where none can
    # be read.
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 1, 0.5)
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(schedule))
    assert recycling.learning_rate(optimizer) == pytest.approx(0.01)
    optimizer.iterations.assign(2)
    assert recycling.learning_rate(optimizer) == pytest.approx(0.0025)
    assert recycling.learning_rate(None) == 0.0
    assert recycling.learning_rate(object()) == float("inf")


def _other_keras_hub_block(name):
    # Blocks of keras-hub models, from their constructors: SAM's and
    # ViTDet's MLP wrap their layers in a Sequential they also track
    # themselves; RoFormer-v2's encoder has a known feed-forward pair.
    from keras_hub.src.models.roformer_v2.roformer_v2_encoder import (
        RoformerV2Encoder,
    )
    from keras_hub.src.models.sam.sam_layers import MLP as SamMLP
    from keras_hub.src.models.vit_det.vit_layers import MLP as ViTDetMLP

    return {
        "sam_mlp": lambda: SamMLP(FF, EMBED, 2, name="block"),
        "vitdet_mlp": lambda: ViTDetMLP(FF, EMBED, name="block"),
        "roformer_v2": lambda: RoformerV2Encoder(2, 8, FF, name="block"),
    }[name]()


@pytest.mark.parametrize("name", ["sam_mlp", "vitdet_mlp", "roformer_v2"])
def test_other_keras_hub_blocks(name, rng):
    inputs = keras.Input((SEQ, EMBED))
    x = _other_keras_hub_block(name)(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(inputs, outputs)
    plans, unmapped = plan_recycling(model)
    assert unmapped == {} and len(plans) == 1
    (plan,) = plans.values()
    assert plan.units == FF
    (consumer,) = plan.consumers
    if name == "roformer_v2":
        # Its attention cannot run eagerly without a mask on every backend;
        # the plan is TransformerEncoder's, whose recycling runs above.
        block = model.layers[1]
        assert plan.producer is block.feedforward_intermediate_dense
        assert consumer.layer is block.feedforward_output_dense
        return
    # Silenced first, the recycled units change nothing.
    _set(consumer.layer.kernel, DEAD, 0.0)
    x = rng.normal(size=(8, SEQ, EMBED)).astype("float32")
    expected = to_numpy(model(x))
    assert recycle_units(plan, DEAD, seed=4) == len(DEAD)
    np.testing.assert_allclose(to_numpy(model(x)), expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(to_numpy(consumer.layer.kernel)[DEAD], 0.0)


@pytest.mark.parametrize("gated", [False, True])
def test_t5_layers_are_known(gated, rng):
    # T5's feed-forward: `output_projector(input_projector(x) [* gate])`;
    # its `Dense` layers have no bias, so the recycled units are silenced
    # first (outgoing rows 0): recycling them then changes nothing.
    backbone = keras_hub.models.T5Backbone(
        vocabulary_size=VOCAB,
        num_layers=1,
        num_heads=2,
        hidden_dim=EMBED,
        intermediate_dim=FF,
        key_value_dim=8,
        activation="relu",
        use_gated_activation=gated,
    )
    plans, unmapped = plan_recycling(backbone)
    names = [
        f"transformer_{part}_layer_0/input_projector" for part in ("encoder", "decoder")
    ]
    assert unmapped == {} and list(plans) == names
    data = {
        "encoder_token_ids": rng.integers(0, VOCAB, (4, SEQ)).astype("int32"),
        "encoder_padding_mask": np.ones((4, SEQ), "int32"),
        "decoder_token_ids": rng.integers(0, VOCAB, (4, SEQ)).astype("int32"),
        "decoder_padding_mask": np.ones((4, SEQ), "int32"),
    }
    for plan in plans.values():
        (consumer,) = plan.consumers
        assert consumer.layer.name == "output_projector"
        _set(consumer.layer.kernel, DEAD, 0.0)
    expected = backbone(data)
    kernels = [to_numpy(plan.producer.kernel) for plan in plans.values()]
    for plan in plans.values():
        assert recycle_units(plan, DEAD, seed=3) == len(DEAD)
    got = backbone(data)
    for key in expected:
        np.testing.assert_allclose(
            to_numpy(got[key]), to_numpy(expected[key]), atol=1e-5, rtol=0
        )
    for kernel, plan in zip(kernels, plans.values(), strict=True):
        new = to_numpy(plan.producer.kernel)
        assert (new[:, DEAD] != kernel[:, DEAD]).any(axis=0).all()
        np.testing.assert_array_equal(new[:, ALIVE], kernel[:, ALIVE])


class Agent(keras.Model):
    """A subclassed model: `head(drop(hidden(x)))`, `hidden` with a fused
    ReLU, then `act(pre(...))` with a standalone one, read by a `Torso`
    block."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(FF, activation="relu", name="hidden")
        self.drop = keras.layers.Dropout(0.1, name="drop")
        self.pre = keras.layers.Dense(EMBED, name="pre")
        self.act = keras.layers.ReLU(name="act")
        self.torso = DenseBlock(name="torso")
        self.head = keras.layers.Dense(2, name="head")

    def call(self, x, training=None):
        x = self.act(self.pre(self.drop(self.hidden(x), training=training)))
        # `act` is read by the block alone: its units flow to `ffn_in`.
        return self.head(self.torso(x[:, None, :], training=training)[:, 0])


class TestTracedFlows:
    """Subclassed models and custom blocks: their `call` traced on
    symbolic inputs gives the flow, with the rules of a functional graph."""

    def _agent(self, rng):
        keras.utils.set_random_seed(0)
        model = Agent()
        x = rng.normal(size=(16, EMBED)).astype("float32")
        model(x)
        return model, x

    def test_subclassed_model_sites_are_planned(self, rng):
        model, _ = self._agent(rng)
        plans, unmapped = plan_recycling(model)
        # `act` goes through a slice (`x[:, None, :]`, an op): refused.
        assert set(plans) == {"hidden", "torso/act"}
        assert plans["hidden"].producer is model.hidden
        assert [c.layer for c in plans["hidden"].consumers] == [model.pre]
        np.testing.assert_array_equal(
            plans["hidden"].consumers[0].channel_of_row, np.arange(FF)
        )
        assert [c.layer for c in plans["torso/act"].consumers] == [model.torso.ffn_out]
        assert unmapped == {
            "act": "it is read by 'get_item' (GetItem), whose inputs cannot be "
            "zeroed per unit"
        }
        # Traced once: planned again, each sublayer still has one output.
        assert set(plan_recycling(model)[0]) == {"hidden", "torso/act"}
        assert model.hidden.output.shape == (None, FF)

    def test_recycling_a_subclassed_model_keeps_predictions(self, rng):
        model, x = self._agent(rng)
        _set(model.hidden.bias, DEAD, -1e3)
        expected = to_numpy(model(x, training=False))
        plan = plan_recycling(model)[0]["hidden"]
        assert recycle_units(plan, DEAD, seed=3) == len(DEAD)
        np.testing.assert_allclose(
            to_numpy(model(x, training=False)), expected, atol=1e-5, rtol=0
        )
        np.testing.assert_array_equal(to_numpy(model.pre.kernel)[DEAD], 0.0)
        np.testing.assert_array_equal(to_numpy(model.hidden.bias)[DEAD], 0.0)

    def test_recommended_revives_a_subclassed_model(self, rng):
        model, x = self._agent(rng)
        _set(model.hidden.bias, DEAD, -1e3)
        model.compile(keras.optimizers.Adam(1e-3), "mse")
        model, callbacks = recommended(model)
        y = rng.normal(size=(16, 2)).astype("float32")
        history = model.fit(x, y, epochs=1, verbose=0, callbacks=callbacks)
        assert history.history["dead_fraction/hidden"] == [0.5]
        assert history.history["recycled/hidden"] == [float(len(DEAD))]
        assert measure(model, x).sites["hidden"].dead_fraction <= 1 / FF

    @pytest.mark.parametrize("block", ["sequential", "functional", "custom"])
    def test_a_site_read_by_a_block_flows_into_it(self, block, rng):
        inputs = keras.Input((EMBED,))
        x = keras.layers.Dense(FF, activation="relu", name="site")(inputs)
        if block == "sequential":
            reader = keras.Sequential(
                [keras.layers.Dropout(0.1), keras.layers.Dense(4, name="inner")]
            )
        elif block == "functional":
            inner_inputs = keras.Input((FF,))
            inner = keras.layers.Dense(4, name="inner")(inner_inputs)
            reader = keras.Model(inner_inputs, keras.layers.ReLU()(inner))
        else:
            reader = _Reader(name="reader")
        model = keras.Model(inputs, keras.layers.Dense(2)(reader(x)))
        plans, unmapped = plan_recycling(model)
        assert "site" not in unmapped
        (consumer,) = plans["site"].consumers
        assert consumer.layer.name == "inner"
        np.testing.assert_array_equal(consumer.channel_of_row, np.arange(FF))
        data = rng.normal(size=(8, EMBED)).astype("float32")
        _set(model.get_layer("site").bias, DEAD, -1e3)
        expected = to_numpy(model(data))
        recycle_units(plans["site"], DEAD, seed=5)
        np.testing.assert_allclose(to_numpy(model(data)), expected, atol=1e-5, rtol=0)

    @pytest.mark.parametrize(
        "reader, why",
        [
            ("residual", "'add' reads it together with other tensors"),
            ("scaled", "it is read by 'multiply' (Multiply)"),
            ("identity", "'identity' returns its input"),
        ],
    )
    def test_a_block_that_mixes_units_is_refused(self, reader, why):
        inputs = keras.Input((FF,))
        x = keras.layers.Dense(FF, activation="relu", name="site")(inputs)
        block = _Reader(mode=reader, name=reader)
        model = keras.Model(inputs, keras.layers.Dense(2)(block(x)))
        plans, unmapped = plan_recycling(model)
        assert plans == {}
        assert unmapped["site"].startswith(why), unmapped

    def test_a_layer_also_called_elsewhere_is_refused(self, rng):
        # The block's `shared` Dense reads the site's units, and the top
        # level calls it on another tensor: zeroing its rows for the site
        # would change that other call.
        inputs = keras.Input((EMBED,))
        block = _Reader(name="blk")
        site = keras.layers.Dense(FF, activation="relu", name="site")(inputs)
        other = keras.layers.Dense(FF, name="other")(inputs)
        outputs = keras.layers.Add()([block(site), block.inner(other)])
        plans, unmapped = plan_recycling(keras.Model(inputs, outputs))
        assert "site" not in plans
        assert unmapped["site"] == (
            "'inner' is also called outside the graph the kit follows"
        )

        # A subclassed model: a producer inside a Sequential, also called at
        # the top level on other inputs.
        class Twice(keras.Model):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.prod = keras.layers.Dense(FF, activation="relu", name="prod")
                self.block = keras.Sequential([self.prod, keras.layers.Dense(3)])
                self.head = keras.layers.Dense(3, name="head")

            def call(self, x):
                return self.block(x) + self.head(self.prod(x * 2.0))

        model = Twice()
        model(rng.normal(size=(2, EMBED)).astype("float32"))
        plans, unmapped = plan_recycling(model)
        assert plans == {}
        assert unmapped["prod"] == (
            "'prod' is also called outside the graph the kit follows"
        )

    def test_an_untraceable_subclassed_model_is_named(self, rng):
        class Opaque(Agent):
            def call(self, x, training=None):
                if keras.utils.is_keras_tensor(x):
                    raise TypeError("concrete tensors only")
                return super().call(x, training=training)

        model = Opaque(name="opaque")
        model(rng.normal(size=(2, EMBED)).astype("float32"))
        plans, unmapped = plan_recycling(model)
        # The block's own sites are traced from the block.
        assert set(plans) == {"torso/act"}
        assert unmapped["hidden"] == (
            "'opaque' (Opaque) is not a Sequential or functional graph, and its "
            "Python `call` could not be traced on symbolic inputs (TypeError); "
            "name where its units flow with `links=`"
        )


class _Reader(keras.layers.Layer):
    """A custom block reading a site: `inner(x)`, or one that mixes it."""

    def __init__(self, mode="plain", **kwargs):
        super().__init__(**kwargs)
        self.mode = mode
        units = FF if mode == "residual" else 4
        self.inner = (
            None if mode == "identity" else keras.layers.Dense(units, name="inner")
        )

    def call(self, x):
        if self.mode == "residual":
            return x + self.inner(x)
        if self.mode == "scaled":
            return self.inner(x * 2.0)
        if self.inner is None:
            return x
        return self.inner(x)


class TestConcatenate:
    """A site read through a `Concatenate` (Inception's "mixed" blocks, a
    two-tower model): the consumer's rows of the other inputs are no unit's."""

    def _towers(self):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((EMBED,))
        left = keras.layers.Dense(4, activation="relu", name="left")(inputs)
        right = keras.layers.Dense(3, name="right_in")(inputs)
        right = keras.layers.ReLU(name="right")(right)
        merged = keras.layers.Concatenate(name="merge")([right, left, inputs])
        outputs = keras.layers.Dense(2, name="head")(merged)
        return keras.Model(inputs, outputs)

    def test_each_input_maps_to_its_own_rows(self):
        model = self._towers()
        plans, unmapped = plan_recycling(model)
        assert unmapped == {}
        none = [-1] * EMBED
        rows = {name: plan.consumers[0].channel_of_row for name, plan in plans.items()}
        np.testing.assert_array_equal(rows["right"], [0, 1, 2, -1, -1, -1, -1, *none])
        np.testing.assert_array_equal(rows["left"], [-1, -1, -1, 0, 1, 2, 3, *none])

    def test_recycling_through_it_keeps_predictions(self, rng):
        model = self._towers()
        _set(model.get_layer("left").bias, [0, 2], -1e3)
        _set(model.get_layer("right_in").bias, [1], -1e3)
        x = rng.normal(size=(8, EMBED)).astype("float32")
        expected = to_numpy(model(x))
        plans = plan_recycling(model)[0]
        assert recycle_units(plans["left"], [0, 2], seed=1) == 2
        assert recycle_units(plans["right"], [1], seed=2) == 1
        np.testing.assert_allclose(to_numpy(model(x)), expected, atol=1e-5, rtol=0)
        head = to_numpy(model.get_layer("head").kernel)
        np.testing.assert_array_equal(head[[1, 3, 5]], 0.0)
        assert np.all(head[[0, 2, 4, 6]] != 0.0)

    def test_the_mean_contribution_moves_to_the_right_bias_rows(self, rng):
        # ContinualBackprop's correction replaces live units: the head's
        # mean output on the probe is kept, through the concatenation.
        model = self._towers()
        x = rng.normal(size=(64, EMBED)).astype("float32")
        hidden = keras.Model(model.input, model.get_layer("left").output)
        means = to_numpy(hidden(x)).mean(axis=0)
        expected = to_numpy(model(x)).mean(axis=0)
        plan = plan_recycling(model)[0]["left"]
        recycle_units(plan, [0, 1, 2, 3], seed=3, outgoing_means=means)
        np.testing.assert_allclose(
            to_numpy(model(x)).mean(axis=0), expected, atol=1e-5, rtol=0
        )

    def test_a_consumer_reached_by_two_paths_is_one_consumer(self, rng):
        # `Concatenate([x, pool(x)])`: the head reads each unit twice; its
        # rows from both paths are zeroed, and the mean contribution of both
        # is moved into its bias once each.
        inputs = keras.Input((SEQ, EMBED))
        site = keras.layers.Dense(4, activation="relu", name="site")(inputs)
        pooled = keras.layers.MaxPooling1D(1, name="pool")(site)
        merged = keras.layers.Concatenate(name="merge")([site, pooled])
        head = keras.layers.Dense(2, name="head")
        model = keras.Model(inputs, head(merged))
        (consumer,) = plan_recycling(model)[0]["site"].consumers
        assert consumer.layer is head
        np.testing.assert_array_equal(consumer.channel_of_row, [0, 1, 2, 3] * 2)
        x = rng.normal(size=(16, SEQ, EMBED)).astype("float32")
        hidden = keras.Model(inputs, site)
        means = to_numpy(hidden(x)).mean(axis=(0, 1))
        expected = to_numpy(model(x)).mean(axis=(0, 1))
        plan = plan_recycling(model)[0]["site"]
        recycle_units(plan, [0, 2], seed=0, outgoing_means=means)
        np.testing.assert_allclose(
            to_numpy(model(x)).mean(axis=(0, 1)), expected, atol=1e-5, rtol=0
        )
        np.testing.assert_array_equal(to_numpy(head.kernel)[[0, 2, 4, 6]], 0.0)

    @pytest.mark.parametrize(
        "how, why",
        [
            ("time", "the layers before 'head' mix its units with another"),
            ("time_max", "the layers before 'head' mix its units with another"),
            ("time_mean", "the layers before 'head' mix its units with another"),
            ("twice", "'merge' reads it together with other tensors or more"),
        ],
    )
    def test_mixing_concatenations_are_refused(self, how, why):
        inputs = keras.Input((SEQ, EMBED))
        site = keras.layers.Dense(EMBED, activation="relu", name="site")(inputs)
        if how.startswith("time"):
            # Along the positions: each head row reads the site and the input.
            merged = keras.layers.Concatenate(axis=1, name="merge")([site, inputs])
            if how == "time_max":
                # The max over positions would hide the other tensor.
                merged = keras.layers.GlobalMaxPooling1D()(merged)
            elif how == "time_mean":
                merged = keras.layers.GlobalAveragePooling1D()(merged)
        else:
            merged = keras.layers.Concatenate(name="merge")([site, site])
        model = keras.Model(inputs, keras.layers.Dense(2, name="head")(merged))
        plans, unmapped = plan_recycling(model)
        assert plans == {}
        assert unmapped["site"].startswith(why)


class TestWhatStaysOutOfReach:
    def test_keras_hub_decoder_is_known_too(self):
        decoder = keras_hub.layers.TransformerDecoder(FF, num_heads=2, name="dec")
        plans, unmapped = plan_recycling(_classifier(decoder))
        assert unmapped == {}
        plan = plans["dec/feedforward_intermediate_dense"]
        assert plan.consumers[0].layer is decoder._feedforward_output_dense

    @pytest.mark.parametrize(
        "activation", ["tanh", keras.layers.Activation("tanh"), keras.layers.ELU()]
    )
    def test_a_producer_with_its_own_activation_is_refused(self, activation):
        # Spelled as a name or as a layer, the producer is not linear.
        inputs = keras.Input((EMBED,))
        x = keras.layers.Dense(FF, activation=activation, name="producer")(inputs)
        x = keras.layers.ReLU(name="act")(x)
        model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
        plans, unmapped = plan_recycling(model)
        assert "act" not in plans
        assert unmapped["act"] == "its producer 'producer' has its own activation"

    def test_nested_models_follow_the_top_level_rules(self):
        # The ReLU is the nested Sequential's output: who reads it is out
        # of that graph.
        inputs = keras.Input((EMBED,))
        ffn = keras.Sequential(
            [keras.layers.Dense(FF, name="ffn_in"), keras.layers.ReLU(name="act")],
            name="ffn",
        )
        outputs = keras.layers.Dense(2, name="head")(ffn(inputs))
        plans, unmapped = plan_recycling(keras.Model(inputs, outputs))
        assert plans == {}
        assert unmapped["ffn/act"].startswith(
            "in 'ffn', its output is a model output; name where its units "
            "flow with `links=`"
        )

    def test_unlinked_and_inline_blocks_are_named_in_one_warning(self):
        model = _classifier(
            UntraceableBlock(fused=True, name="block"),
            InlineBlock(name="inline"),
            keras.layers.Dense(EMBED, activation="relu", name="mapped"),
            keras.layers.Dense(EMBED, name="after"),
        )
        recycle = Recycle(probe=IDS)
        with pytest.warns(UnreachableSitesWarning) as caught:
            model.fit(IDS, LABELS, epochs=1, verbose=0, callbacks=[recycle])
        ours = [w for w in caught if issubclass(w.category, UserWarning)]
        assert len(ours) == 1, [str(w.message) for w in ours]
        message = str(ours[0].message)
        assert message.startswith("Recycle cannot recycle these rectifier sites")
        assert (
            "block/ffn_in: it is inside 'block' (UntraceableBlock), whose `call` "
            "is Python code the kit cannot follow ('block' (UntraceableBlock) is "
            "not a Sequential or functional graph, and its Python `call` could "
            "not be traced on symbolic inputs (TypeError))"
        ) in message
        assert "inline: it applies its rectifier `activation` in its own" in message
        assert message.count("`links=`") == 2
        assert recycle.sites_recycled == ["mapped"]
        assert set(recycle.unmapped) == {"block/ffn_in", "inline"}


class TestLinksArgument:
    @pytest.mark.parametrize(
        "links, error, match",
        [
            (["block/ffn_in"], TypeError, r"links=\['block/ffn_in'\] \(of type list"),
            ({1: "block/ffn_out"}, TypeError, "keys are site paths"),
            ({"block/ffn_in": 3}, TypeError, r"Received: links\['block/ffn_in'\]=3"),
            ({"block/ffn_in": []}, ValueError, "at least one consumer"),
            (
                {"block/act": {"producer": "block/ffn_in"}},
                ValueError,
                "names no 'consumers'",
            ),
            (
                {"block/act": {"consumers": "block/ffn_out", "consumer": "x"}},
                ValueError,
                r"has unknown keys \['consumer'\]",
            ),
        ],
    )
    def test_bad_links_fail_at_init(self, links, error, match):
        with pytest.raises(error, match=r"`Recycle` argument `links` must"):
            Recycle(links=links)
        with pytest.raises(error, match=match):
            Recycle(links=links)

    @pytest.mark.parametrize(
        "fused, links, match",
        [
            (
                True,
                {"block/ffn_in": "block/ffn_ou"},
                r"names 'block/ffn_ou' \(for 'block/ffn_in'\), which is not a "
                r"layer path .* such as \['block/ffn_out'",
            ),
            (
                True,
                {"block/nope": "block/ffn_out"},
                r"names 'block/nope', which is not a rectifier site .* "
                r"Expected some of: \['block/ffn_in'\]",
            ),
            (
                True,
                {"block/ffn_in": "head"},
                r"gives 'block/ffn_in' \(32 units\) the consumer 'head', whose "
                r"kernel has 16 input rows",
            ),
            (
                True,
                {"block/ffn_in": "block/norm"},
                r"the consumer 'block/norm' \(LayerNormalization\)",
            ),
            (
                False,
                {"block/act": "block/ffn_out"},
                r"must name the producer of 'block/act', a standalone rectifier",
            ),
            (
                False,
                {
                    "block/act": {
                        "producer": "block/ffn_in",
                        "norms": ["block/norm"],
                        "consumers": ["block/ffn_out"],
                    }
                },
                r"names the norm 'norm', not a BatchNormalization",
            ),
            (
                True,
                {"block/ffn_in": {"producer": "block/ffn_out", "consumers": "head"}},
                r"names a producer for 'block/ffn_in', whose own layer computes",
            ),
        ],
    )
    def test_bad_links_fail_at_plan_time(self, fused, links, match):
        model = _classifier(DenseBlock(fused=fused, name="block"))
        with pytest.raises(ValueError, match=r"`plan_recycling` argument `links`"):
            plan_recycling(model, links=links)
        with pytest.raises(ValueError, match=match):
            plan_recycling(model, links=links)

    def test_fit_fails_before_training(self):
        model = _classifier(DenseBlock(fused=True, name="block"))
        weights = [to_numpy(w) for w in model.weights]
        recycle = Recycle(probe=IDS, links={"block/ffn_in": "block/ffn_ou"})
        with pytest.raises(ValueError, match="`Recycle` argument `links` names"):
            model.fit(IDS, LABELS, epochs=1, verbose=0, callbacks=[recycle])
        for before, after in zip(weights, model.weights, strict=True):
            np.testing.assert_array_equal(before, to_numpy(after))
        assert recycle.links == {"block/ffn_in": "block/ffn_ou"}


def _vision_model(backbone):
    """`backbone` (a keras-hub functional backbone, its config its
    constructor's arguments) -> global pooling -> Dense(3)."""
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(pooled))


class TestKerasHubVisionBackbones:
    """keras-hub's vision backbones are functional models whose config holds
    their constructor's arguments: their graph is read from a plain
    functional model over their inputs and outputs."""

    @staticmethod
    def _vgg():
        keras.utils.set_random_seed(0)
        backbone = keras_hub.models.VGGBackbone(
            stackwise_num_repeats=[1, 1],
            stackwise_num_filters=[8, 16],
            image_shape=(32, 32, 3),
        )
        return _vision_model(backbone), backbone

    def test_recycling_in_a_vgg_backbone_keeps_predictions(self, rng):
        model, backbone = self._vgg()
        x = rng.uniform(size=(4, 32, 32, 3)).astype("float32")
        plans, reasons = plan_recycling(model)
        assert list(plans) == ["vgg_backbone/block1_conv1"]
        # The last block's units leave the backbone, which the plan does
        # not follow.
        assert "reaches the model output" in reasons["vgg_backbone/block2_conv1"]
        conv = backbone.get_layer("block1_conv1")
        kernel, bias = to_numpy(conv.kernel).copy(), to_numpy(conv.bias).copy()
        kernel[..., [0, 1]], bias[[0, 1]] = 0.0, -10.0
        conv.kernel.assign(kernel)
        conv.bias.assign(bias)
        before = to_numpy(model(x, training=False))
        assert recycle_units(plans["vgg_backbone/block1_conv1"], [0, 1]) == 2
        np.testing.assert_array_equal(to_numpy(model(x, training=False)), before)
        new_kernel = to_numpy(conv.kernel)
        assert np.all(new_kernel[..., [0, 1]] != 0.0)
        np.testing.assert_array_equal(new_kernel[..., 2:], kernel[..., 2:])
        np.testing.assert_array_equal(to_numpy(conv.bias)[[0, 1]], 0.0)
        consumer = to_numpy(backbone.get_layer("block2_conv1").kernel)
        np.testing.assert_array_equal(consumer[:, :, [0, 1], :], 0.0)

    def test_recommended_revives_the_planted_units(self, rng):
        model, backbone = self._vgg()
        conv = backbone.get_layer("block1_conv1")
        kernel, bias = to_numpy(conv.kernel).copy(), to_numpy(conv.bias).copy()
        kernel[..., :4], bias[:4] = 0.0, -10.0
        conv.kernel.assign(kernel)
        conv.bias.assign(bias)
        model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
        x = rng.uniform(size=(16, 32, 32, 3)).astype("float32")
        y = rng.integers(0, 3, 16)
        model, callbacks = recommended(model)
        with pytest.warns(UnreachableSitesWarning, match="block2_conv1"):
            history = model.fit(
                x, y, batch_size=8, epochs=2, verbose=0, callbacks=callbacks
            )
        assert history.history["dead_fraction/vgg_backbone/block1_conv1"][0] == 0.5
        assert history.history["recycled/vgg_backbone/block1_conv1"][0] >= 4.0
        assert history.history["dead_fraction/vgg_backbone/block1_conv1"][1] == 0.0

    def test_densenet_backbone_plans_what_it_can_map(self):
        keras.utils.set_random_seed(0)
        backbone = keras_hub.models.DenseNetBackbone(
            stackwise_num_repeats=[1, 1], image_shape=(32, 32, 3)
        )
        plans, reasons = plan_recycling(_vision_model(backbone))
        assert list(plans) == [
            "dense_net_backbone/stack1_block1_2_relu",
            "dense_net_backbone/stack2_block1_2_relu",
        ]
        assert len(reasons) == 5
        assert "Concatenate" in reasons["dense_net_backbone/transition1_relu"]

    def test_leakify_still_copies_the_backbone_by_its_arguments(self, rng):
        from keras_relu_kit import leakify
        from keras_relu_kit.diagnostics import find_rectifier_sites

        model, _ = self._vgg()
        x = rng.uniform(size=(2, 32, 32, 3)).astype("float32")
        # As before its graph was read: converted in place in a copy, with
        # the warning that a saved copy loads with ReLU.
        with pytest.warns(UnreachableSitesWarning, match="saved copy loads with"):
            leaky = leakify(model)
        np.testing.assert_array_equal(
            to_numpy(leaky(x, training=False)), to_numpy(model(x, training=False))
        )
        sites = find_rectifier_sites(leaky)
        assert len(sites) == 2
