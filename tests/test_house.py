"""The shape of the package: one-way imports and short functions.

Read from the source with `ast` (and one subprocess for the imports), on
one backend: the TensorFlow suite.

- Each module imports in a fresh set of kit modules (no other kit module
  loaded before it), so no import order hides a cycle.
- The import graph of `keras_relu_kit`'s modules has no cycle. Every
  explicit import of a kit module counts, at module level or inside a
  function (a lazy import that breaks a cycle at import time is still a
  cycle for the reader); imports under `if TYPE_CHECKING:` do not, and
  neither does the implicit import of a module's parent package.
- No function has more than `MAX_LINES` lines of code (docstring, blank
  lines and comments excluded).
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "keras_relu_kit"
MAX_LINES = 60

pytestmark = pytest.mark.backend_independent


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_blocks(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = getattr(test, "id", None) or getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                yield from ast.walk(node)


def _resolve(name):
    """The kit module `name` refers to: itself, or the module it is in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name):
    """The kit modules that module `name` imports explicitly."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(node) for node in _type_checking_blocks(tree)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` imports the module; `from
            # module import name`, the module.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == "keras_relu_kit":
                resolved = _resolve(target)
                if resolved and resolved != name:
                    found.add(resolved)
    return found


def find_cycle(graph):
    """One cycle of `graph` as a list of nodes, or `None`."""
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_import_graph_has_no_cycle():
    graph = {name: imports_of(name) for name in MODULES}
    assert graph["keras_relu_kit.callbacks"] >= {
        "keras_relu_kit.callbacks.auto_leak",
        "keras_relu_kit.callbacks.dead_relu_monitor",
        "keras_relu_kit.callbacks.recycle",
    }
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


# Imports each kit module first, with no other kit module loaded before
# it (Keras and the backend stay loaded: they are not part of the graph).
IMPORT_ALONE = """
import importlib, json, sys
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m.split(".")[0] == "keras_relu_kit"]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as error:
        failures[name] = f"{type(error).__name__}: {error}"
print(json.dumps(failures))
"""


def test_each_module_imports_alone():
    names = sorted(name for name in MODULES if not name.endswith("__main__"))
    env = {k: v for k, v in os.environ.items() if k != "RELU_KIT_DEMO_WORKER"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALONE, json.dumps(names)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {}


def test_find_cycle_finds_a_lazy_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def code_lines(node, lines):
    body = node.body
    first = body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
        and len(body) > 1
    ):
        body = body[1:]
    count = 0
    for number in range(body[0].lineno, node.end_lineno + 1):
        text = lines[number - 1].strip()
        if text and not text.startswith("#"):
            count += 1
    return count


def long_functions():
    found = {}
    for name, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count = code_lines(node, lines)
                if count > MAX_LINES:
                    found[f"{name}:{node.lineno} {node.name}"] = count
    return found


def test_functions_are_short():
    assert long_functions() == {}
