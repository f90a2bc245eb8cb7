"""Transformers and custom blocks: the monitor reads the rectifier's own units.

keras-hub's `TransformerEncoder`/`TransformerDecoder` keep `activation` as
an attribute but apply it in their feed-forward `Dense`: that `Dense`'s
output is the site, not the block's output (the residual stream). Models
are built from their constructors, tiny, with no download.
"""

import keras
import keras_hub
import numpy as np
import pytest
from _helpers import opt_inputs, tiny_opt, to_numpy

from keras_relu_kit.callbacks import DeadReLUMonitor
from keras_relu_kit.diagnostics import find_rectifier_sites, measure
from keras_relu_kit.errors import UnreachableSitesWarning

VOCAB, SEQ, HIDDEN, FFN = 20, 6, 16, 32
FFN_DENSE = "feedforward_intermediate_dense"
SITE = f"enc/{FFN_DENSE}"


def _encoder_classifier(jit_compile=False):
    ids = keras.Input((SEQ,), dtype="int32", name="ids")
    x = keras.layers.Embedding(VOCAB, HIDDEN, name="emb")(ids)
    x = keras_hub.layers.TransformerEncoder(FFN, num_heads=2, name="enc")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(x)
    model = keras.Model(ids, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=jit_compile)
    return model


def _kill(dense, units):
    """Make `units` of a `Dense` dead: a bias far below any pre-activation."""
    bias = to_numpy(dense.bias).copy()
    bias[units] = -1e3
    dense.bias.assign(bias)


def _ffn_reference(model, ids):
    """The encoder's feed-forward ReLU outputs, recomputed in NumPy from the
    input of its intermediate `Dense` (post-norm block, no mask)."""
    enc = model.get_layer("enc")
    x = model.get_layer("emb")(ids)
    h = enc._self_attention_layer(query=x, value=x)
    h = to_numpy(enc._self_attention_layer_norm(x + h))
    dense = enc._feedforward_intermediate_dense
    pre = h @ to_numpy(dense.kernel) + to_numpy(dense.bias)
    return np.maximum(pre, 0.0).reshape(-1, FFN)


@pytest.fixture
def ids(rng):
    return rng.integers(0, VOCAB, size=(24, SEQ)).astype("int32")


def _jit_options():
    # torch's `jit_compile=True` is torch.compile: covered elsewhere.
    return [False] if keras.backend.backend() == "torch" else [False, True]


class TestEncoder:
    def test_the_site_is_the_feed_forward_dense(self):
        model = _encoder_classifier()
        sites = find_rectifier_sites(model)
        assert [(s.name, s.kind) for s in sites] == [(SITE, "fused_activation")]
        enc = model.get_layer("enc")
        assert sites[0].layer is enc._feedforward_intermediate_dense

    @pytest.mark.parametrize("jit_compile", _jit_options())
    @pytest.mark.parametrize("mode", ["training", "inference"])
    def test_dead_units_match_numpy(self, ids, jit_compile, mode):
        model = _encoder_classifier(jit_compile)
        dense = model.get_layer("enc")._feedforward_intermediate_dense
        _kill(dense, np.arange(0, FFN, 2))
        report = measure(model, ids, mode=mode)
        site = report.sites[SITE]
        expected = _ffn_reference(model, ids).max(axis=0) <= 0.0
        # The feed-forward units, not the 16 of the residual stream.
        assert site.units == FFN
        np.testing.assert_array_equal(site.dead_mask, expected)
        assert site.dead == int(expected.sum()) >= FFN // 2

    def test_monitor_logs_the_site_in_fit(self, ids, rng):
        model = _encoder_classifier()
        _kill(model.get_layer("enc")._feedforward_intermediate_dense, [1, 5, 7])
        y = rng.integers(0, 2, size=len(ids))
        history = model.fit(
            ids,
            y,
            epochs=2,
            batch_size=8,
            verbose=0,
            callbacks=[DeadReLUMonitor(probe=ids)],
        )
        logged = history.history[f"dead_fraction/{SITE}"]
        assert len(logged) == 2
        now = _ffn_reference(model, ids).max(axis=0) <= 0.0
        assert logged[-1] == pytest.approx(now.mean())
        assert logged[-1] >= 3 / FFN


class TestDecoderModels:
    def test_decoder_block(self, ids):
        inputs = keras.Input((SEQ,), dtype="int32")
        x = keras.layers.Embedding(VOCAB, HIDDEN)(inputs)
        x = keras_hub.layers.TransformerDecoder(FFN, num_heads=2, name="dec")(x)
        model = keras.Model(inputs, x)
        sites = find_rectifier_sites(model)
        assert [s.name for s in sites] == [f"dec/{FFN_DENSE}"]
        _kill(sites[0].layer, np.arange(FFN // 2))
        site = measure(model, ids).sites[f"dec/{FFN_DENSE}"]
        assert site.units == FFN
        assert site.dead_mask[: FFN // 2].all()

    def test_opt_backbone_reads_its_killed_units(self, rng):
        backbone = tiny_opt(2, HIDDEN, FFN)
        sites = find_rectifier_sites(backbone)
        names = [f"transformer_layer_{i}/{FFN_DENSE}" for i in (0, 1)]
        assert [s.name for s in sites] == names
        killed = np.arange(0, FFN, 2)
        _kill(sites[0].layer, killed)
        data = opt_inputs(rng, 16)
        report = measure(backbone, data)
        first = report.sites[names[0]]
        assert first.units == FFN
        assert first.dead_mask[killed].all()
        assert first.dead_fraction >= 0.5
        assert report.sites[names[1]].units == FFN


class FeedForwardBlock(keras.layers.Layer):
    """A keras.io-style block: attention, then a nested Sequential FFN."""

    def __init__(self, dim, ff_dim, **kwargs):
        super().__init__(**kwargs)
        self.att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=dim)
        self.ffn = keras.Sequential(
            [keras.layers.Dense(ff_dim, activation="relu"), keras.layers.Dense(dim)],
            name="ffn",
        )
        self.norm = keras.layers.LayerNormalization()

    def call(self, x):
        x = self.norm(x + self.att(x, x))
        return x + self.ffn(x)


class InlineBlock(keras.layers.Layer):
    """Applies its rectifier in its own `call`: no sublayer to read."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get("relu")
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))

    def call(self, x):
        return self.activation(keras.ops.matmul(x, self.kernel))


class TestCustomBlocks:
    def test_nested_sequential_ffn_is_measured(self, ids):
        inputs = keras.Input((SEQ,), dtype="int32")
        x = keras.layers.Embedding(VOCAB, HIDDEN)(inputs)
        x = FeedForwardBlock(HIDDEN, FFN, name="block")(x)
        model = keras.Model(inputs, x)
        sites = find_rectifier_sites(model)
        assert len(sites) == 1 and sites[0].name.startswith("block/ffn/")
        _kill(sites[0].layer, np.arange(FFN // 4))
        site = measure(model, ids).sites[sites[0].name]
        assert site.units == FFN
        assert site.dead_mask[: FFN // 4].all()

    def test_inline_rectifier_is_named(self, rng):
        inputs = keras.Input((4,))
        x = InlineBlock(3, name="inline")(inputs)
        outputs = keras.layers.Dense(2, activation="relu", name="after")(x)
        model = keras.Model(inputs, outputs)
        assert [s.name for s in find_rectifier_sites(model)] == ["after"]
        with pytest.warns(UnreachableSitesWarning, match=r"\['inline'\]"):
            report = measure(model, rng.normal(size=(8, 4)))
        assert list(report.sites) == ["after"]
