"""The README's and the documentation's examples run as written, and every
public name has an entry in the API reference.

Every ```python block of README.md and of each page under docs/ runs, a
page's blocks in order in one namespace (later blocks may use what earlier
ones defined), in a temporary folder. Blocks that need TensorFlow or
several processes are ```py or ```bash in the pages: shown, not run.
"""

import importlib
import inspect
import re
from pathlib import Path

import pytest
from _helpers import PUBLIC_MODULES, public_names

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
PAGE_IDS = [page.relative_to(ROOT).as_posix() for page in PAGES]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```[ \t]*$", re.M | re.S)
# A ```text block introduced by a line "prints" is what the page's code
# before it prints.
PRINTED = re.compile(r"^prints\n\n```text\n(.*?)^```[ \t]*$", re.M | re.S)
DIRECTIVE = re.compile(r"^:::[ \t]+([\w.]+)[ \t]*$", re.M)

# Modules whose public names must each have a `::: ` entry under
# docs/reference/: their `__all__`, or, without one, the classes and
# functions they define under a public name.
REFERENCED_MODULES = PUBLIC_MODULES


def python_blocks(page):
    return PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))


def _history(namespace):
    return namespace["history"].history


def check_readme_example(namespace, block):
    """What the README says of its first-run example."""
    history = _history(namespace)
    # "About three units in four are dead after the first epoch"
    assert 0.6 < history["dead_fraction"][0] < 0.9
    assert history["recycled"][0] > 100
    # "the dead fraction drops below 0.05 and validation accuracy climbs
    # past 0.7 in three epochs"
    assert history["dead_fraction"][-1] <= 0.05
    assert history["val_accuracy"][-1] > 0.7
    # "Without `Recycle` the same model stays at chance (0.10), its units as
    # dead as they started."
    fit = block[: block.index("\nprint(")]  # its prints read `recycled`
    without = fit.replace(
        "Recycle(dead_relu_monitor=monitor)", "keras.callbacks.Callback()"
    )
    assert without != fit
    plain = {"__name__": "readme_example_without_recycle"}
    exec(compile(without, "README.md[without Recycle]", "exec"), plain)
    history = _history(plain)
    assert history["val_accuracy"][-1] < 0.15
    assert min(history["dead_fraction"]) > 0.6


def check_recycle_guide(namespace, block):
    """What the remedies guide says of the `Recycle` example."""
    history = _history(namespace)
    assert history["dead_fraction"][0] > 0.5
    # "every later measurement finds at most 0.06 dead"
    assert max(history["dead_fraction"][1:]) <= 0.06
    assert history["recycled"][0] > 100
    assert history["val_accuracy"][-1] > 0.9


# (page, text that marks the block) -> what the page says of that block.
CHECKS = {
    (
        "README.md",
        "callbacks=[monitor, Recycle(dead_relu_monitor=monitor)]",
    ): check_readme_example,
    (
        "docs/guides/remedies.md",
        "recycle = Recycle(dead_relu_monitor=monitor)",
    ): check_recycle_guide,
}


def test_pages_have_examples():
    assert len(python_blocks(README)) >= 2
    for guide in ("layers", "monitor", "remedies", "transformers", "backends", "cli"):
        assert python_blocks(DOCS / "guides" / f"{guide}.md"), guide


@pytest.mark.parametrize(("page", "marker"), list(CHECKS))
def test_checked_example_is_on_its_page(page, marker):
    # A check whose example moved away must move with it.
    blocks = python_blocks(ROOT / page)
    assert sum(marker in block for block in blocks) == 1


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_page_examples_run(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    name = page.relative_to(ROOT).as_posix()
    namespace = {"__name__": "docs_example"}
    for index, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{name}[python block {index}]", "exec"), namespace)
        for (checked_page, marker), check in CHECKS.items():
            if checked_page == name and marker in block:
                check(namespace, block)
    printed = capsys.readouterr().out
    for expected in PRINTED.findall(page.read_text(encoding="utf-8")):
        assert expected in printed


def _resolve(path):
    """The object a `::: path` entry documents."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def _reference_entries():
    entries = []
    for page in sorted((DOCS / "reference").glob("*.md")):
        entries += DIRECTIVE.findall(page.read_text(encoding="utf-8"))
    return entries


def test_reference_entries_resolve():
    entries = _reference_entries()
    assert len(entries) == len(set(entries)), "an entry is listed twice"
    for entry in entries:
        _resolve(entry)


@pytest.mark.parametrize("module_name", REFERENCED_MODULES)
def test_every_public_name_has_a_reference_entry(module_name):
    module = importlib.import_module(module_name)
    entries = set(_reference_entries())
    # A class or function re-exported from another module (`cli`'s
    # `CommandError`) is documented once, where it is defined.
    documented = [_resolve(entry) for entry in entries]
    names = public_names(module)
    assert names, module_name
    missing = []
    for name in names:
        obj = getattr(module, name)
        if f"{module_name}.{name}" in entries:
            continue
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and any(
            obj is other for other in documented
        ):
            continue
        missing.append(f"{module_name}.{name}")
    assert not missing, f"no `::: name` entry under docs/reference/: {missing}"


def _table_rows(text, heading):
    """The Markdown table whose header row starts with `heading`, as lines."""
    after = text[text.index(heading) :]
    rows = []
    for line in after.splitlines():
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    return rows


@pytest.mark.backend_independent
@pytest.mark.parametrize("page", ["README.md", "docs/guides/remedies.md"])
def test_scoreboard_is_the_demo_s(page):
    """The scoreboard shown is the one `make demo` wrote into docs/demo."""
    results = (DOCS / "demo" / "results.md").read_text(encoding="utf-8")
    shown = (ROOT / page).read_text(encoding="utf-8")
    expected = _table_rows(results, "| Remedy |")
    assert len(expected) == 13  # Header, rule and one row per remedy.
    assert _table_rows(shown, "| Remedy |") == expected
    targets = _table_rows(results, "| Target |")
    assert len(targets) > 2
    assert _table_rows(shown, "| Target |") == targets


@pytest.mark.backend_independent
def test_claims_table_is_the_demo_s():
    """The remedies guide's table of the seed text's claims is the one
    `make demo` wrote (it once kept an older run's numbers)."""
    results = (DOCS / "demo" / "results.md").read_text(encoding="utf-8")
    shown = (DOCS / "guides" / "remedies.md").read_text(encoding="utf-8")
    expected = _table_rows(results, "| # | Claim |")
    assert len(expected) == 13  # Header, rule and one row per claim.
    assert _table_rows(shown, "| # | Claim |") == expected
