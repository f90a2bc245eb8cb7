"""What a measurement found: `SiteReport` per site and the `DeadReport`."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import keras
import numpy as np

if TYPE_CHECKING:
    from keras_relu_kit.diagnostics.sites import RectifierSite

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True, eq=False)
class SiteReport:
    """Dead and dormant units of one rectifier site on one probe set.

    A unit is a channel: the last axis for channels_last outputs, axis 1
    for channels_first ones. A unit is **dead** when its output is <= 0 for
    every probe sample and position. Its ReDo score (Sokar et al. 2023) is
    its mean |output| divided by the mean of that over the layer's units; it
    is **dormant** when the score is <= `tau`.

    Attributes:
        name: str. The site's name (see `RectifierSite`); for one call of
            a shared layer applied to tensors of different widths,
            `"<site>/call_<k>"`.
        layer: the measured `keras.layers.Layer`.
        units: int. Number of units (channels).
        dead: int. Number of dead units.
        dead_fraction: float. `dead / units`.
        dead_mask: `np.ndarray` of bool, shape `(units,)`. Which units are
            dead.
        dormant_fraction: float, or `None` when no `tau` was given. Fraction
            of units whose ReDo score is <= `tau`.
        nonfinite: int. Number of NaN or inf output values seen. They never
            make a unit alive and are left out of the ReDo sums (so a unit
            with such values scores a little low; every score is exact when
            `nonfinite` is 0).
        kind: str. The site's kind (see `RectifierSite`).
        dormant_mask: `np.ndarray` of bool, shape `(units,)`, or `None`
            when no `tau` was given.
        scores: `np.ndarray` of float, shape `(units,)`. Each unit's ReDo
            score (0 for every unit of a layer whose outputs are all 0).
        site: str. The name of the `RectifierSite` measured (equal to
            `name` except for the calls of a shared layer).
        mean_output: `np.ndarray` of float64, shape `(units,)`. Each unit's
            mean output over every probe example and position, finite
            values only (0 for a unit with none).
        mean_abs_output: `np.ndarray` of float64, shape `(units,)`. Each
            unit's mean |output|, likewise.
        mean_square_output: `np.ndarray` of float64, shape `(units,)`.
            Each unit's mean squared output, likewise (with `mean_output`,
            its variance over the probe).
        effective_rank: float, or `None` unless measured with
            `plasticity=True`. The effective rank (Roy & Vetterli 2007) of
            the site's features on the probe: the `(rows, units)` matrix of
            outputs, one row per example and position. With `s` its
            singular values and `p = s / sum(s)`, it is
            `exp(-sum(p * log(p)))`, between 1 and `units` (0 when every
            output is 0), as Dohare et al. (Nature 2024) compute it.
        weight_magnitude: float, or `None` unless measured with
            `plasticity=True`. The mean |weight| of the kernel of the layer
            producing the units: the site's own layer for a `Dense` or
            convolution with a rectifier `activation`, else the `Dense` or
            convolution feeding the rectifier in the model's graph (through
            normalization and dropout layers); `None` where there is none
            or it cannot be read from the graph.
    """

    name: str
    layer: keras.layers.Layer
    units: int
    dead: int
    dead_fraction: float
    dead_mask: np.ndarray
    dormant_fraction: float | None
    nonfinite: int
    kind: str = ""
    dormant_mask: np.ndarray | None = None
    scores: np.ndarray | None = None
    site: str = ""
    mean_output: np.ndarray | None = None
    mean_abs_output: np.ndarray | None = None
    mean_square_output: np.ndarray | None = None
    effective_rank: float | None = None
    weight_magnitude: float | None = None

    def __repr__(self) -> str:
        dormant = (
            ""
            if self.dormant_fraction is None
            else f", dormant_fraction={self.dormant_fraction:.4g}"
        )
        return (
            f"SiteReport(name={self.name!r}, units={self.units}, "
            f"dead={self.dead}, dead_fraction={self.dead_fraction:.4g}"
            f"{dormant}, nonfinite={self.nonfinite})"
        )


def site_report(
    site: RectifierSite,
    maxima: Any,
    sums: Any,
    nonfinite: Any,
    tau: float | None,
    name: str | None = None,
    *,
    signed_sums: Any = None,
    counts: Any = None,
    square_sums: Any = None,
    gram: Any = None,
    weight_magnitude: float | None = None,
) -> SiteReport:
    """Build a `SiteReport` from the per-unit reductions of one site.

    `name` is the report's name when it differs from the site's (one call
    of a shared layer). `signed_sums`, `square_sums` and `counts` (each
    unit's sums of finite outputs and of their squares, and the number of
    them) give the means; `gram`, the
    `(units, units)` matrix `X^T X` of the site's features, gives the
    effective rank.
    """
    maxima = np.asarray(maxima, dtype=np.float32)
    sums = np.asarray(sums, dtype=np.float64)
    units = int(maxima.shape[0])
    dead_mask = ~(maxima > 0)
    dead = int(dead_mask.sum())
    # The mean |output| of every unit of a layer is taken over the same
    # number of values, so the ReDo score is a ratio of sums.
    layer_mean = float(sums.mean()) if units else 0.0
    if layer_mean > 0 and np.isfinite(layer_mean):
        scores = sums / layer_mean
    else:
        scores = np.zeros_like(sums)
    if tau is None:
        dormant_mask = None
        dormant_fraction = None
    else:
        dormant_mask = scores <= tau
        dormant_fraction = float(dormant_mask.sum()) / units
    return SiteReport(
        name=site.name if name is None else name,
        layer=site.layer,
        units=units,
        dead=dead,
        dead_fraction=dead / units,
        dead_mask=dead_mask,
        dormant_fraction=dormant_fraction,
        nonfinite=int(nonfinite),
        kind=site.kind,
        dormant_mask=dormant_mask,
        scores=scores,
        site=site.name,
        mean_output=_per_unit_mean(signed_sums, counts),
        mean_abs_output=_per_unit_mean(sums, counts),
        mean_square_output=_per_unit_mean(square_sums, counts),
        effective_rank=None if gram is None else effective_rank(gram),
        weight_magnitude=weight_magnitude,
    )


def _per_unit_mean(sums: Any, counts: Any) -> np.ndarray | None:
    """`sums / counts` per unit, 0 where a unit has no finite value."""
    if sums is None or counts is None:
        return None
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    means = np.zeros_like(sums)
    np.divide(sums, counts, out=means, where=counts > 0)
    return means


def effective_rank(gram: Any) -> float:
    """The effective rank of a feature matrix `X`, given `X^T X`.

    Roy & Vetterli (2007), as Dohare et al. (Nature 2024) compute it
    (`compute_effective_rank` in shibhansh/loss-of-plasticity): with `s`
    the singular values of `X` and `p = s / sum(s)`,
    `exp(-sum(p * log(p)))`, where `0 * log(0)` is 0. The singular values
    are the square roots of the eigenvalues of `X^T X`. That matrix is
    summed in float32, so an eigenvalue within float32 rounding of the
    largest (below `units * eps * largest`) is taken as 0: without this,
    the rounding of a rank-5 matrix of 512 columns reads as a rank of 3.0
    instead of 2.7. 0 for a zero matrix, where the formula is undefined.
    """
    gram = np.asarray(gram, dtype=np.float64)
    if not np.all(np.isfinite(gram)):
        # Outputs whose squares overflow float32: no rank to read.
        return float("nan")
    gram = (gram + gram.T) / 2
    eigenvalues = np.linalg.eigvalsh(gram) if gram.size else np.zeros(0)
    largest = float(eigenvalues.max(initial=0.0))
    tolerance = largest * max(gram.shape[0], 1) * np.finfo(np.float32).eps
    singular = np.sqrt(eigenvalues[eigenvalues > tolerance])
    total = float(singular.sum())
    if not (total > 0 and np.isfinite(total)):
        return 0.0
    p = singular / total
    return float(np.exp(-np.sum(p * np.log(p))))


class DeadReport:
    """The result of one measurement: a `SiteReport` per rectifier site.

    Attributes:
        sites: dict from site name to `SiteReport`, in model order.
        units: int. Total number of units over all sites.
        dead: int. Total number of dead units.
        dead_fraction: float. `dead / units` (0.0 when there are no units).
        dormant_fraction: float, or `None` when no `tau` was given. Dormant
            units over all units.
        nonfinite: int. Total NaN/inf output values seen.
        tau: float or `None`. The ReDo threshold used.
        num_examples: int. Number of probe examples measured.
        plasticity: bool. Whether the sites' `effective_rank` and
            `weight_magnitude` were measured (and go into `to_logs`).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_relu_kit.diagnostics import measure
    >>> model = keras.Sequential([
    ...     keras.Input((3,)),
    ...     keras.layers.Dense(
    ...         4, activation="relu", name="hidden",
    ...         kernel_initializer="ones",
    ...         bias_initializer=keras.initializers.Constant([1, 1, -9, -9]),
    ...     ),
    ... ])
    >>> report = measure(model, np.ones((8, 3)))
    >>> report.dead_fraction, report.sites["hidden"].dead_mask.tolist()
    (0.5, [False, False, True, True])
    >>> report.to_logs()
    {'dead_fraction': 0.5, 'dead_fraction/hidden': 0.5}
    """

    def __init__(
        self,
        sites: Mapping[str, SiteReport] | Iterable[tuple[str, SiteReport]],
        *,
        tau: float | None = None,
        num_examples: int = 0,
        plasticity: bool = False,
    ) -> None:
        self.sites = dict(sites)
        self.tau = tau
        self.plasticity = bool(plasticity)
        self.num_examples = int(num_examples)
        self.units = sum(s.units for s in self.sites.values())
        self.dead = sum(s.dead for s in self.sites.values())
        self.nonfinite = sum(s.nonfinite for s in self.sites.values())
        self.dead_fraction = self.dead / self.units if self.units else 0.0
        self.dormant_fraction: float | None
        if tau is None:
            self.dormant_fraction = None
        elif self.units:
            dormant = sum(
                int(_with_tau(s.dormant_mask).sum()) for s in self.sites.values()
            )
            self.dormant_fraction = dormant / self.units
        else:
            self.dormant_fraction = 0.0

    def __len__(self) -> int:
        return len(self.sites)

    def __repr__(self) -> str:
        return (
            f"<DeadReport sites={len(self.sites)} units={self.units} "
            f"dead={self.dead} dead_fraction={self.dead_fraction:.4g}>"
        )

    def to_logs(self, per_site: bool = True) -> dict[str, float]:
        """The report as Keras `logs` entries (plain Python floats).

        Args:
            per_site: bool. Whether to add one entry per site besides the
                overall one. Defaults to `True`.

        Returns:
            A dict: `"dead_fraction"` (overall) and
            `"dead_fraction/<site name>"` per site; when the report has a
            `tau`, also `"dormant_fraction"` and
            `"dormant_fraction/<site name>"`; when measured with
            `plasticity=True` and `per_site`, also
            `"effective_rank/<site name>"` and
            `"weight_magnitude/<site name>"` (the latter only for the
            sites whose producing kernel is known).
        """
        logs = {"dead_fraction": float(self.dead_fraction)}
        if per_site:
            for name, site in self.sites.items():
                logs[f"dead_fraction/{name}"] = float(site.dead_fraction)
        if self.tau is not None:
            logs["dormant_fraction"] = float(_with_tau(self.dormant_fraction))
            if per_site:
                for name, site in self.sites.items():
                    logs[f"dormant_fraction/{name}"] = float(
                        _with_tau(site.dormant_fraction)
                    )
        if self.plasticity and per_site:
            logs.update(self._plasticity_logs())
        return logs

    def _plasticity_logs(self) -> dict[str, float]:
        logs = {}
        for name, site in self.sites.items():
            if site.effective_rank is not None:
                logs[f"effective_rank/{name}"] = float(site.effective_rank)
        for name, site in self.sites.items():
            if site.weight_magnitude is not None:
                logs[f"weight_magnitude/{name}"] = float(site.weight_magnitude)
        return logs

    def to_record(self) -> dict[str, float]:
        """The report as one flat, JSON-ready dict (used by histories).

        Holds everything `to_logs()` holds, plus `"units"`, `"dead"`,
        `"nonfinite"`, and `"nonfinite/<site name>"` per site.
        """
        record = self.to_logs()
        record["units"] = int(self.units)
        record["dead"] = int(self.dead)
        record["nonfinite"] = int(self.nonfinite)
        for name, site in self.sites.items():
            record[f"nonfinite/{name}"] = int(site.nonfinite)
        return record

    def to_dict(self) -> dict[str, Any]:
        """The report as a nested, JSON-ready dict (what `inspect` prints).

        Returns:
            A dict of plain Python values: `"examples"`, `"units"`,
            `"dead"`, `"dead_fraction"`, `"nonfinite"` (totals) and
            `"sites"`, a list with, per site in model order, `"name"`,
            `"layer"` (the layer's name), `"class"` (its class name),
            `"kind"`, `"units"`, `"dead"`, `"dead_fraction"`,
            `"dead_units"` (the indices of the dead units) and
            `"nonfinite"`. When the report has a `tau`, also `"tau"` and
            `"dormant_fraction"`, and per site `"dormant_fraction"` and
            `"dormant_units"`. When measured with `plasticity=True`, also
            `"plasticity": True` and per site `"effective_rank"` and
            `"weight_magnitude"` (`None` when unknown).
        """
        dormant = self.tau is not None
        result: dict[str, Any] = {
            "examples": int(self.num_examples),
            "units": int(self.units),
            "dead": int(self.dead),
            "dead_fraction": float(self.dead_fraction),
            "nonfinite": int(self.nonfinite),
        }
        if dormant:
            result["tau"] = float(_with_tau(self.tau))
            result["dormant_fraction"] = float(_with_tau(self.dormant_fraction))
        if self.plasticity:
            result["plasticity"] = True
        result["sites"] = []
        for name, site in self.sites.items():
            entry = {
                "name": name,
                "layer": site.layer.name,
                "class": type(site.layer).__name__,
                "kind": site.kind,
                "units": int(site.units),
                "dead": int(site.dead),
                "dead_fraction": float(site.dead_fraction),
                "dead_units": _indices(site.dead_mask),
                "nonfinite": int(site.nonfinite),
            }
            if dormant:
                entry["dormant_fraction"] = float(_with_tau(site.dormant_fraction))
                entry["dormant_units"] = _indices(site.dormant_mask)
            if self.plasticity:
                entry["effective_rank"] = _float_or_none(site.effective_rank)
                entry["weight_magnitude"] = _float_or_none(site.weight_magnitude)
            result["sites"].append(entry)
        return result

    def _count_columns(self, with_layer: bool) -> list[tuple[str, list[str], str, int]]:
        """The columns `summary` and `table` share (`table`'s are narrower)."""
        sites = list(self.sites.values())
        wide = 0 if with_layer else 1
        columns = [("site", list(self.sites), "<", 4)]
        if with_layer:
            columns.append(("layer", [type(s.layer).__name__ for s in sites], "<", 5))
        columns += [
            ("units", [str(s.units) for s in sites], ">", 5 + wide),
            ("dead", [str(s.dead) for s in sites], ">", 4 + 2 * wide),
            ("dead %", [_percent(s.dead_fraction) for s in sites], ">", 6 + wide),
        ]
        if self.tau is not None:
            columns.append(
                (
                    "dormant %",
                    [_percent(_with_tau(s.dormant_fraction)) for s in sites],
                    ">",
                    9,
                )
            )
        if self.plasticity:
            columns += [
                (
                    "eff. rank",
                    [_number(s.effective_rank, ".1f") for s in sites],
                    ">",
                    9,
                ),
                (
                    "mean |w|",
                    [_number(s.weight_magnitude, ".3g") for s in sites],
                    ">",
                    8,
                ),
            ]
        if self.nonfinite > 0:
            columns.append(
                ("NaN/inf", [str(s.nonfinite) for s in sites], ">", 7 + wide)
            )
        return columns

    def summary(self) -> str:
        """A short table, one row per site, as the monitor prints it."""
        return "\n".join(_render(self._count_columns(with_layer=False)))

    def table(self, max_ranges: int | None = 8) -> str:
        """A table of every site with its dead units, and the totals.

        One row per site: its name, its layer's class, units, dead units,
        dead % (dormant % with a `tau`; the effective rank and mean
        |weight| when measured with `plasticity=True`; NaN/inf values when
        any were seen), and which units are dead, as index ranges. A last line
        gives the totals. `relu-kit inspect` prints it.

        Args:
            max_ranges: int or `None`. Each row lists at most this many
                index ranges, then `... (+N more)`, N counting the dead
                units left out, so that a layer with hundreds of dead
                units keeps its row short. `None` lists every one
                (`to_dict()` always does). Defaults to `8`.

        Example:

        >>> import keras
        >>> import numpy as np
        >>> from keras_relu_kit.diagnostics import measure
        >>> hidden = keras.layers.Dense(4, activation="relu", name="hidden")
        >>> model = keras.Sequential([keras.Input((3,)), hidden])
        >>> hidden.set_weights([np.ones((3, 4)), np.array([1.0, -9, -9, 1])])
        >>> print(measure(model, np.ones((8, 3))).table())
          site    layer  units  dead  dead %  dead units
          hidden  Dense      4     2    50.0  1-2
        Total: 2 of 4 units dead (50.0%) in 1 rectifier site.
        """
        if max_ranges is not None and (
            isinstance(max_ranges, bool)
            or not isinstance(max_ranges, numbers.Integral)
            or max_ranges < 1
        ):
            raise ValueError(
                "`max_ranges` must be a positive integer or None. "
                f"Received: max_ranges={max_ranges!r}"
            )
        if not self.sites:
            return (
                "No rectifier sites (ReLU-family layers or layers with a "
                "rectifier activation): nothing to measure."
            )
        sites = list(self.sites.values())
        columns = self._count_columns(with_layer=True)
        dead_units = [_ranges(_indices(s.dead_mask), max_ranges) or "-" for s in sites]
        columns.append(("dead units", dead_units, "<", 0))
        count = len(sites)
        lines = _render(columns)
        lines.append(
            f"Total: {self.dead} of {self.units} units dead "
            f"({_percent(self.dead_fraction)}%) in {count} rectifier "
            f"site{'s' if count != 1 else ''}."
        )
        if self.nonfinite > 0:
            lines.append(
                f"Warning: {self.nonfinite} NaN/inf activation values; they "
                "never count as alive."
            )
        return "\n".join(lines)


def _with_tau(value: _T | None) -> _T:
    """`value`, a dormant fraction or mask (or the `tau`) of a report
    measured with a `tau`, which always has one."""
    assert value is not None
    return value


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def _indices(mask: Any) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask)]


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}"


