"""The built wheel installs and works without the source tree.

`python -m build` (no build isolation: the build backend comes from this
environment, so nothing is downloaded) makes the wheel and the sdist, and
`twine check` reads their metadata as PyPI would. The wheel is installed
(not editable, `--no-deps`, console script included) into a new virtual
environment. That
environment borrows the dependencies (Keras, numpy, the backend) from the
suite's environment through a `.pth` line, which adds the folder to
`sys.path` without running that folder's own `.pth` files, so the source
tree that the editable install points to stays out of reach. The smoke
script then runs in that environment from an empty folder: it imports
every public module, builds, fits with the callbacks, saves and reloads a
model of kit layers, and asserts where `keras_relu_kit` was imported from.
"""

import os
import pathlib
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Building and installing do not depend on the backend: once is enough.
pytestmark = pytest.mark.backend_independent

SMOKE = textwrap.dedent(
    """
    import importlib
    import pathlib
    import sys

    import keras
    import numpy as np

    import keras_relu_kit
    from keras_relu_kit import layers
    from keras_relu_kit.callbacks import AutoLeak, DeadReLUMonitor, Recycle

    where = pathlib.Path(keras_relu_kit.__file__).resolve()
    assert where.is_relative_to(pathlib.Path(sys.prefix).resolve()), where
    assert (where.parent / "py.typed").is_file()
    for name in (
        "callbacks", "constraints", "diagnostics", "initializers", "layers",
        "plotting", "surgery", "recycling", "inspect_model", "cli", "errors",
        "datasets", "demo",
    ):
        importlib.import_module(f"keras_relu_kit.{name}")

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras_relu_kit.leakify(
        keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(16, activation="relu"),
                layers.PReLU(mode="channel"),
                keras.layers.Dense(2),
            ]
        )
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
    monitor = DeadReLUMonitor(probe=x)
    history = model.fit(
        x, y, epochs=2, verbose=0,
        callbacks=[monitor, AutoLeak(dead_relu_monitor=monitor), Recycle()],
    )
    assert len(history.history["dead_fraction"]) == 2
    model.save("model.keras")
    loaded = keras.saving.load_model(
        "model.keras", custom_objects=keras_relu_kit.custom_objects()
    )
    np.testing.assert_array_equal(model.predict(x, verbose=0),
                                  loaded.predict(x, verbose=0))
    print("smoke ok", keras_relu_kit.__version__, where)
    """
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    wheels = list(out.glob("*.whl"))
    sdists = list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return wheels[0], sdists[0]


@pytest.fixture(scope="module")
def wheel_env(dist, tmp_path_factory):
    """A new virtual environment with the wheel installed; its python."""
    home = tmp_path_factory.mktemp("wheel_env")
    venv.create(home / "env", with_pip=False)
    python = home / "env" / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(dist[0]),
        ],
        check=True,
        capture_output=True,
    )
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The suite's dependencies, without the suite's editable install.
    (pathlib.Path(target) / "_borrowed_dependencies.pth").write_text(
        sysconfig.get_path("purelib") + "\n"
    )
    return python, pathlib.Path(target)


def test_twine_accepts_the_metadata(dist):
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def test_wheel_holds_the_package_only(dist):
    names = zipfile.ZipFile(dist[0]).namelist()
    assert "keras_relu_kit/py.typed" in names
    assert "keras_relu_kit/layers/leaky_relu.py" in names
    tops = {name.split("/")[0] for name in names}
    assert tops == {"keras_relu_kit", "keras_relu_kit-0.1.0.dist-info"}, tops
    assert not [n for n in names if "/tests/" in n or "benchmarks" in n]
    assert any(n.endswith("licenses/LICENSE") for n in names), names


def test_smoke_in_a_clean_environment(wheel_env, tmp_path):
    python, target = wheel_env
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME")
    }
    env["KERAS_BACKEND"] = keras.backend.backend()
    result = subprocess.run(
        [str(python), "-c", SMOKE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "smoke ok 0.1.0" in result.stdout
    assert str(target.resolve()) in result.stdout


def test_console_script_help(wheel_env, tmp_path):
    python, _ = wheel_env
    result = subprocess.run(
        [str(python.with_name("relu-kit")), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage: relu-kit" in result.stdout
    assert "demo" in result.stdout and "inspect" in result.stdout
