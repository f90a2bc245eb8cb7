"""Export of every kit layer: ONNX (TensorFlow, torch) and LiteRT (TensorFlow).

Each test builds `Dense -> kit layer`, changes the layer's live `alpha`
after the model has run, exports it with `model.export`, runs the artifact
(onnxruntime, LiteRT's interpreter) and checks that its predictions equal
Keras' within 1e-6 and that the layer became the converter's native op,
counted in the exported graph. The exporters are in the extras that
`make test` installs (`export-tensorflow`, `export-torch`).

Keras exports ONNX from JAX through jax2onnx, which is not tested here.
"""

import collections

import keras
import numpy as np
import pytest
from _helpers import elu_reference, leaky_relu_reference

from keras_relu_kit import layers

BACKEND = keras.backend.backend()
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

pytestmark = pytest.mark.skipif(
    BACKEND == "jax", reason="ONNX and LiteRT export are tested on TF and torch"
)


# name -> (factory, live alpha assigned after the first predict or None,
#          NumPy reference of the live function, Keras' own layer or None).
CASES = {
    "leaky_relu": (
        lambda: layers.LeakyReLU(0.01),
        0.2,
        lambda x: leaky_relu_reference(x, 0.2),
        lambda: keras.layers.LeakyReLU(negative_slope=0.2),
    ),
    "relu": (
        lambda: layers.LeakyReLU(0.3),
        0.0,
        lambda x: np.maximum(x, 0),
        keras.layers.ReLU,
    ),
    "steep_leaky_relu": (
        lambda: layers.LeakyReLU(0.3),
        2.0,
        lambda x: leaky_relu_reference(x, 2.0),
        lambda: keras.layers.LeakyReLU(negative_slope=2.0),
    ),
    "prelu": (
        lambda: layers.PReLU(alpha_initializer=0.25),
        None,
        lambda x: leaky_relu_reference(x, 0.25),
        lambda: keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25)),
    ),
    "prelu_shared": (
        lambda: layers.PReLU(alpha_initializer=0.25, mode="shared"),
        None,
        lambda x: leaky_relu_reference(x, 0.25),
        None,
    ),
    "elu": (
        lambda: layers.ELU(0.5),
        1.0,
        lambda x: elu_reference(x, 1.0),
        lambda: keras.layers.ELU(alpha=1.0),
    ),
    "elu_alpha": (
        lambda: layers.ELU(1.0),
        0.7,
        lambda x: elu_reference(x, 0.7),
        lambda: keras.layers.ELU(alpha=0.7),
    ),
    "selu": (
        layers.SELU,
        None,
        lambda x: SELU_SCALE * elu_reference(x, SELU_ALPHA),
        lambda: keras.layers.Activation("selu"),
    ),
    "pelu": (
        lambda: layers.PELU(alpha_initializer=1.5, beta_initializer=0.5),
        None,
        lambda x: np.where(x >= 0, 3.0 * x, 1.5 * np.expm1(np.minimum(x, 0) / 0.5)),
        None,
    ),
    "rrelu": (
        layers.RReLU,
        None,
        lambda x: leaky_relu_reference(x, (1 / 8 + 1 / 3) / 2),
        None,
    ),
}

# The layer's ops in the exported graph (the Dense is MatMul, or
# FULLY_CONNECTED), counted exactly. A case missing from a table is
# exported as a chain of elementwise ops, checked for its values only;
# benchmarks/README.md says why.
ONNX_TENSORFLOW = {
    "leaky_relu": {"LeakyRelu": 1},
    "relu": {"LeakyRelu": 1},
    "elu": {"Elu": 1},
    "selu": {"Selu": 1},
    "pelu": {"Elu": 1, "Mul": 2},
    "rrelu": {"LeakyRelu": 1},
}
ONNX_TORCH = {
    "leaky_relu": {"LeakyRelu": 1},
    "relu": {"LeakyRelu": 1},
    "steep_leaky_relu": {"LeakyRelu": 1},
    "prelu": {"PRelu": 1},
    "prelu_shared": {"PRelu": 1},
    "elu": {"Elu": 1},
    "elu_alpha": {"Elu": 1},
    "selu": {"Selu": 1},
    "pelu": {"Div": 1, "Elu": 1, "Mul": 1},
    "rrelu": {"LeakyRelu": 1},
}
ONNX_TORCH_DYNAMO = {
    "leaky_relu": {"PRelu": 1},
    "relu": {"PRelu": 1},
    "steep_leaky_relu": {"PRelu": 1},
    "prelu": {"PRelu": 1},
    "prelu_shared": {"PRelu": 1},
    "selu": {"Selu": 1},
    "pelu": {"Div": 1, "Elu": 1, "Mul": 1},
    "rrelu": {"LeakyRelu": 1},
}
LITERT = {
    "leaky_relu": {"LEAKY_RELU": 1},
    "relu": {"LEAKY_RELU": 1},
    "prelu": {"PRELU": 1},
    "prelu_shared": {"PRELU": 1},
    "elu": {"ELU": 1},
    "pelu": {"ELU": 1, "MUL": 1},
    "rrelu": {"LEAKY_RELU": 1},
}
# Ops of the Dense, and bookkeeping the exporters add (torch casts the
# input and output to float32).
NOT_THE_LAYER = {"MatMul", "Gemm", "Add", "FULLY_CONNECTED", "Cast", "Identity"}
# The native op's `alpha` attribute, where it has one: the live value.
LIVE_ATTRIBUTE = {"leaky_relu": 0.2, "relu": 0.0, "rrelu": (1 / 8 + 1 / 3) / 2}


