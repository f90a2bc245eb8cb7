"""Griffe extension: render the kit's Keras-style doctest examples as code.

The kit's docstrings follow Keras' own (`keras/src/layers/activations/
prelu.py`): an `Example:` line, then `>>>` lines at the docstring's own
indentation, which is what the doctests run. Google-style parsing expects
an indented `Examples:` section instead, so without help Markdown reads
`>>>` as three nested block quotes and doctest output such as `[0.0, 1.0]`
as link references. This extension wraps every run of doctest lines (the
`>>>` and `...` lines, their output, and blank lines between runs) in a
fenced `pycon` block before the docstring is parsed; the source keeps its
Keras style and keeps running as doctests.
"""

import re

import griffe

_PROMPT = re.compile(r"^(?P<indent>\s*)>>>( |$)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def fence_doctests(text: str) -> str:
    """`text` with each run of doctest lines inside a ```pycon fence."""
    lines = text.split("\n")
    out = []
    in_fence = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _PROMPT.match(line)
        if match is None:
            out.append(line)
            index += 1
            continue
        indent = match.group("indent")
        block = []
        while index < len(lines):
            line = lines[index]
            if line.strip():
                block.append(line)
                index += 1
                continue
            # A blank line ends the example's output; a prompt after it
            # continues the same example.
            following = index + 1
            while following < len(lines) and not lines[following].strip():
                following += 1
            if following < len(lines) and _PROMPT.match(lines[following]):
                block.extend(lines[index:following])
                index = following
                continue
            break
        out.append(f"{indent}```pycon")
        out.extend(block)
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    """Fence the doctest examples of every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
