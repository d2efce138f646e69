"""Worker groups: one Ray actor per rank of a resource pool, driven from the single controller.

`RayWorkerGroup(pool, WorkerCls, *args, **kwargs)` starts `pool.world_size` processes, sets each one's
torch.distributed environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and
then builds `WorkerCls(*args, **kwargs)` in every process at the same time, so the constructor may call
`torch.distributed.init_process_group` (gloo on CPU, nccl on GPU: the worker decides). MASTER_ADDR is
127.0.0.1 when every rank is on one host, else rank 0's node IP; MASTER_PORT is a port free on rank 0's node.
LOCAL_RANK counts the ranks on the same Ray node. With one whole GPU per rank, CUDA_VISIBLE_DEVICES lists the
group's GPUs on the node so that device cuda:LOCAL_RANK is the rank's own. `placements` records where every
rank runs (Ray node id, IP, pid, GPU ids, local rank). The worker class is a plain class; a small host actor
wraps it, which is why the same class also runs in-process without Ray.

Every method tagged with @register becomes a method of the group with the same name that spreads its
arguments over the ranks per the dispatch mode (see decorator.Dispatch) and gathers the results; untagged
methods are not reachable. A call blocks unless the method was registered with blocking=False; `.submit(...)`
never blocks. Both non-blocking forms return a `GroupFuture` whose `.get()` gathers like a blocking call.
A failure in any rank is raised in the driver as a `WorkerError` naming the method and the rank and carrying
the remote traceback, as soon as that rank fails (the others may still be waiting in a collective).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from verl.protocol import DataProto
from verl.single_controller.colocated import COLOCATED_ROLES_ATTR, RoleView, registered_methods
from verl.single_controller.decorator import Dispatch, dispatch_mode_of
from verl.single_controller.ray_utils import free_port
from verl.single_controller.resource_pool import RayResourcePool

LOOPBACK = "127.0.0.1"


class WorkerError(RuntimeError):
    """A worker method (or constructor) raised in a rank; the message holds the remote traceback."""

    def __init__(self, method: str, rank: int, world_size: int, remote: BaseException) -> None:
        super().__init__(f"{method} failed on rank {rank} of {world_size}:\n{remote}")
        self.method, self.rank, self.remote = method, rank, remote


class _WorkerHost:
    """The Ray actor behind one rank. It builds the user's worker only after the rank's env vars are set."""

    def __init__(self) -> None:
        self.worker: Any = None

    def placement(self) -> dict[str, Any]:
        """Where this process runs: Ray node id, node IP, pid, and the ids of the GPUs Ray gave it."""
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "gpus": [str(gpu) for gpu in ray.get_gpu_ids()],
        }

    def free_port(self) -> int:
        return free_port()

    def start(self, env: Mapping[str, str], cls: type, args: tuple, kwargs: dict) -> int:
        os.environ.update(env)
        self.worker = cls(*args, **kwargs)
        return os.getpid()

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        # Arguments travel as top-level call arguments so Ray resolves ObjectRefs put once by the driver.
        return getattr(self.worker, method)(*args, **kwargs)


def _gather(refs: Sequence[ray.ObjectRef], method: str, timeout: float | None) -> list[Any]:
    """Every rank's result in rank order; raises the first failure as soon as it arrives."""
    rank_of = {ref: rank for rank, ref in enumerate(refs)}
    results: dict[int, Any] = {}
    pending = list(refs)
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, pending = ray.wait(pending, num_returns=1, timeout=left)
        if not ready:
            ranks = sorted(rank_of[ref] for ref in pending)
            raise TimeoutError(f"{method}: ranks {ranks} did not finish within {timeout:g}s")
        rank = rank_of[ready[0]]
        try:
            results[rank] = ray.get(ready[0])
        except (RayTaskError, RayActorError) as err:
            raise WorkerError(method, rank, len(refs), err) from err
    return [results[rank] for rank in range(len(refs))]


@dataclass
class GroupFuture:
    """The pending result of a group call: `refs` (one ray ObjectRef per rank) and `get()` to gather them."""

    refs: list[ray.ObjectRef]
    method: str
    collect: Callable[[list[Any]], Any]

    def get(self, timeout: float | None = None) -> Any:
        """Wait (at most `timeout` seconds, None = no limit) and return what the blocking call returns."""
        return self.collect(_gather(self.refs, self.method, timeout))


def _put_if_large(value: Any) -> Any:
    """Store big arguments once in the object store, so a broadcast does not serialise them per rank."""
    return ray.put(value) if isinstance(value, (DataProto, torch.Tensor, np.ndarray)) else value


def _rows(data: DataProto, start: int, stop: int) -> DataProto:
    # A copy, not a slice: a pickled tensor view ships its whole storage, i.e. the full batch to every rank.
    return data.index(torch.arange(start, stop))


