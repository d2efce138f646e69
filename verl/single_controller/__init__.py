"""The single controller: one driver process drives groups of Ray worker processes (docs/design.md §2).

Import the Ray-side pieces from their modules (`worker_group`, `resource_pool`, `colocated`, `ray_utils`);
this package root only re-exports the decorator so worker modules stay importable without starting Ray.
"""

from verl.single_controller.decorator import Dispatch, register

__all__ = ["Dispatch", "register"]
