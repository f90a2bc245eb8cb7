"""Find the rectifier sites of any Keras model and measure their dead units.

The one place the kit measures: `DeadReLUMonitor`, `AutoLeak` and the
command line all call `measure`.

- `find_rectifier_sites(model)`: every ReLU-family site, in model order.
- `measure(model, data)`: one compiled forward pass over probe data, and a
  `DeadReport` with a `SiteReport` per site.
"""

from keras_relu_kit.diagnostics.capture import Capture, get_capture, measure
from keras_relu_kit.diagnostics.report import DeadReport, SiteReport
from keras_relu_kit.diagnostics.sites import (
    RECTIFIER_ACTIVATIONS,
    RectifierSite,
    find_rectifier_sites,
    is_rectifier_activation,
)

__all__ = [
    "RECTIFIER_ACTIVATIONS",
    "Capture",
    "DeadReport",
    "RectifierSite",
    "SiteReport",
    "find_rectifier_sites",
    "get_capture",
    "is_rectifier_activation",
    "measure",
]
