"""Resource pools: the processes (ranks) of one worker group, reserved together as a Ray placement group.

A pool reserves its ranks' CPUs and GPUs at once, so a group either gets all its ranks or none: half a group
blocked in a collective waiting for a rank that cannot be scheduled is the failure this avoids. The
reservation waits a bounded time and then fails with what was asked for and what the cluster has, instead of
hanging.

Nodes: with `nnodes=1` the pool reserves one bundle per rank (`strategy` decides how they pack onto nodes).
With `nnodes=N > 1` it reserves N bundles with STRICT_SPREAD, one per node on N distinct Ray nodes, each
holding world_size / N ranks' resources: ranks r*k .. r*k+k-1 (k ranks per node) share node r, as torchrun
lays out `--nnodes N --nproc-per-node k`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

STRATEGIES = ("PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD")


class ResourceUnavailableError(RuntimeError):
    """The cluster could not give a pool its bundles within the wait."""


@dataclass
class RayResourcePool:
    """`world_size` worker processes with `num_cpus_per_worker` CPUs and `num_gpus_per_worker` GPUs each.

    On CPU use num_gpus_per_worker=0. nnodes: spread the ranks evenly over exactly this many Ray nodes (see
    the module docstring). strategy (nnodes=1 only): "PACK" (as few nodes as possible), "STRICT_PACK" (one
    node), or the SPREAD variants. The placement group is created on construction (requires `ray.init` first) and
    freed by `remove()`. One worker group at a time owns the pool's bundles: colocated roles share the
    processes through `create_colocated_worker_cls` instead of a second group.
    """

    world_size: int
    num_cpus_per_worker: float = 1
    num_gpus_per_worker: float = 0
    name: str = ""
    strategy: str = "PACK"
    nnodes: int = 1
    wait_timeout_s: float = 60.0
    placement_group: PlacementGroup = field(init=False, repr=False)
    owner: str | None = field(default=None, init=False)  # the worker group using the bundles, if any

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"RayResourcePool: world_size must be >= 1, got {self.world_size}")
        if self.num_cpus_per_worker <= 0:
            raise ValueError(
                f"RayResourcePool: num_cpus_per_worker must be > 0 (a process needs a CPU), "
                f"got {self.num_cpus_per_worker}"
            )
        if self.num_gpus_per_worker < 0:
            raise ValueError(
                f"RayResourcePool: num_gpus_per_worker must be >= 0, got {self.num_gpus_per_worker}"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(f"RayResourcePool: strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.nnodes < 1 or self.world_size % self.nnodes:
            raise ValueError(
                f"RayResourcePool: nnodes must be >= 1 and divide world_size ({self.world_size}), got {self.nnodes}"
            )
        if self.wait_timeout_s <= 0:
            raise ValueError(f"RayResourcePool: wait_timeout_s must be > 0, got {self.wait_timeout_s}")
        if not ray.is_initialized():
            raise RuntimeError(
                "RayResourcePool: Ray is not running; call verl.single_controller.ray_utils.init_ray() first"
            )
        per_bundle = self.world_size // self.nnodes if self.nnodes > 1 else 1
        bundle = {"CPU": float(self.num_cpus_per_worker * per_bundle)}
        if self.num_gpus_per_worker:
            bundle["GPU"] = float(self.num_gpus_per_worker * per_bundle)
        self.placement_group = placement_group(
            [dict(bundle) for _ in range(self.world_size // per_bundle)],
            strategy="STRICT_SPREAD" if self.nnodes > 1 else self.strategy,
        )
        if not self.placement_group.wait(timeout_seconds=self.wait_timeout_s):
            # Free the pending request, or it would grab the resources later and starve whoever retries.
            remove_placement_group(self.placement_group)
            raise ResourceUnavailableError(self._shortfall())

    def bundle_of(self, rank: int) -> int:
        """The placement-group bundle (with nnodes > 1: the node) that hosts `rank`."""
        return rank // (self.world_size // self.nnodes) if self.nnodes > 1 else rank

    def _shortfall(self) -> str:
        total, free = ray.cluster_resources(), ray.available_resources()
        alive = [node for node in ray.nodes() if node.get("Alive")]
        spread = (
            f"on {self.nnodes} distinct nodes ({self.world_size // self.nnodes} per node)"
            if self.nnodes > 1
            else f"with strategy {self.strategy}"
        )
        label = f" {self.name!r}" if self.name else ""
        return (
            f"resource pool{label} could not be reserved within {self.wait_timeout_s:g}s: asked for "
            f"{self.world_size} workers x ({self.num_cpus_per_worker:g} CPU, {self.num_gpus_per_worker:g} GPU) = "
            f"{self.world_size * self.num_cpus_per_worker:g} CPUs and {self.world_size * self.num_gpus_per_worker:g} "
            f"GPUs {spread}; the cluster has {total.get('CPU', 0):g} CPUs ({free.get('CPU', 0):g} free) and "
            f"{total.get('GPU', 0):g} GPUs ({free.get('GPU', 0):g} free) on {len(alive)} node(s). "
            f"Lower the pool's size or per-worker resources, free other pools, or start Ray with more resources."
        )

    def claim(self, group_name: str) -> None:
        """Record that `group_name` now runs on the bundles (a second group would never be scheduled)."""
        if self.owner is not None:
            raise RuntimeError(
                f"resource pool {self.name!r} already hosts worker group {self.owner!r}; shut it down first, or "
                f"put both roles in one process with create_colocated_worker_cls"
            )
        self.owner = group_name

    def release(self) -> None:
        """The owning group has stopped; the bundles can host another group."""
        self.owner = None

    def remove(self) -> None:
        """Give the reserved resources back to the cluster (the pool cannot be used afterwards)."""
        remove_placement_group(self.placement_group)
        self.owner = None
