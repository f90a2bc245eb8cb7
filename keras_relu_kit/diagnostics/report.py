"""What a measurement found: `SiteReport` per site and the `DeadReport`."""

import dataclasses

import keras
import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class SiteReport:
    """Dead and dormant units of one rectifier site on one probe set.

    A unit is a channel: the last axis for channels_last outputs, axis 1
    for channels_first ones. A unit is **dead** when its output is <= 0 for
    every probe sample and position. Its ReDo score (Sokar et al. 2023) is
    its mean |output| divided by the mean of that over the layer's units; it
    is **dormant** when the score is <= `tau`.

    Attributes:
        name: str. The site's name (see `RectifierSite`).
        layer: the measured `keras.layers.Layer`.
        units: int. Number of units (channels).
        dead: int. Number of dead units.
        dead_fraction: float. `dead / units`.
        dead_mask: `np.ndarray` of bool, shape `(units,)`. Which units are
            dead.
        dormant_fraction: float, or `None` when no `tau` was given. Fraction
            of units whose ReDo score is <= `tau`.
        nonfinite: int. Number of NaN or inf output values seen. They never
            make a unit alive (NaN is not > 0) and are left out of the ReDo
            means.
        kind: str. The site's kind (see `RectifierSite`).
        dormant_mask: `np.ndarray` of bool, shape `(units,)`, or `None`
            when no `tau` was given.
        scores: `np.ndarray` of float, shape `(units,)`. Each unit's ReDo
            score (0 for every unit of a layer whose outputs are all 0).
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

    def __repr__(self):
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


def site_report(site, maxima, sums, nonfinite, tau):
    """Build a `SiteReport` from the per-unit reductions of one site."""
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
        name=site.name,
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
    )


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

    def __init__(self, sites, *, tau=None, num_examples=0):
        self.sites = dict(sites)
        self.tau = tau
        self.num_examples = int(num_examples)
        self.units = sum(s.units for s in self.sites.values())
        self.dead = sum(s.dead for s in self.sites.values())
        self.nonfinite = sum(s.nonfinite for s in self.sites.values())
        self.dead_fraction = self.dead / self.units if self.units else 0.0
        if tau is None:
            self.dormant_fraction = None
        elif self.units:
            dormant = sum(int(s.dormant_mask.sum()) for s in self.sites.values())
            self.dormant_fraction = dormant / self.units
        else:
            self.dormant_fraction = 0.0

    def __len__(self):
        return len(self.sites)

    def __repr__(self):
        return (
            f"<DeadReport sites={len(self.sites)} units={self.units} "
            f"dead={self.dead} dead_fraction={self.dead_fraction:.4g}>"
        )

    def to_logs(self, per_site: bool = True) -> dict:
        """The report as Keras `logs` entries (plain Python floats).

        Args:
            per_site: bool. Whether to add one entry per site besides the
                overall one. Defaults to `True`.

        Returns:
            A dict: `"dead_fraction"` (overall) and
            `"dead_fraction/<site name>"` per site; when the report has a
            `tau`, also `"dormant_fraction"` and
            `"dormant_fraction/<site name>"`.
        """
        logs = {"dead_fraction": float(self.dead_fraction)}
        if per_site:
            for name, site in self.sites.items():
                logs[f"dead_fraction/{name}"] = float(site.dead_fraction)
        if self.tau is not None:
            logs["dormant_fraction"] = float(self.dormant_fraction)
            if per_site:
                for name, site in self.sites.items():
                    logs[f"dormant_fraction/{name}"] = float(site.dormant_fraction)
        return logs

    def to_record(self) -> dict:
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

    def summary(self) -> str:
        """A short table, one row per site, as the monitor prints it."""
        name_width = max([4, *(len(n) for n in self.sites)])
        show_dormant = self.tau is not None
        show_nonfinite = self.nonfinite > 0
        header = f"  {'site':<{name_width}}  {'units':>6}  {'dead':>6}"
        header += f"  {'dead %':>7}"
        if show_dormant:
            header += f"  {'dormant %':>9}"
        if show_nonfinite:
            header += f"  {'NaN/inf':>8}"
        lines = [header]
        for name, site in self.sites.items():
            line = (
                f"  {name:<{name_width}}  {site.units:>6}  {site.dead:>6}"
                f"  {100 * site.dead_fraction:>7.1f}"
            )
            if show_dormant:
                line += f"  {100 * site.dormant_fraction:>9.1f}"
            if show_nonfinite:
                line += f"  {site.nonfinite:>8}"
            lines.append(line)
        return "\n".join(lines)
