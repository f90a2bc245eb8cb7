"""`relu-kit inspect` and the command line's help and errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_relu_kit import layers
from keras_relu_kit.cli import main

DEAD = -10.0
ALIVE = 1.0


def _plant(layer, dead, rng):
    """Kernel 0 and bias -10 on `dead` units; bias +1 and a small kernel
    elsewhere, so every other unit is positive on inputs in [0, 1]."""
    kernel = np.abs(rng.normal(scale=0.1, size=layer.kernel.shape))
    bias = np.full(layer.bias.shape, ALIVE)
    kernel[..., dead] = 0.0
    bias[dead] = DEAD
    layer.kernel.assign(kernel.astype("float32"))
    layer.bias.assign(bias.astype("float32"))


def keras_only_model(rng):
    """Keras layers only: 'hidden' (units 1, 4 dead) and 'act' (unit 0)."""
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(6, activation="relu", name="hidden"),
            keras.layers.Dense(5, name="linear"),
            keras.layers.ReLU(name="act"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ],
        name="planted",
    )
    _plant(model.get_layer("hidden"), [1, 4], rng)
    _plant(model.get_layer("linear"), [0], rng)
    return model


def kit_model(rng):
    """Kit layers: 'leaky' (units 2, 3, 5 dead) and 'prelu' (none)."""
    inputs = keras.Input((8,))
    x = keras.layers.Dense(6, name="dense_a")(inputs)
    x = layers.LeakyReLU(alpha=0.1, name="leaky")(x)
    x = keras.layers.Dense(4, name="dense_b")(x)
    x = layers.PReLU(name="prelu")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs, name="kit_planted")
    _plant(model.get_layer("dense_a"), [2, 3, 5], rng)
    _plant(model.get_layer("dense_b"), [], rng)
    return model


# Per site: units, dead units, and how the text report lists them.
EXPECTED = {
    "keras": {"hidden": (6, [1, 4], "1, 4"), "act": (5, [0], "0")},
    "kit": {"leaky": (6, [2, 3, 5], "2-3, 5"), "prelu": (4, [], "-")},
}


@pytest.fixture(params=["keras", "kit"])
def saved(request, tmp_path, rng):
    """`(kind, model path, data path)` of a saved planted model."""
    model = {"keras": keras_only_model, "kit": kit_model}[request.param](rng)
    path = tmp_path / f"{request.param}.keras"
    model.save(path)
    data = tmp_path / "x.npy"
    np.save(data, rng.uniform(size=(40, 8)).astype("float32"))
    return request.param, path, data


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class TestInspect:
    def test_text_reports_exactly_the_planted_units(self, saved, capsys):
        kind, model, data = saved
        code, out, err = run(capsys, "inspect", model, "--data", data)
        assert code == 0 and err == ""
        lines = out.splitlines()
        assert lines[0].endswith(f"({model}) on 40 examples from {data}")
        rows = {line.split()[0]: line.split() for line in lines[2:-1]}
        for name, (units, dead, listed) in EXPECTED[kind].items():
            row = rows[name]
            assert int(row[2]) == units and int(row[3]) == len(dead)
            assert float(row[4]) == pytest.approx(100 * len(dead) / units, abs=0.05)
            assert " ".join(row[5:]) == listed
        total_units = sum(u for u, _, _ in EXPECTED[kind].values())
        total_dead = sum(len(d) for _, d, _ in EXPECTED[kind].values())
        assert lines[-1] == (
            f"Total: {total_dead} of {total_units} units dead "
            f"({100 * total_dead / total_units:.1f}%) in 2 rectifier sites."
        )

    def test_json_reports_exactly_the_planted_units(self, saved, capsys):
        kind, model, data = saved
        code, out, _ = run(capsys, "inspect", model, "--data", data, "--json")
        assert code == 0
        report = json.loads(out)
        sites = {s["name"]: s for s in report["sites"]}
        assert list(sites) == list(EXPECTED[kind])
        for name, (units, dead, _) in EXPECTED[kind].items():
            assert sites[name]["units"] == units
            assert sites[name]["dead_units"] == dead
            assert sites[name]["dead"] == len(dead)
            assert sites[name]["dead_fraction"] == pytest.approx(len(dead) / units)
        assert report["examples"] == 40
        assert report["dead"] == sum(len(d) for _, d, _ in EXPECTED[kind].values())
        assert report["model"] == str(model) and report["data"] == str(data)

    def test_json_names_every_site_and_its_layer(self, saved, capsys):
        kind, model, data = saved
        code, out, _ = run(capsys, "inspect", model, "--data", data, "--json")
        assert code == 0
        report = json.loads(out)
        expected = {
            "keras": [
                ("hidden", "hidden", "Dense", "fused_activation"),
                ("act", "act", "ReLU", "activation_layer"),
            ],
            "kit": [
                ("leaky", "leaky", "LeakyReLU", "kit_layer"),
                ("prelu", "prelu", "PReLU", "kit_layer"),
            ],
        }[kind]
        assert [
            (s["name"], s["layer"], s["class"], s["kind"]) for s in report["sites"]
        ] == expected
        assert [s["nonfinite"] for s in report["sites"]] == [0, 0]
        assert report["nonfinite"] == 0
        assert report["model_name"] == {"keras": "planted", "kit": "kit_planted"}[kind]
        assert report["units"] == (11 if kind == "keras" else 10)
        assert report["dead_fraction"] == pytest.approx(
            report["dead"] / report["units"]
        )

    def test_nonfinite_values_are_shown(self, tmp_path, capsys):
        dense = keras.layers.Dense(3, activation="relu", name="hidden")
        model = keras.Sequential([keras.Input((1,)), dense], name="overflow")
        dense.kernel.assign(np.array([[1e30, 0.0, 1e30]], "float32"))
        dense.bias.assign(np.array([0.0, DEAD, 0.0], "float32"))
        model.save(tmp_path / "m.keras")
        # 1e10 * 1e30 overflows float32: inf in units 0 and 2 of one example.
        np.save(tmp_path / "x.npy", np.array([[1.0], [1e10], [2.0]], "float32"))
        argv = ["inspect", tmp_path / "m.keras", "--data", tmp_path / "x.npy"]
        code, out, _ = run(capsys, *argv, "--json")
        assert code == 0
        report = json.loads(out)
        assert report["nonfinite"] == 2
        assert report["sites"][0]["nonfinite"] == 2
        assert report["sites"][0]["dead_units"] == [1]
        code, out, _ = run(capsys, *argv)
        assert code == 0
        assert out.splitlines()[1:] == [
            "  site    layer  units  dead  dead %  NaN/inf  dead units",
            "  hidden  Dense      3     1    33.3        2  1",
            "Total: 1 of 3 units dead (33.3%) in 1 rectifier site.",
            "Warning: 2 NaN/inf activation values; they never count as alive.",
        ]

    @pytest.mark.parametrize(
        "kind, extra",
        [
            ("npz_single", []),
            ("npz_key", ["--key", "x"]),
            ("csv_header", []),
            ("csv_plain", []),
        ],
    )
    def test_data_formats(self, kind, extra, tmp_path, rng, capsys):
        model = keras_only_model(rng)
        path = tmp_path / "m.keras"
        model.save(path)
        x = rng.uniform(size=(25, 8)).astype("float32")
        if kind == "npz_single":
            data = tmp_path / "x.npz"
            np.savez(data, inputs=x)
        elif kind == "npz_key":
            data = tmp_path / "xy.npz"
            np.savez(data, x=x, y=np.zeros(25))
        else:
            data = tmp_path / "x.csv"
            header = ",".join(f"f{i}" for i in range(8)) if kind == "csv_header" else ""
            np.savetxt(data, x, delimiter=",", header=header, comments="")
        code, out, _ = run(capsys, "inspect", path, "--data", data, "--json", *extra)
        assert code == 0
        report = json.loads(out)
        assert report["examples"] == 25
        assert [s["dead_units"] for s in report["sites"]] == [[1, 4], [0]]

    def test_csv_rows_are_reshaped_for_an_image_model(self, tmp_path, rng, capsys):
        conv = keras.layers.Conv2D(3, 1, activation="relu", name="conv")
        model = keras.Sequential([keras.Input((4, 4, 1)), conv])
        conv.kernel.assign(np.array([1.0, 0.0, 1.0]).reshape(1, 1, 1, 3))
        conv.bias.assign(np.array([0.5, DEAD, 0.5]))
        model.save(tmp_path / "conv.keras")
        data = tmp_path / "images.csv"
        np.savetxt(data, rng.uniform(size=(6, 16)), delimiter=",")
        code, out, _ = run(
            capsys, "inspect", tmp_path / "conv.keras", "--data", data, "--json"
        )
        assert code == 0
        assert json.loads(out)["sites"][0]["dead_units"] == [1]

    def test_probe_takes_a_sample(self, saved, capsys):
        _, model, data = saved
        code, out, _ = run(
            capsys, "inspect", model, "--data", data, "--probe", "7", "--json"
        )
        assert code == 0 and json.loads(out)["examples"] == 7

    def test_model_without_rectifiers(self, tmp_path, rng, capsys):
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
        model.save(tmp_path / "linear.keras")
        np.save(tmp_path / "x.npy", rng.uniform(size=(4, 8)))
        code, out, _ = run(
            capsys, "inspect", tmp_path / "linear.keras", "--data", tmp_path / "x.npy"
        )
        assert code == 0
        assert out.splitlines()[-1].startswith("No rectifier sites")


class TestBadInput:
    @pytest.fixture
    def files(self, tmp_path, rng):
        model = keras_only_model(rng)
        model.save(tmp_path / "m.keras")
        np.save(tmp_path / "x.npy", rng.uniform(size=(10, 8)).astype("float32"))
        np.save(tmp_path / "wrong.npy", np.zeros((10, 3), "float32"))
        np.savez(tmp_path / "xy.npz", x=np.zeros((10, 8)), y=np.zeros(10))
        (tmp_path / "text.keras").write_text("not a model")
        (tmp_path / "words.csv").write_text("a,b\nc,d\n")
        (tmp_path / "x.txt").write_text("1,2")
        (tmp_path / "folder.keras").mkdir()
        return tmp_path

    @pytest.mark.parametrize(
        "model, data, extra, message",
        [
            ("gone.keras", "x.npy", [], "model file '{d}/gone.keras' does not exist"),
            (
                "folder.keras",
                "x.npy",
                [],
                "model file '{d}/folder.keras' is a directory, not a file",
            ),
            (
                "text.keras",
                "x.npy",
                [],
                "model file '{d}/text.keras' is not a Keras model that can be loaded: ",
            ),
            ("m.keras", "gone.npy", [], "data file '{d}/gone.npy' does not exist"),
            (
                "m.keras",
                "wrong.npy",
                [],
                "data in '{d}/wrong.npy' has shape (10, 3), but model 'planted' "
                "expects inputs of shape (None, 8)",
            ),
            (
                "m.keras",
                "xy.npz",
                ["--key", "z"],
                "data file '{d}/xy.npz' has no array 'z'; it holds: x, y",
            ),
            (
                "m.keras",
                "xy.npz",
                [],
                "data file '{d}/xy.npz' holds 2 arrays (x, y); choose one with --key",
            ),
            (
                "m.keras",
                "x.npy",
                ["--key", "x"],
                "--key selects an array in a .npz file; data file '{d}/x.npy' is "
                "a .npy file",
            ),
            (
                "m.keras",
                "words.csv",
                [],
                "data file '{d}/words.csv' is not a CSV of numbers",
            ),
            (
                "m.keras",
                "x.txt",
                [],
                "data file '{d}/x.txt' must end in .npy, .npz or .csv "
                "(received '.txt')",
            ),
        ],
    )
    def test_one_line_and_exit_2(self, files, model, data, extra, message, capsys):
        code, out, err = run(
            capsys, "inspect", files / model, "--data", files / data, *extra
        )
        assert code == 2
        assert out == ""
        assert err.count("\n") == 1
        assert err.startswith("relu-kit: error: " + message.format(d=files))

    @pytest.mark.parametrize(
        "argv, message",
        [
            (["inspect", "m.keras"], "the following arguments are required: --data"),
            (["inspect", "m.keras", "--data", "x.npy", "--probe", "0"], "positive"),
            (["demo", "--epochs", "ten"], "expected a positive integer, got 'ten'"),
            (["nothing"], "invalid choice: 'nothing'"),
        ],
    )
    def test_usage_errors_exit_2(self, argv, message, capsys):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


class TestCommandError:
    def test_one_class_importable_from_errors_and_cli(self):
        from keras_relu_kit import cli, errors

        assert cli.CommandError is errors.CommandError
        assert issubclass(errors.CommandError, Exception)

    def test_commands_do_not_import_the_cli(self):
        # `cli` imports the commands lazily; they must not import it back.
        code = (
            "import sys, keras_relu_kit.inspect_model, keras_relu_kit.demo; "
            "print([m in sys.modules for m in "
            "('keras_relu_kit.errors', 'keras_relu_kit.cli')])"
        )
        env = dict(
            os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="2"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "[True, False]"


class TestHelp:
    @pytest.mark.parametrize(
        "argv, words",
        [
            ([], ["demo", "inspect"]),
            (["demo"], ["--out", "--epochs", "--quick", "--seed"]),
            (["inspect"], ["MODEL.keras", "--data", "--probe", "--json", "--key"]),
        ],
    )
    def test_every_command_has_help(self, argv, words, capsys):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: relu-kit")
        for word in words:
            assert word in out


def _console_script():
    script = Path(sys.executable).parent / "relu-kit"
    assert script.exists(), "run `pip install -e .` to install the relu-kit script"
    return str(script)


class TestConsoleScript:
    def test_inspect_in_a_subprocess(self, tmp_path, rng):
        keras_only_model(rng).save(tmp_path / "m.keras")
        np.save(tmp_path / "x.npy", rng.uniform(size=(12, 8)).astype("float32"))
        env = dict(
            os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="2"
        )
        ok = subprocess.run(
            [_console_script(), "inspect", "m.keras", "--data", "x.npy", "--json"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
        )
        assert ok.returncode == 0, ok.stderr
        report = json.loads(ok.stdout)
        assert [s["dead_units"] for s in report["sites"]] == [[1, 4], [0]]
        bad = subprocess.run(
            [sys.executable, "-m", "keras_relu_kit", "inspect", "gone.keras"]
            + ["--data", "x.npy"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
        )
        assert bad.returncode == 2
        assert bad.stdout == ""
        assert "Traceback" not in bad.stderr
        # TensorFlow may log on import; the error is the last line.
        assert bad.stderr.splitlines()[-1] == (
            "relu-kit: error: model file 'gone.keras' does not exist"
        )
