"""Training callbacks that watch and tend rectifier units.

- `DeadReLUMonitor` (`dead_relu_monitor.py`) measures the dead units of
  every rectifier layer while `fit` runs, into `logs` and its `history`.
- `AutoLeak` (`auto_leak.py`) raises a layer's leak where its units die.
- `Recycle` (`recycle.py`) re-initialises dead (or dormant) units.
- `ContinualBackprop` (`continual_backprop.py`) replaces the mature units
  of lowest contribution utility, a few at a time (Dohare et al. 2024).
- `ShrinkPerturb` (`shrink_perturb.py`) shrinks weights and adds noise.
- `L2Init` (`l2_init.py`) pulls the weights toward their initial values.

Each module imports only the ones below it:

- `_fit.py`: `FitCallback`, the base of all three (inside `fit` or not,
  `verbose`, acting every N batches), `ProbeOptions` (what a callback
  measures on, checked once) and `StepSchedule` (epoch and step counts).
- `_printing.py`: `print_msg`, through which verbose lines are printed.
- `_state_file.py`: `StateFile`, a remedy's state beside a
  `BackupAndRestore` backup.
- `_remedy.py`: `RemedyCallback`, the base of `AutoLeak` and the unit
  replacements (measuring alone or through a monitor, choosing `layers`,
  `backup_dir`); it imports `dead_relu_monitor.py`, which knows nothing of
  the remedies.
- `_replacement.py`: `UnitReplacement`, the base of `Recycle` and
  `ContinualBackprop` (planning the sites, one write per replacement,
  `changes` and their `logs`).
"""

from keras_relu_kit.callbacks.auto_leak import AutoLeak
from keras_relu_kit.callbacks.continual_backprop import ContinualBackprop
from keras_relu_kit.callbacks.dead_relu_monitor import DeadReLUMonitor
from keras_relu_kit.callbacks.l2_init import L2Init
from keras_relu_kit.callbacks.recycle import Recycle
from keras_relu_kit.callbacks.shrink_perturb import ShrinkPerturb

__all__ = [
    "AutoLeak",
    "ContinualBackprop",
    "DeadReLUMonitor",
    "L2Init",
    "Recycle",
    "ShrinkPerturb",
]
