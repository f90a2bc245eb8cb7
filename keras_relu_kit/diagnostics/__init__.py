"""Find the rectifier sites of any Keras model and measure their dead units.

The one place the kit measures. `DeadReLUMonitor`, `AutoLeak`, `measure`
and the command line all go through one path:

- `find_rectifier_sites(model)`: every ReLU-family site, in model order.
- `Probe`: the inputs to measure on (given data, or what `fit` trains on),
  as fixed, equal-sized batches checked against the model.
- `get_capture(model, sites)`: one compiled forward pass over the model's
  current weights that reduces every site's output per unit.
- `Measurement`: a probe and a capture, measured at most once per
  training step, shared by the callbacks of one `fit`.
- `measure(model, data)`: the same path, called once; a `DeadReport` with
  a `SiteReport` per site (dead and dormant units, per-unit means, and with
  `plasticity=True` the effective rank and the producer's mean |weight|).
"""

from keras_relu_kit.diagnostics.capture import Capture, get_capture
from keras_relu_kit.diagnostics.measurement import Measurement, measure
from keras_relu_kit.diagnostics.probe import Probe
from keras_relu_kit.diagnostics.report import DeadReport, SiteReport
from keras_relu_kit.diagnostics.sites import (
    RectifierSite,
    find_rectifier_sites,
    is_rectifier_activation,
    recurrent_rectifiers,
    unreachable_rectifiers,
)
from keras_relu_kit.rectifiers import RECTIFIER_ACTIVATIONS

__all__ = [
    "RECTIFIER_ACTIVATIONS",
    "Capture",
    "DeadReport",
    "Measurement",
    "Probe",
    "RectifierSite",
    "SiteReport",
    "find_rectifier_sites",
    "get_capture",
    "is_rectifier_activation",
    "measure",
    "recurrent_rectifiers",
    "unreachable_rectifiers",
]