def _ranges(indices: list[int], max_ranges: int | None = None) -> str:
    """`[0, 1, 2, 5]` as `"0-2, 5"`; past `max_ranges` ranges, the count of
    the indices left out: `_ranges([0, 2, 4, 6], 2)` is
    `"0, 2 ... (+2 more)"`."""
    ranges, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            ranges.append((start, value))
            start = None
    shown = ranges if max_ranges is None else ranges[:max_ranges]
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in shown)
    left_out = sum(b - a + 1 for a, b in ranges[len(shown) :])
    if left_out:
        text += f" ... (+{left_out} more)"
    return text


def _number(value: float | None, spec: str) -> str:
    """`value` formatted by `spec`, or `-` when unknown."""
    return "-" if value is None else format(value, spec)


def _render(columns: list[tuple[str, list[str], str, int]]) -> list[str]:
    """Lines of a text table, indented by two spaces.

    `columns` is a list of `(header, cells, align, min_width)`; `align` is
    `"<"` or `">"`. Each column is as wide as its widest entry, and at
    least `min_width`.
    """
    widths = [
        max(min_width, len(header), *(len(cell) for cell in cells))
        for header, cells, _, min_width in columns
    ]
    rows = zip(*([header, *cells] for header, cells, _, _ in columns), strict=True)
    return [
        "  "
        + "  ".join(
            f"{cell:{align}{width}}"
            for cell, (_, _, align, _), width in zip(row, columns, widths, strict=True)
        ).rstrip()
        for row in rows
    ]