class _GroupMethod:
    """A group-level method: `m(...)` (blocking per the registration) and `m.submit(...)` (a GroupFuture)."""

    def __init__(self, group: RayWorkerGroup, name: str, mode: Dispatch, blocking: bool, doc: str | None):
        self._group, self.__name__, self.mode, self.blocking, self.__doc__ = group, name, mode, blocking, doc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        future = self.submit(*args, **kwargs)
        return future.get() if self.blocking else future

    def submit(self, *args: Any, **kwargs: Any) -> GroupFuture:
        return self._group._dispatch(self.__name__, self.mode, args, kwargs)

    def __repr__(self) -> str:
        return f"<group method {self.__name__} ({self.mode.name}, blocking={self.blocking})>"


class RayWorkerGroup:
    """`resource_pool.world_size` Ray actors running `worker_cls(*init_args, **init_kwargs)`, one per rank.

    worker_env: extra environment variables for the worker processes, set when the process starts (so e.g.
    PYTHONPATH takes effect for imports). The group owns the pool's bundles until `shutdown()`.
    """

    def __init__(
        self,
        resource_pool: RayResourcePool,
        worker_cls: type,
        *init_args: Any,
        worker_env: Mapping[str, str] | None = None,
        **init_kwargs: Any,
    ) -> None:
        if not isinstance(worker_cls, type):
            raise TypeError(f"RayWorkerGroup: worker_cls must be a plain class, got {worker_cls!r}")
        methods = registered_methods(worker_cls)
        reserved = {*dir(type(self)), "name", "pids", "placements", "worker_cls", "resource_pool"}
        clashes = sorted(name for name in methods if name in reserved)
        if clashes:
            raise ValueError(
                f"RayWorkerGroup: {worker_cls.__name__} methods {clashes} clash with the group's own"
            )
        self.name = f"{resource_pool.name or worker_cls.__name__}-{uuid.uuid4().hex[:6]}"
        self.worker_cls, self.resource_pool = worker_cls, resource_pool
        resource_pool.claim(self.name)
        try:
            self._hosts = self._create_hosts(worker_env)
            self.pids = self._start(init_args, init_kwargs)
        except BaseException:
            self.shutdown()
            raise
        for name, fn in methods.items():
            mode, blocking = dispatch_mode_of(fn)
            setattr(self, name, _GroupMethod(self, name, mode, blocking, fn.__doc__))

    @property
    def world_size(self) -> int:
        return self.resource_pool.world_size

    def _create_hosts(self, worker_env: Mapping[str, str] | None) -> list[Any]:
        pool = self.resource_pool
        options: dict[str, Any] = {"num_cpus": pool.num_cpus_per_worker, "num_gpus": pool.num_gpus_per_worker}
        if worker_env:
            options["runtime_env"] = {"env_vars": {str(k): str(v) for k, v in worker_env.items()}}
        host_cls = ray.remote(_WorkerHost)
        return [
            host_cls.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pool.placement_group, placement_group_bundle_index=pool.bundle_of(rank)
                ),
                **options,
            ).remote()
            for rank in range(pool.world_size)
        ]

    def _start(self, init_args: tuple, init_kwargs: dict) -> list[int]:
        """Set every rank's torch.distributed variables, then build the workers all at once; their pids."""
        self.placements = _gather([host.placement.remote() for host in self._hosts], "placement", None)
        ips = [p["node_ip"] for p in self.placements]
        nodes = [p["node_id"] for p in self.placements]
        port = _gather([self._hosts[0].free_port.remote()], "free_port", None)[0]
        # One host: loopback needs no routable interface. Several hosts: everyone dials rank 0's node.
        master = LOOPBACK if len(set(ips)) == 1 else ips[0]
        # Ray shows each actor only its own GPU, so every rank would be cuda:0. With one whole GPU per rank,
        # show each rank all its node's group GPUs ordered by local rank: cuda:LOCAL_RANK is then its own GPU
        # (what torchrun-style code expects) and NCCL sees its peers for direct GPU-to-GPU transfers.
        gpus = [p["gpus"] for p in self.placements]
        one_gpu_each = self.resource_pool.num_gpus_per_worker == 1 and all(len(g) == 1 for g in gpus)
        refs = []
        for rank, host in enumerate(self._hosts):
            same_node = [r for r, node in enumerate(nodes) if node == nodes[rank]]
            self.placements[rank]["local_rank"] = same_node.index(rank)
            env = {
                "RANK": str(rank),
                "WORLD_SIZE": str(self.world_size),
                "LOCAL_RANK": str(same_node.index(rank)),
                "LOCAL_WORLD_SIZE": str(len(same_node)),
                "MASTER_ADDR": master,
                "MASTER_PORT": str(port),
            }
            if one_gpu_each:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[r][0] for r in same_node)
            refs.append(host.start.remote(env, self.worker_cls, init_args, init_kwargs))
        return _gather(refs, f"{self.worker_cls.__name__}.__init__", None)

    def _dispatch(self, method: str, mode: Dispatch, args: tuple, kwargs: dict) -> GroupFuture:
        size = self.world_size
        collect: Callable[[list[Any]], Any] = list
        if mode in (Dispatch.ONE_TO_ALL, Dispatch.RANK_ZERO):
            args = tuple(_put_if_large(a) for a in args)
            kwargs = {k: _put_if_large(v) for k, v in kwargs.items()}
            per_rank = [(args, kwargs)] * size
            if mode is Dispatch.RANK_ZERO:
                collect = _first
        elif mode is Dispatch.ALL_TO_ALL:
            per_rank = _scatter_lists(method, size, args, kwargs)
        elif mode is Dispatch.DP_COMPUTE_PROTO:
            per_rank, collect = _split_protos(method, size, args, kwargs)
        else:
            raise ValueError(f"{method}: unsupported dispatch mode {mode!r}")
        refs = [
            host.call.remote(method, *a, **kw) for host, (a, kw) in zip(self._hosts, per_rank, strict=True)
        ]
        return GroupFuture(refs, method, collect)

    def spawn(self) -> dict[str, RoleView]:
        """Per-role views of a group over a `create_colocated_worker_cls` class."""
        roles = getattr(self.worker_cls, COLOCATED_ROLES_ATTR, None)
        if roles is None:
            raise TypeError(
                f"spawn: {self.worker_cls.__name__} is not a colocated worker class "
                f"(build it with create_colocated_worker_cls)"
            )
        return {role: RoleView(self, role, methods) for role, methods in roles.items()}

    def shutdown(self) -> None:
        """Kill the worker processes and hand the pool's bundles back (the pool itself stays reserved)."""
        for host in getattr(self, "_hosts", []):
            ray.kill(host, no_restart=True)
        self._hosts = []
        if self.resource_pool.owner == self.name:
            self.resource_pool.release()

    def __enter__(self) -> RayWorkerGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"RayWorkerGroup({self.name!r}, {self.worker_cls.__name__}, world_size={self.world_size})"


