"""`leakify` where no graph reaches: custom blocks, subclassed models and
keras-hub models, converted in place; and `AutoLeak` raising the slopes it
writes there.

Models are built from their constructors, tiny, with no download.
"""

import keras
import keras_hub
import numpy as np
import pytest
from _helpers import opt_inputs, tiny_opt, to_numpy

import keras_relu_kit
from keras_relu_kit import layers, leakify
from keras_relu_kit.callbacks import AutoLeak
from keras_relu_kit.diagnostics import find_rectifier_sites
from keras_relu_kit.errors import UnreachableSitesWarning

VOCAB, SEQ, HIDDEN, FFN = 20, 6, 16, 32
SITE = "enc/feedforward_intermediate_dense"


@pytest.fixture
def ids(rng):
    return rng.integers(0, VOCAB, size=(16, SEQ)).astype("int32")


def _encoder_classifier():
    ids = keras.Input((SEQ,), dtype="int32", name="ids")
    x = keras.layers.Embedding(VOCAB, HIDDEN, name="emb")(ids)
    x = keras_hub.layers.TransformerEncoder(FFN, num_heads=2, name="enc")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(ids, outputs)


def _ffn(model):
    return model.get_layer("enc")._feedforward_intermediate_dense


def _kill(dense, units):
    """Make `units` of a `Dense` dead: a bias far below any pre-activation."""
    bias = to_numpy(dense.bias).copy()
    bias[units] = -1e3
    dense.bias.assign(bias)


def _predict(model, x):
    return model.predict(x, verbose=0)


@keras.saving.register_keras_serializable(package="test")
class TransformerBlock(keras.layers.Layer):
    """keras.io's block: attention, then a Sequential FFN, ReLU written in."""

    def __init__(self, embed_dim, ff_dim, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim, self.ff_dim = embed_dim, ff_dim
        self.att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=embed_dim)
        self.ffn = keras.Sequential(
            [
                keras.layers.Dense(ff_dim, activation="relu"),
                keras.layers.Dense(embed_dim),
            ]
        )
        self.norm = keras.layers.LayerNormalization()

    def call(self, x):
        x = self.norm(x + self.att(x, x))
        return x + self.ffn(x)

    def get_config(self):
        config = super().get_config()
        config.update({"embed_dim": self.embed_dim, "ff_dim": self.ff_dim})
        return config