def _inputs():
    rng = np.random.default_rng(0)
    return rng.uniform(-3.0, 3.0, size=(16, 8)).astype("float32")


def _model(name):
    factory, live, _, _ = CASES[name]
    keras.utils.set_random_seed(0)
    layer = factory()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8), layer])
    x = _inputs()
    model.predict(x, verbose=0)
    if live is not None:
        layer.alpha.assign(live)
    return model, x


def _check_predictions(name, model, x, exported):
    _, _, reference, keras_layer = CASES[name]
    expected = model.predict(x, verbose=0)
    hidden = keras.ops.convert_to_numpy(model.layers[0](x))
    np.testing.assert_allclose(expected, reference(hidden), rtol=1e-6, atol=1e-6)
    if keras_layer is not None:
        builtin = keras.ops.convert_to_numpy(keras_layer()(hidden))
        np.testing.assert_allclose(expected, builtin, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(exported, expected, rtol=1e-6, atol=1e-6)


def _layer_ops(op_types):
    counts = collections.Counter(op_types)
    return {op: n for op, n in counts.items() if op not in NOT_THE_LAYER}


def _export_onnx(name, tmp_path, **kwargs):
    """Exports case `name`, checks its predictions; returns its nodes."""
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    model, x = _model(name)
    path = str(tmp_path / "model.onnx")
    model.export(path, format="onnx", verbose=False, **kwargs)

    session = onnxruntime.InferenceSession(path)
    (exported,) = session.run(None, {session.get_inputs()[0].name: x})
    _check_predictions(name, model, x, exported)
    return onnx.load(path).graph.node


class TestONNX:
    @pytest.mark.parametrize("name", sorted(CASES))
    def test_export_runs_and_lowers_to_native_ops(self, name, tmp_path):
        # A `None` batch size: torch exports with its TorchScript tracer.
        nodes = _export_onnx(name, tmp_path)
        table = ONNX_TORCH if BACKEND == "torch" else ONNX_TENSORFLOW
        ops = _layer_ops(node.op_type for node in nodes)
        if name in table:
            assert ops == table[name]
        assert "Expm1" not in ops
        if name in LIVE_ATTRIBUTE:
            (native,) = [n for n in nodes if n.op_type == "LeakyRelu"]
            (alpha,) = [a.f for a in native.attribute if a.name == "alpha"]
            np.testing.assert_allclose(alpha, LIVE_ATTRIBUTE[name], rtol=1e-7)

    @pytest.mark.torch_only
    @pytest.mark.parametrize("name", sorted(CASES))
    def test_torch_export_with_static_shapes(self, name, tmp_path):
        # Static shapes: Keras uses torch's dynamo exporter (torch.export),
        # whose fake tensors have no value to read: LeakyReLU becomes a
        # PRelu whose slope is the live alpha, ELU a chain around Elu.
        spec = keras.InputSpec(shape=(16, 8), dtype="float32")
        nodes = _export_onnx(name, tmp_path, input_signature=[spec])
        ops = _layer_ops(node.op_type for node in nodes)
        if name in ONNX_TORCH_DYNAMO:
            assert ops == ONNX_TORCH_DYNAMO[name]
        assert "Elu" in ops or not name.startswith("elu")


@pytest.mark.tensorflow_only
class TestLiteRT:
    @pytest.mark.parametrize("name", sorted(CASES))
    def test_export_runs_and_lowers_to_native_ops(self, name, tmp_path):
        litert = pytest.importorskip("ai_edge_litert.interpreter")
        model, x = _model(name)
        path = str(tmp_path / "model.tflite")
        model.export(path, format="litert", verbose=False)

        # Without the default XNNPACK delegate, which would replace the
        # graph's ops by one DELEGATE node.
        interpreter = litert.Interpreter(
            model_path=path,
            experimental_op_resolver_type=(
                litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            ),
        )
        (given,) = interpreter.get_input_details()
        interpreter.resize_tensor_input(given["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(given["index"], x)
        interpreter.invoke()
        (output,) = interpreter.get_output_details()
        exported = interpreter.get_tensor(output["index"])
        _check_predictions(name, model, x, exported)

        ops = _layer_ops(op["op_name"] for op in interpreter._get_ops_details())
        if name in LITERT:
            assert ops == LITERT[name]


@pytest.mark.tensorflow_only
def test_inference_form_follows_alpha_on_both_sides_of_one():
    """The form exporters match (`max`, `min` above 1) reads the live alpha."""
    model, x = _model("leaky_relu")
    layer = model.layers[-1]
    hidden = keras.ops.convert_to_numpy(model.layers[0](x))
    for value in [1.5, 0.0, 1.0]:
        layer.alpha.assign(value)
        np.testing.assert_allclose(
            model.predict(x, verbose=0), leaky_relu_reference(hidden, value), rtol=1e-6
        )