def _first(results: list[Any]) -> Any:
    return results[0]


def _scatter_lists(method: str, size: int, args: tuple, kwargs: dict) -> list[tuple[tuple, dict]]:
    """ALL_TO_ALL: every argument is a list/tuple of `size` items; rank r gets item r of each."""
    named = [(f"argument {i}", a) for i, a in enumerate(args)] + [
        (f"argument {k!r}", v) for k, v in kwargs.items()
    ]
    for label, value in named:
        if not isinstance(value, (list, tuple)) or len(value) != size:
            got = f"length {len(value)}" if isinstance(value, (list, tuple)) else type(value).__name__
            raise ValueError(
                f"{method} (ALL_TO_ALL): {label} must be a list of {size} items (one per rank), got {got}"
            )
    return [(tuple(a[r] for a in args), {k: v[r] for k, v in kwargs.items()}) for r in range(size)]


def _split_protos(
    method: str, size: int, args: tuple, kwargs: dict
) -> tuple[list[tuple[tuple, dict]], Callable[[list[Any]], Any]]:
    """DP_COMPUTE_PROTO: pad every DataProto to a multiple of `size`, give rank r chunk r; others to all."""
    protos = [v for v in (*args, *kwargs.values()) if isinstance(v, DataProto)]
    if not protos:
        raise TypeError(f"{method} (DP_COMPUTE_PROTO): needs at least one DataProto argument to split")
    lengths = {len(p) for p in protos}
    if len(lengths) != 1:
        raise ValueError(
            f"{method} (DP_COMPUTE_PROTO): DataProto arguments have different batch sizes {sorted(lengths)}"
        )
    batch = lengths.pop()
    pad = -batch % size
    chunk = (batch + pad) // size

    def pieces(value: Any) -> list[Any]:
        if not isinstance(value, DataProto):
            return [_put_if_large(value)] * size
        padded, _ = value.pad_to_divisor(size)
        return [_rows(padded, r * chunk, (r + 1) * chunk) for r in range(size)]

    split_args = [pieces(a) for a in args]
    split_kwargs = {k: pieces(v) for k, v in kwargs.items()}
    per_rank = [
        (tuple(a[r] for a in split_args), {k: v[r] for k, v in split_kwargs.items()}) for r in range(size)
    ]

    def collect(results: list[Any]) -> DataProto:
        bad = [r for r, out in enumerate(results) if not isinstance(out, DataProto)]
        if bad:
            raise TypeError(
                f"{method} (DP_COMPUTE_PROTO): ranks {bad} returned {type(results[bad[0]]).__name__}, not DataProto"
            )
        out = DataProto.concat(results)
        if pad == 0:
            return out
        # A worker may emit k rows per input row (e.g. n samples, interleaved); the pad rows' outputs are last.
        if len(out) % (batch + pad):
            raise ValueError(
                f"{method} (DP_COMPUTE_PROTO): got {len(out)} output rows for {batch + pad} padded input rows; "
                f"cannot drop the {pad} padding rows unless every input row yields the same number of rows"
            )
        return out.unpad(pad * (len(out) // (batch + pad)))

    return per_rank, collect
