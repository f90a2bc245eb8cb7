"""`relu-kit inspect` and the command line's help and errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_relu_kit import cli, layers
from keras_relu_kit.cli import main
from keras_relu_kit.diagnostics import measure

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

    def test_tau_and_plasticity_report_what_measure_reports(self, saved, capsys):
        _, model, data = saved
        argv = ["inspect", model, "--data", data, "--tau", "0.5", "--plasticity"]
        code, out, _ = run(capsys, *argv, "--json")
        assert code == 0
        report = json.loads(out)
        expected = measure(
            keras.models.load_model(model),
            np.load(data),
            tau=0.5,
            plasticity=True,
        )
        assert report["tau"] == 0.5 and report["plasticity"] is True
        assert report["dormant_fraction"] == pytest.approx(expected.dormant_fraction)
        sites = {s["name"]: s for s in report["sites"]}
        assert list(sites) == list(expected.sites)
        for name, site in expected.sites.items():
            assert (
                sites[name]["dormant_units"]
                == np.flatnonzero(site.dormant_mask).tolist()
            )
            assert sites[name]["effective_rank"] == pytest.approx(site.effective_rank)
            assert sites[name]["weight_magnitude"] == pytest.approx(
                site.weight_magnitude
            )
        code, out, _ = run(capsys, *argv)
        lines = out.splitlines()
        assert lines[1].split()[6:12] == ["dormant", "%", "eff.", "rank", "mean", "|w|"]
        for line in lines[2:-1]:
            row = line.split()
            site = expected.sites[row[0]]
            assert row[6] == f"{site.effective_rank:.1f}"
            assert row[7] == f"{site.weight_magnitude:.3g}"

    def test_model_without_rectifiers(self, tmp_path, rng, capsys):
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
        model.save(tmp_path / "linear.keras")
        np.save(tmp_path / "x.npy", rng.uniform(size=(4, 8)))
        code, out, _ = run(
            capsys, "inspect", tmp_path / "linear.keras", "--data", tmp_path / "x.npy"
        )
        assert code == 0
        assert out.splitlines()[-1].startswith("No rectifier sites")


def many_dead_model(rng):
    """512 units, every odd one dead: 256 dead units in 256 ranges."""
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(512, activation="relu", name="wide")],
        name="wide",
    )
    _plant(model.get_layer("wide"), list(range(1, 512, 2)), rng)
    return model


class TestSeveralInputs:
    """A model of several inputs reads them from a .npz, an array per input
    (named after its dict key, or its `Input`'s name)."""

    @staticmethod
    def _model(rng, as_dict):
        a, b = keras.Input((8,), name="a"), keras.Input((3,), name="b")
        joined = keras.layers.Concatenate()([a, b])
        hidden = keras.layers.Dense(6, activation="relu", name="hidden")(joined)
        outputs = keras.layers.Dense(2, name="head")(hidden)
        inputs = {"a": a, "b": b} if as_dict else [a, b]
        model = keras.Model(inputs, outputs, name="two_inputs")
        _plant(model.get_layer("hidden"), [0, 5], rng)
        return model

    @pytest.mark.parametrize("as_dict", [True, False])
    def test_reports_the_planted_units(self, as_dict, tmp_path, rng, capsys):
        self._model(rng, as_dict).save(tmp_path / "m.keras")
        data = tmp_path / "ab.npz"
        np.savez(data, b=rng.uniform(size=(20, 3)), a=rng.uniform(size=(20, 8)))
        code, out, err = run(
            capsys, "inspect", tmp_path / "m.keras", "--data", data, "--json"
        )
        assert code == 0 and err == ""
        report = json.loads(out)
        assert report["examples"] == 20
        (site,) = report["sites"]
        assert site["name"] == "hidden" and site["dead_units"] == [0, 5]

    def test_an_input_missing_from_the_archive(self, tmp_path, rng, capsys):
        self._model(rng, True).save(tmp_path / "m.keras")
        np.savez(tmp_path / "a.npz", a=rng.uniform(size=(20, 8)))
        np.save(tmp_path / "a.npy", rng.uniform(size=(20, 8)))
        code, _, err = run(
            capsys, "inspect", tmp_path / "m.keras", "--data", tmp_path / "a.npz"
        )
        assert code == 2
        assert err == (
            f"relu-kit: error: data file '{tmp_path}/a.npz' has no array 'b'; "
            "it holds: a\n"
        )
        code, _, err = run(
            capsys, "inspect", tmp_path / "m.keras", "--data", tmp_path / "a.npy"
        )
        assert code == 2
        assert err.startswith(
            "relu-kit: error: a model of 2 inputs (a, b) reads them from a .npz "
            "file with an array per input"
        )


class TestManyDeadUnits:
    ODD = list(range(1, 512, 2))

    @pytest.fixture
    def argv(self, tmp_path, rng, monkeypatch):
        # Relative paths: the first line names the files.
        monkeypatch.chdir(tmp_path)
        many_dead_model(rng).save("wide.keras")
        np.save("x.npy", rng.uniform(size=(20, 8)).astype("float32"))
        return ["inspect", "wide.keras", "--data", "x.npy"]

    def test_text_lists_a_few_ranges_and_counts_the_rest(self, argv, capsys):
        code, out, _ = run(capsys, *argv)
        assert code == 0
        lines = out.splitlines()
        assert max(len(line) for line in lines) <= 120
        assert lines[2].split() == ["wide", "Dense", "512", "256", "50.0"] + (
            "1, 3, 5, 7, 9, 11, 13, 15 ... (+248 more)".split()
        )
        assert lines[3] == "Total: 256 of 512 units dead (50.0%) in 1 rectifier site."

    def test_all_lists_every_index(self, argv, capsys):
        code, out, _ = run(capsys, *argv, "--all")
        assert code == 0
        row = out.splitlines()[2]
        assert row.endswith("50.0  " + ", ".join(map(str, self.ODD)))
        assert "more" not in out

    def test_json_lists_every_index(self, argv, capsys):
        code, out, _ = run(capsys, *argv, "--json")
        assert code == 0
        site = json.loads(out)["sites"][0]
        assert site["dead"] == 256 and site["dead_units"] == self.ODD

    @pytest.mark.parametrize(
        "dead, max_ranges, listed",
        [
            ([1, 4], 1, "1 ... (+1 more)"),
            ([1, 4], 2, "1, 4"),
            ([0, 1, 2, 4, 5], 1, "0-2 ... (+2 more)"),
            ([0, 1, 2, 4, 5], None, "0-2, 4-5"),
            ([], 1, "-"),
        ],
    )
    def test_max_ranges(self, dead, max_ranges, listed, rng):
        model = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(6, activation="relu", name="d")]
        )
        _plant(model.get_layer("d"), dead, rng)
        report = measure(model, rng.uniform(size=(10, 8)).astype("float32"))
        row = report.table(max_ranges=max_ranges).splitlines()[1]
        assert row.split(maxsplit=5)[5] == listed

    @pytest.mark.parametrize("max_ranges", [0, -1, 2.5, True])
    def test_max_ranges_must_be_positive(self, max_ranges, rng):
        model = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(6, activation="relu")]
        )
        report = measure(model, rng.uniform(size=(4, 8)).astype("float32"))
        with pytest.raises(ValueError, match=f"Received: max_ranges={max_ranges!r}"):
            report.table(max_ranges=max_ranges)


