"""The controller: apply desired state, reconcile it into observed status, serve a specs folder.

The submodules `apply`, `reconcile` and `bootstrap` keep their names here
(callers write `apply.apply(...)`, `reconcile.Result`), so their functions of
the same name are reached through them rather than re-exported over them.
"""

from fibric.controller import apply, bootstrap, conditions, loop, reconcile, watch
from fibric.controller.apply import ApplyResult, Change, delete
from fibric.controller.loop import Controller
from fibric.controller.reconcile import Result
from fibric.controller.watch import apply_folder, watch_folder

__all__ = [
    "ApplyResult",
    "Change",
    "Controller",
    "Result",
    "apply",
    "apply_folder",
    "bootstrap",
    "conditions",
    "delete",
    "loop",
    "reconcile",
    "watch",
    "watch_folder",
]