@keras.saving.register_keras_serializable(package="test")
class ReLUBlock(keras.layers.Layer):
    """A block with a standalone `ReLU` attribute between two `Dense`."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.up = keras.layers.Dense(units, name="up")
        self.act = keras.layers.ReLU(name="act")
        self.down = keras.layers.Dense(units, name="down")

    def call(self, x):
        return self.down(self.act(self.up(x)))

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


def _block_model(block):
    inputs = keras.Input((SEQ, HIDDEN))
    outputs = keras.layers.Dense(2, name="head")(block(inputs))
    return keras.Model(inputs, outputs)


class TestKerasHub:
    def test_encoder_classifier_copy_saves_and_loads(self, ids, tmp_path):
        model = _encoder_classifier()
        before = _predict(model, ids)
        leaky = leakify(model)
        np.testing.assert_array_equal(_predict(leaky, ids), before)
        activation = _ffn(leaky).activation
        assert type(activation) is layers.LeakyReLU
        # The block carries the same LeakyReLU, so its config does.
        assert leaky.get_layer("enc").activation is activation
        assert any(v is activation.alpha for v in leaky.variables)
        # The original is untouched.
        assert _ffn(model).activation is keras.activations.relu
        assert model.get_layer("enc").activation is keras.activations.relu
        np.testing.assert_array_equal(_predict(model, ids), before)

        activation.alpha.assign(0.2)
        expected = _predict(leaky, ids)
        assert not np.array_equal(expected, before)
        leaky.save(tmp_path / "m.keras")
        loaded = keras.saving.load_model(
            tmp_path / "m.keras", custom_objects=keras_relu_kit.custom_objects()
        )
        np.testing.assert_array_equal(_predict(loaded, ids), expected)
        reloaded = _ffn(loaded).activation
        assert type(reloaded) is layers.LeakyReLU
        assert to_numpy(reloaded.alpha) == to_numpy(activation.alpha)

    def test_opt_backbone_in_place(self, rng):
        backbone = tiny_opt(2, HIDDEN, FFN)
        data = opt_inputs(rng, 4)
        before = _predict(backbone, data)
        # OPT writes `activation="relu"` in its constructor, not its config.
        with pytest.warns(UnreachableSitesWarning, match="saved copy loads with"):
            same = leakify(backbone, in_place=True)
        assert same is backbone
        np.testing.assert_array_equal(_predict(backbone, data), before)
        sites = find_rectifier_sites(backbone)
        assert [s.name for s in sites] == [
            f"transformer_layer_{i}/feedforward_intermediate_dense" for i in (0, 1)
        ]
        for site in sites:
            assert type(site.layer.activation) is layers.LeakyReLU
            assert site.slope_layer is site.layer.activation

    def test_opt_backbone_copy(self, rng):
        backbone = tiny_opt(1, HIDDEN, FFN)
        data = opt_inputs(rng, 4)
        with pytest.warns(UnreachableSitesWarning, match="saved copy loads with"):
            leaky = leakify(backbone)
        assert type(leaky) is keras_hub.models.OPTBackbone and leaky is not backbone
        np.testing.assert_array_equal(_predict(leaky, data), _predict(backbone, data))
        (site,) = find_rectifier_sites(leaky)
        assert type(site.layer.activation) is layers.LeakyReLU
        assert find_rectifier_sites(backbone)[0].layer.activation.__name__ == "relu"


class TestCustomBlocks:
    @pytest.mark.parametrize("in_place", [False, True])
    def test_sequential_ffn(self, rng, in_place):
        model = _block_model(TransformerBlock(HIDDEN, FFN, name="block"))
        x = rng.normal(size=(8, SEQ, HIDDEN)).astype("float32")
        before = _predict(model, x)
        (site,) = find_rectifier_sites(model)
        # The block's constructor writes ReLU in: a saved copy loses it.
        with pytest.warns(UnreachableSitesWarning, match="saved copy loads with"):
            leaky = leakify(model, in_place=in_place)
        assert (leaky is model) == in_place
        np.testing.assert_array_equal(_predict(leaky, x), before)
        # The copy's block makes its own sublayers, named anew.
        (new_site,) = find_rectifier_sites(leaky)
        assert new_site.name.startswith("block/sequential")
        assert type(new_site.layer.activation) is layers.LeakyReLU
        if not in_place:
            assert site.layer.activation is keras.activations.relu

    @pytest.mark.parametrize("in_place", [False, True])
    def test_relu_attribute(self, rng, in_place):
        model = _block_model(ReLUBlock(FFN, name="block"))
        x = rng.normal(size=(8, SEQ, HIDDEN)).astype("float32")
        before = _predict(model, x)
        block = model.get_layer("block")
        old = block.act
        with pytest.warns(UnreachableSitesWarning, match=r"\['block/act'\]"):
            leaky = leakify(model, in_place=in_place)
        new_block = leaky.get_layer("block")
        assert type(new_block.act) is layers.LeakyReLU
        assert (new_block is block) == in_place
        assert (block.act is old) != in_place
        assert [s.name for s in find_rectifier_sites(leaky)] == ["block/act"]
        assert any(v is new_block.act.alpha for v in leaky.variables)
        np.testing.assert_array_equal(_predict(leaky, x), before)
        new_block.act.alpha.assign(0.5)
        assert not np.array_equal(_predict(leaky, x), before)

    def test_in_place_on_a_compiled_model_retraces(self, rng):
        model = _block_model(ReLUBlock(FFN, name="block"))
        model.compile("sgd", "mse")
        x = rng.normal(size=(8, SEQ, HIDDEN)).astype("float32")
        before = _predict(model, x)
        with pytest.warns(UnreachableSitesWarning):
            leakify(model, alpha=0.5, in_place=True)
        assert not np.array_equal(_predict(model, x), before)
        # What the model computes, not what was traced before.
        np.testing.assert_allclose(
            _predict(model, x), to_numpy(model(x)), rtol=1e-5, atol=1e-6
        )


class TestInPlaceGraph:
    def test_converts_fused_sites_and_names_graph_layers(self, rng):
        inputs = keras.Input((6,))
        x = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
        outputs = keras.layers.ReLU(name="act")(keras.layers.Dense(4)(x))
        model = keras.Model(inputs, outputs)
        x = rng.normal(size=(8, 6)).astype("float32")
        before = _predict(model, x)
        with pytest.warns(UnreachableSitesWarning, match=r"\['act'\] unchanged"):
            assert leakify(model, in_place=True) is model
        assert type(model.get_layer("hidden").activation) is layers.LeakyReLU
        assert type(model.get_layer("act")) is keras.layers.ReLU
        np.testing.assert_array_equal(_predict(model, x), before)


class Net(keras.Model):
    """A subclassed model whose config cannot rebuild it."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(FFN, activation="relu")
        self.act = keras.layers.ReLU()
        self.out = keras.layers.Dense(2)

    def call(self, x):
        return self.out(self.act(self.hidden(x)))


