"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"readme_example_{index}"}
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), namespace)
    if "recycle = Recycle(" in BLOCKS[index]:
        # What the README says of the Recycle example.
        history = namespace["history"].history
        assert history["dead_fraction"][0] > 0.5
        assert max(history["dead_fraction"][1:]) <= 0.05
        assert history["recycled"][0] > 100
        assert history["val_accuracy"][-1] > 0.9
