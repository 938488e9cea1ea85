"""The Ray executor: one trial = one Ray task on a cluster, behind the same Executor interface as the local ones, so
the run directory, rows, resume, report and compare are those of a local run (the driver still writes every row).

- Resources: a GPU trial asks for whole GPUs (``num_gpus``; Ray gives it those devices alone, in a fresh process:
  ``max_calls=1``), a CPU trial for its threads as ``num_cpus``. A suite may pin trials to one GPU model (Ray's
  ``accelerator_type``).
- Timed trials (latency) take one of a node's timing slots (default one per node): the driver pins each timed trial to
  a node with a free slot (node affinity), so two timed trials never share a node's CPUs or PCIe bus. The driver
  keeps the count rather than a custom Ray resource: a resource must be declared by every ``ray start``, and a node
  without it would leave timed trials unschedulable for ever. Count-only and accuracy-only trials pack freely.
- Data goes into the object store once (``ray.put``); each worker process fetches it once and keeps it.
- At most about twice the cluster's slots are in flight; results come back with ``ray.wait`` as each finishes.
- Failures: a Python error is caught by run_trial (error / nan / oom as locally); Ray's memory monitor → oom; a dead
  worker or node → crashed; past the trial timeout (counted from the task's own start, not its time in the queue)
  the task is force-cancelled → timeout. No retries unless the suite asks.
- Each row says where it ran: node_id, node_ip, hostname, cuda_visible_devices, started_at / finished_at (unix time,
  read inside the task) and env_fingerprint (history.fingerprint of the node's environment); the nodes'
  environments come back through ``environments()`` for env.json.
"""
from __future__ import annotations

import os
import socket
import time
from collections import deque
from typing import Any

from mmbench.errors import UserError
from mmbench.execute import failure as _failure
from mmbench.plan import Trial, task_key
from mmbench.trial import TrialResult

INSTALL = "pip install 'mmbench[ray]'"
# CPU tasks on a GPU node see every GPU unless Ray overrides CUDA_VISIBLE_DEVICES for tasks asking for none.
JOB_ENV = {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1"}
START_POLL_S = 0.25  # how often the driver reads the tasks' start times (only with a trial timeout)


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"the ray executor needs Ray, which is not installed: {INSTALL}") from None
    return ray


def resolve_address(cli: str | None, suite: str | None) -> str | None:
    """--address, else RAY_ADDRESS, else the suite's ``execution.address``; None: a Ray started here for the run."""
    return cli or os.environ.get("RAY_ADDRESS") or suite or None


def _probe(address: str) -> None:
    """ray.init retries an address nothing answers at for minutes: knock first, and fail in one line."""
    if address == "auto" or address.startswith(("local", "anyscale://")):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"Ray address '{address}' is not host:port, ray://host:port or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(f"no Ray cluster answers at {address}: {exc.strerror or exc}") from None


def is_timed(trial: Trial) -> bool:
    return trial.measure.latency is not None


def is_gpu(trial: Trial) -> bool:
    return trial.device.startswith("cuda")


class _Starts:
    """Where each task writes its start time, so the driver's timeout counts from the start, not the queue."""

    def __init__(self):
        self.pending: dict[str, float] = {}

    def started(self, trial_id: str) -> None:
        self.pending[trial_id] = time.monotonic()

    def drain(self) -> dict[str, float]:
        out, self.pending = self.pending, {}
        return out