class TestSubclassed:
    @pytest.mark.parametrize("in_place", ["yes", 1, None])
    def test_in_place_must_be_a_bool(self, in_place):
        net = Net()
        with pytest.raises(ValueError, match=r"`leakify` argument `in_place` must"):
            leakify(net, in_place=in_place)
        assert net.hidden.activation.__name__ == "relu"

    def test_cannot_be_copied_names_in_place(self, rng):
        net = Net()
        x = rng.normal(size=(8, 6)).astype("float32")
        before = to_numpy(net(x))
        with pytest.raises(TypeError, match=r"in_place=True"):
            leakify(net)
        # So, in place: the fused site and the ReLU attribute.
        with pytest.warns(UnreachableSitesWarning, match="saved copy loads with"):
            assert leakify(net, in_place=True) is net
        assert type(net.hidden.activation) is layers.LeakyReLU
        assert type(net.act) is layers.LeakyReLU
        np.testing.assert_array_equal(to_numpy(net(x)), before)
        assert len(net.non_trainable_variables) == 2


def _dying_encoder():
    """The encoder classifier with half its FFN units dead, leakified."""
    keras.utils.set_random_seed(0)
    model = _encoder_classifier()
    _kill(_ffn(model), np.arange(0, FFN, 2))
    leaky = leakify(model)
    leaky.compile("adam", "sparse_categorical_crossentropy")
    return leaky


class TestAutoLeak:
    def test_raises_the_slopes_leakify_wrote_in_a_block(self, ids, rng):
        model = _dying_encoder()
        alpha = _ffn(model).activation.alpha
        assert to_numpy(alpha) == 0.0
        auto = AutoLeak(threshold=0.25, start=0.05)
        history = model.fit(
            ids,
            rng.integers(0, 2, size=len(ids)),
            epochs=2,
            batch_size=8,
            verbose=0,
            callbacks=[auto],
        )
        assert auto.layers_managed == [SITE]
        assert to_numpy(alpha) == pytest.approx(0.1)
        assert history.history[f"alpha/{SITE}"] == pytest.approx([0.05, 0.1])
        assert [c["layer"] for c in auto.changes] == [SITE, SITE]

    def test_manages_a_dense_with_a_kit_activation(self):
        model = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(4, activation=layers.LeakyReLU(0.0), name="hidden"),
                keras.layers.Dense(1),
            ]
        )
        dense = model.get_layer("hidden")
        dense.kernel.assign(np.zeros((2, 4)))
        dense.bias.assign([1.0, 1.0, -5.0, -5.0])
        model.compile("sgd", "mse")
        auto = AutoLeak(threshold=0.25, start=0.05)
        history = model.fit(
            np.ones((8, 2)), np.zeros((8, 1)), epochs=1, verbose=0, callbacks=[auto]
        )
        assert to_numpy(dense.activation.alpha) == pytest.approx(0.05)
        assert history.history["alpha/hidden"] == pytest.approx([0.05])
