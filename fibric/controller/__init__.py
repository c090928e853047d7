"""The controller: apply desired state, reconcile it into observed status, serve a specs folder.

The submodules `applier`, `reconcile` and `bootstrap` are exported as modules
(callers write `applier.apply(...)`, `reconcile.Result`): `reconcile` and
`bootstrap` hold functions of their own name, reached through them rather than
re-exported over them.
"""

from fibric.controller import applier, bootstrap, conditions, loop, reconcile, watch
from fibric.controller.applier import ApplyResult, Change, delete
from fibric.controller.loop import Controller
from fibric.controller.reconcile import Result
from fibric.controller.watch import apply_folder, watch_folder

__all__ = [
    "ApplyResult",
    "Change",
    "Controller",
    "Result",
    "applier",
    "apply_folder",
    "bootstrap",
    "conditions",
    "delete",
    "loop",
    "reconcile",
    "watch",
    "watch_folder",
]