class RayExecutor:
    def __init__(self, address: str | None = None, trial_timeout: float | None = None, *, timing_slots: int = 1,
                 accelerator: str | None = None, gpus: int = 1, retries: int = 0,
                 init_args: dict[str, Any] | None = None):
        if int(gpus) != gpus or gpus < 1:
            raise UserError(f"a GPU trial takes whole GPUs: gpus={gpus} (give 1, 2, …)", key="execution.gpus")
        self.address, self.timeout = address, trial_timeout
        self.timing_slots, self.accelerator, self.retries = timing_slots, accelerator, retries
        self.gpus_per_trial = int(gpus)
        self.init_args = init_args or {}
        self._ray = None
        self._owns_ray = False      # we started (or connected) the Ray session and end it in close()
        self._nodes: dict[str, dict] = {}
        self._envs: dict[str, dict] = {}
        self._inflight: dict[Any, tuple[Trial, str | None]] = {}  # ref → (trial, node it was pinned to)
        self._remote = None
        self._starts = None  # the actor tasks report their start to (with a trial timeout)

    # --- connection --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect (or reuse this process's Ray session). UserError, before anything is written, when Ray is missing
        or nothing answers at the address."""
        if self._ray is not None:
            return
        ray = import_ray()
        if ray.is_initialized():  # a notebook or a test already connected: use that session, leave it open
            here = ray.get_runtime_context().gcs_address
            if self.address and self.address != "auto" and self.address.split("://")[-1] != here:
                raise UserError(f"this process is already connected to the Ray cluster at {here}, not "
                                f"{self.address}")
        else:
            import logging

            if self.address:
                _probe(self.address)
            try:
                ray.init(address=self.address, runtime_env={"env_vars": JOB_ENV}, log_to_driver=False,
                         logging_level=logging.WARNING, include_dashboard=False if not self.address else None,
                         **self.init_args)
            except ConnectionError as exc:
                raise UserError(f"no Ray cluster at {self.address or 'RAY_ADDRESS'}: "
                                f"{str(exc).splitlines()[0]}") from None
            self._owns_ray = True
        self._ray = ray
        self._refresh_nodes()

    def _refresh_nodes(self) -> None:
        self._nodes = {n["NodeID"]: n for n in self._ray.nodes() if n.get("Alive")}

    def environments(self) -> dict[str, dict]:
        """node id → the environment its tasks reported (for env.json's ``nodes``)."""
        return dict(self._envs)

    # --- resources ---------------------------------------------------------------------------------------------
    def options(self, trial: Trial) -> dict[str, Any]:
        """The Ray task options of a trial (without the node a timed trial is pinned to)."""
        threads = trial.threads or trial.measure.threads or 1  # the count the driver resolved
        opts: dict[str, Any] = {"num_cpus": threads, "max_retries": self.retries, "retry_exceptions": False}
        if is_gpu(trial):
            opts.update(num_gpus=self.gpus_per_trial, max_calls=1)  # whole GPUs; a fresh process: no poisoned context
        else:
            opts["num_gpus"] = 0
        if self.accelerator:
            opts["accelerator_type"] = self.accelerator
        return opts

    def _fits(self, node: dict, opts: dict[str, Any]) -> bool:
        res = node.get("Resources", {})
        return (res.get("CPU", 0) >= opts["num_cpus"] and res.get("GPU", 0) >= opts["num_gpus"]
                and (not opts.get("accelerator_type") or f"accelerator_type:{opts['accelerator_type']}" in res))

    def check(self, trials: list[Trial]) -> None:
        """A trial no node could ever run would wait for ever: refuse the run before anything is written."""
        self.start()
        for t in trials:
            opts = self.options(t)
            if not any(self._fits(n, opts) for n in self._nodes.values()):
                what = [f"{opts['num_cpus']} CPU(s)"] + ([f"{opts['num_gpus']} GPU(s)"] if opts["num_gpus"] else []) \
                    + ([f"accelerator_type {opts['accelerator_type']}"] if opts.get("accelerator_type") else [])
                raise UserError(f"no node of the Ray cluster has {' and '.join(what)} for trial {t.label} "
                                f"(nodes: {self._describe()})", key="execution")

    def _describe(self) -> str:
        out = []
        for n in self._nodes.values():
            r = n.get("Resources", {})
            acc = [k.split(":", 1)[1] for k in r if k.startswith("accelerator_type:")]
            out.append(f"{n.get('NodeManagerAddress')} {r.get('CPU', 0):g} CPU {r.get('GPU', 0):g} GPU"
                       + (f" {'/'.join(acc)}" if acc else ""))
        return "; ".join(out) or "none alive"

    def _slots(self, trials: list[Trial]) -> int:
        """Trials the cluster runs at once (roughly): per node, its GPUs or its CPUs over the smallest request."""
        cpus = min((self.options(t)["num_cpus"] for t in trials), default=1)
        gpu = any(is_gpu(t) for t in trials)
        per = self.gpus_per_trial
        return max(1, sum(int(n["Resources"].get("GPU", 0) // per if gpu else n["Resources"].get("CPU", 0) // cpus)
                          for n in self._nodes.values()))

    def _node_for(self, opts: dict[str, Any], timed_on: dict[str, int]) -> str | None:
        """A node with a free timing slot that can run the trial (the least busy one), or None."""
        free = [nid for nid, n in self._nodes.items()
                if timed_on.get(nid, 0) < self.timing_slots and self._fits(n, opts)]
        return min(free, key=lambda nid: timed_on.get(nid, 0), default=None)

    # --- running -----------------------------------------------------------------------------------------------
    def run(self, trials, tasks, on_start=None):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.start()
        ray = self._ray
        if self._remote is None:  # max_calls cannot be set per call: one remote function per kind of trial
            self._remote = {0: ray.remote(_trial_task), 1: ray.remote(max_calls=1)(_trial_task)}
        trials = list(trials)
        timed = deque(t for t in trials if is_timed(t))
        free = deque(t for t in trials if not is_timed(t))
        refs = {key: ray.put(data) for key, data in tasks.items()}  # once, never per trial
        starts = self._starts = ray.remote(num_cpus=0)(_Starts).remote() if self.timeout else None
        cap = 2 * self._slots(trials)
        timed_on: dict[str, int] = {}
        started: dict[Any, float] = {}  # ref → when the driver heard the task start (its own clock: no skew)
        by_id: dict[str, Any] = {}
        drain, next_drain = None, 0.0
        refreshed = time.monotonic()
        while timed or free or self._inflight:
            # Plan order within each kind; a timed trial waiting for a node's timing slot holds back no untimed one.
            while len(self._inflight) < cap and (timed or free):
                node = self._node_for(self.options(timed[0]), timed_on) if timed else None
                if node is None and not free:
                    break
                trial = timed.popleft() if node is not None else free.popleft()
                opts = self.options(trial)
                if node is not None:
                    opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
                    timed_on[node] = timed_on.get(node, 0) + 1
                remote = self._remote[opts.pop("max_calls", 0)]
                ref = remote.options(**opts).remote(trial.to_dict(), [refs[task_key(trial.task)]], starts)
                self._inflight[ref] = (trial, node)
                by_id[trial.id] = ref
                if on_start and not starts:
                    on_start(trial)
            if not self._inflight:  # timed trials left and no node can take them: the nodes they fit died
                self._refresh_nodes()
                if timed and self._node_for(self.options(timed[0]), timed_on) is None:
                    t = timed.popleft()
                    yield t, _failure(t, "crashed", f"no alive node can run it ({self._describe()})")
                continue
            timeout = None
            if starts is not None:
                if drain is None and time.monotonic() >= next_drain:
                    drain = starts.drain.remote()
                timeout = START_POLL_S if drain is not None else max(0.0, next_drain - time.monotonic())
            try:
                ready, _ = ray.wait(list(self._inflight) + ([drain] if drain is not None else []), num_returns=1,
                                    timeout=timeout)
            except (ConnectionError, ray.exceptions.RaySystemError) as exc:  # the head went away
                raise UserError(f"lost the Ray cluster ({str(exc).splitlines()[0][:200]}): every finished trial is "
                                "recorded; finish the run with `mmbench run SUITE --resume RUN_DIR --executor ray`") \
                    from None
            if drain is not None and drain in ready:
                heard = time.monotonic()
                for tid in ray.get(drain):
                    ref = by_id.pop(tid, None)
                    if ref in self._inflight:
                        started[ref] = heard
                        if on_start:
                            on_start(self._inflight[ref][0])
                drain, next_drain = None, heard + START_POLL_S
            done = [r for r in ready if r in self._inflight]
            if done and len(done) < len(self._inflight):  # more may be finished: take every ready one at once
                more, _ = ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=0)
                done = list(dict.fromkeys(done + more))
            for ref in done:
                trial, node = self._inflight.pop(ref)
                started.pop(ref, None)
                by_id.pop(trial.id, None)
                self._release(node, timed_on)
                yield trial, self._result(trial, ref)
            now = time.monotonic()
            for ref, t0 in list(started.items()):
                if now - t0 > self.timeout and ref in self._inflight:
                    trial, node = self._inflight.pop(ref)
                    started.pop(ref)
                    ray.cancel(ref, force=True)
                    self._release(node, timed_on)
                    yield trial, _failure(trial, "timeout", f"no result after {self.timeout:g} s; task cancelled")
            if now - refreshed > 10:  # nodes come and go
                self._refresh_nodes()
                refreshed = now
        self._kill_starts()

    def _kill_starts(self) -> None:
        if self._starts is not None:
            try:
                self._ray.kill(self._starts)
            except Exception:
                pass
            self._starts = None

    @staticmethod
    def _release(node: str | None, timed_on: dict[str, int]) -> None:
        if node is not None:
            timed_on[node] -= 1

    def _result(self, trial: Trial, ref) -> TrialResult:
        ray = self._ray
        try:
            row, raw, env = ray.get(ref)
        except Exception as exc:  # the task never returned: Ray says why
            status, error = ray_failure(exc)
            return _failure(trial, status, error)
        nid = row.get("node_id")
        if nid and nid not in self._envs:
            self._envs[nid] = env
        return TrialResult(row, raw)

    def close(self) -> None:
        """Cancel what is in flight (Ctrl-C, an error), end the Ray session we started."""
        if self._ray is None:
            return
        for ref in list(self._inflight):
            try:
                self._ray.cancel(ref, force=True)
            except Exception:
                pass
        self._inflight.clear()
        self._kill_starts()
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False
        self._ray = None


def ray_failure(exc: BaseException) -> tuple[str, str]:
    """(status, error) for an exception ray.get raised instead of a result."""
    import ray.exceptions as rx

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if isinstance(exc, rx.OutOfMemoryError):
        return "oom", f"killed by Ray's memory monitor: {first}"
    if isinstance(exc, rx.TaskCancelledError):
        return "crashed", f"task cancelled: {first}"
    if isinstance(exc, (rx.WorkerCrashedError, rx.NodeDiedError, rx.LocalRayletDiedError, rx.ObjectLostError)) \
            or type(exc).__name__ in ("ActorDiedError", "NodeDiedError"):
        return "crashed", f"worker died ({type(exc).__name__}): {first}"
    if isinstance(exc, rx.RayTaskError):  # an exception outside run_trial (e.g. a module that does not import)
        cause = getattr(exc, "cause", None)
        if isinstance(cause, MemoryError):
            return "oom", f"CPU out of memory: {cause}"
        return "error", f"{type(cause).__name__ if cause else 'error'}: {str(cause or exc).splitlines()[0][:300]}"
    return "crashed", f"{type(exc).__name__}: {first}"


# --- inside the task (a worker process on some node) -------------------------------------------------------------
_DATA: dict[str, Any] = {}  # object ref hex → task data, fetched once per worker process
_ENV: dict[tuple, dict] = {}


def _node_env(device: str) -> dict:
    key = (device,)
    if key not in _ENV:
        from mmbench.measure.env import environment

        _ENV[key] = environment(device)
    return _ENV[key]


def _trial_task(trial_dict: dict, data_ref: list, starts) -> tuple[dict, dict, dict]:
    import copy
    import platform

    import ray

    from mmbench.history import row_fingerprint
    from mmbench.trial import run_trial, warm_up

    gpus = ray.get_gpu_ids()
    if not gpus:  # a CPU trial must not touch the node's GPUs (see JOB_ENV); CUDA is not initialised yet here
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    key = data_ref[0].hex()
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = copy.deepcopy(ray.get(data_ref[0]))  # writable arrays (the store's are read-only)
    trial = Trial.from_dict(trial_dict)
    ctx = ray.get_runtime_context()
    env = {**_node_env(trial.device), "node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address()}
    warm_up()  # as a local worker does, before the trial's clock (and its timeout) starts
    t0 = time.time()
    if starts is not None:
        starts.started.remote(trial_dict["id"])
    result = run_trial(trial, _DATA[key])
    row = result.row
    row.update(node_id=env["node_id"], node_ip=env["node_ip"], hostname=platform.node(),
               cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
               env_fingerprint=row_fingerprint(env, row),
               started_at=t0, finished_at=time.time())
    return row, result.raw, env