class TestBadInput:
    def test_refused_model_names_the_innermost_cause(self, tmp_path, rng, capsys):
        @keras.saving.register_keras_serializable(package="cli_test")
        class Doubler(keras.layers.Layer):
            def call(self, x):
                return 2 * x

        model = keras.Sequential(
            [keras.Input((3,)), Doubler(), keras.layers.ReLU(name="relu")]
        )
        model.save(tmp_path / "custom.keras")
        np.save(tmp_path / "x.npy", rng.uniform(size=(4, 3)).astype("float32"))
        # The class is unknown where the model is loaded.
        keras.saving.get_custom_objects().pop("cli_test>Doubler")
        code = main(
            [
                "inspect",
                str(tmp_path / "custom.keras"),
                "--data",
                str(tmp_path / "x.npy"),
            ]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2
        assert len(err.splitlines()) == 1
        # Keras' outer error quotes the whole config; the line keeps the
        # innermost cause, which names the class.
        assert "TypeError: Could not locate class 'Doubler'" in err
        assert "Full object config" not in err

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
            (["inspect", "m.keras", "--data", "x.npy", "--tau", "-1"], ">= 0"),
            (["inspect", "m.keras", "--data", "x.npy", "--tau", "x"], ">= 0"),
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
        from keras_relu_kit import errors

        assert cli.CommandError is errors.CommandError
        assert issubclass(errors.CommandError, Exception)

    @pytest.mark.backend_independent
    def test_commands_do_not_import_the_cli(self):
        # `cli` imports the commands lazily; they must not import it back.
        # Which modules import which does not depend on the backend.
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
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "[True, False]"


class TestHelp:
    @pytest.mark.parametrize(
        "argv, words",
        [
            ([], ["demo", "inspect", "--verbose", "RELU_KIT_VERBOSE=1"]),
            (["demo"], ["--out", "--epochs", "--quick", "--seed", "--verbose"]),
            (
                ["inspect"],
                [
                    "MODEL.keras",
                    "--data",
                    "--probe",
                    "--tau",
                    "--plasticity",
                    "--json",
                    "--key",
                    "--all",
                ],
            ),
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


def _quiet_env(**extra):
    """The environment of a command run as a user would: the current
    backend, and no TF_CPP_MIN_LOG_LEVEL (the conftest sets it)."""
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop(cli.VERBOSE_ENV, None)
    env.update(extra)
    return env


class TestPinKernels:
    """`relu-kit demo` runs TensorFlow's own kernels, as its scoreboard was
    published with; the other commands, and a caller's choice, are left."""

    @pytest.mark.parametrize(
        "argv, expected",
        [
            (["demo"], "0"),
            (["demo", "--quick", "--out", "here"], "0"),
            (["--verbose", "demo"], "0"),
            (["inspect", "demo.keras", "--data", "x.npy"], None),
            (["--help"], None),
            ([], None),
        ],
    )
    def test_demo_turns_onednn_off(self, argv, expected, monkeypatch):
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
        cli.pin_kernels(argv)
        assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == expected

    def test_the_caller_s_setting_stays(self, monkeypatch):
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
        cli.pin_kernels(["demo"])
        assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"


class TestConsoleScript:
    def test_inspect_in_a_subprocess(self, tmp_path, rng):
        keras_only_model(rng).save(tmp_path / "m.keras")
        np.save(tmp_path / "x.npy", rng.uniform(size=(12, 8)).astype("float32"))
        ok = subprocess.run(
            [_console_script(), "inspect", "m.keras", "--data", "x.npy", "--json"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=_quiet_env(),
        )
        assert ok.returncode == 0, ok.stderr
        report = json.loads(ok.stdout)
        assert [s["dead_units"] for s in report["sites"]] == [[1, 4], [0]]
        # No start-up lines from the backend: stderr is the kit's own.
        assert ok.stderr == ""
        # `make` sets TF_CPP_MIN_LOG_LEVEL=2, which lets TensorFlow's errors
        # through; the one that only says there is no GPU is still hidden.
        bad = subprocess.run(
            [sys.executable, "-m", "keras_relu_kit", "inspect", "gone.keras"]
            + ["--data", "x.npy"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=_quiet_env(TF_CPP_MIN_LOG_LEVEL="2"),
        )
        assert bad.returncode == 2
        assert bad.stdout == ""
        assert bad.stderr == "relu-kit: error: model file 'gone.keras' does not exist\n"

    def test_help_is_quiet(self):
        done = subprocess.run(
            [_console_script(), "--help"],
            capture_output=True,
            text=True,
            env=_quiet_env(),
        )
        assert done.returncode == 0
        assert done.stdout.startswith("usage: relu-kit")
        assert done.stderr == ""

    @pytest.mark.tensorflow_only
    def test_verbose_shows_tensorflow_log(self, tmp_path, rng):
        keras_only_model(rng).save(tmp_path / "m.keras")
        np.save(tmp_path / "x.npy", rng.uniform(size=(12, 8)).astype("float32"))
        done = subprocess.run(
            [_console_script(), "inspect", "m.keras", "--data", "x.npy", "--verbose"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=_quiet_env(),
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1].startswith("Total: 3 of 11 units dead")
        # TensorFlow logs as it starts (how much depends on the machine).
        logged = [line for line in done.stderr.splitlines() if LOG_LINE.match(line)]
        assert logged, done.stderr


LOG_LINE = re.compile(r"[IWEF]\d{4} |\d{4}-\d\d-\d\d [\d:.]+: [IWEF] ")

# What TensorFlow 2.21 prints on stderr as it starts on a machine without a
# GPU, with TF_CPP_MIN_LOG_LEVEL unset.
STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR",
    "I0000 00:00:1795976088.466220   32385 port.cc:153] oneDNN custom operations "
    "are on. You may see slightly different numerical results.",
    "I0000 00:00:1795976088.466565   32385 cudart_stub.cc:31] Could not find cuda "
    "drivers on your machine, GPU will not be used.",
    "I0000 00:00:1795976088.513397   32385 cpu_feature_guard.cc:227] This "
    "TensorFlow binary is optimized to use available CPU instructions.",
    "To enable the following instructions: AVX2 FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.",
    "W0000 00:00:1795976092.858576   32385 some.cc:1] a warning",
    "E0000 00:00:1795976092.858576   32385 cuda_platform.cc:52] failed call to "
    "cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "2024-03-12 10:42:01.123456: E tensorflow/compiler/xla/stream_executor/cuda/"
    "cuda_driver.cc:268] failed call to cuInit: CUDA_ERROR_NO_DEVICE: no "
    "CUDA-capable device is detected",
    "E0000 00:00:1795976092.858576   32385 cuda_executor.cc:1] failed call to "
    "cuInit: CUDA_ERROR_UNKNOWN: unknown error (999)",
    "2024-03-12 10:42:01.123456: E tensorflow/core/a.cc:1] a real error",
    "To enable the following instructions: (continues the line above)",
    "Traceback (most recent call last):",
    "F0000 00:00:1795976092.858576   32385 b.cc:2] fatal",
]


class TestQuietStart:
    @pytest.mark.parametrize(
        "level, kept",
        [
            # The default: fatal errors, and what is not a log line.
            (3, [11, 12]),
            # `make`'s level: errors too, but not the no-GPU ones.
            (2, [8, 9, 10, 11, 12]),
            (1, [5, 8, 9, 10, 11, 12]),
            # Everything but the no-GPU errors.
            (0, [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12]),
        ],
    )
    def test_filter_keeps_what_the_level_lets_through(self, level, kept):
        text = "".join(line + "\n" for line in STARTUP)
        expected = "".join(STARTUP[i] + "\n" for i in kept)
        assert cli._filter_startup_log(text, level) == expected

    @pytest.mark.parametrize(
        "argv, env, verbose",
        [
            (["demo"], None, False),
            (["--verbose", "demo"], None, True),
            (["inspect", "m.keras", "--verb"], None, True),
            (["--version"], None, False),
            (["inspect", "--", "--verbose"], None, False),
            (["demo"], "1", True),
            (["demo"], "0", False),
            (["demo"], "", False),
        ],
    )
    def test_verbose_requested(self, argv, env, verbose, monkeypatch):
        monkeypatch.delenv(cli.VERBOSE_ENV, raising=False)
        if env is not None:
            monkeypatch.setenv(cli.VERBOSE_ENV, env)
        assert cli._verbose_requested(argv) is verbose

    @pytest.mark.parametrize(
        "argv, expected",
        [
            (["demo", "--verbose"], True),
            (["--verbose", "demo"], True),
            (["demo"], False),
        ],
    )
    def test_verbose_flag_before_or_after_the_command(self, argv, expected):
        assert cli.build_parser().parse_args(argv).verbose is expected

    def test_filter_on_file_descriptor_2(self, capfd, monkeypatch):
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
        with cli._startup_log_filter():
            os.write(2, "\n".join([*STARTUP[:5], "kept", ""]).encode())
        assert capfd.readouterr().err == "kept\n"

    def test_filter_passes_everything_through_on_error(self, capfd, monkeypatch):
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
        with pytest.raises(RuntimeError), cli._startup_log_filter():
            os.write(2, (STARTUP[2] + "\n").encode())
            raise RuntimeError("import failed")
        assert capfd.readouterr().err == STARTUP[2] + "\n"
