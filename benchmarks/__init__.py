"""Benchmarks of keras_relu_kit against Keras' built-in layers.

Run `python -m benchmarks` (or `make bench`) from the repository root: it
prints the tables and writes them to `benchmarks/README.md`. Each section
(`layers`, `training`, `memory`, `callbacks`) is a module with
`run(quick: bool = False) -> str` returning Markdown.
"""
