"""The batch on Ray: one actor per ComfyUI server, Ray placing the actors (and their GPUs) on the cluster's
nodes; the driver hands each actor a few jobs at a time, runs a job whose server died again on another
actor, and has Ray restart the dead actor (which starts a fresh server). Needs `pip install vdtrack[distributed]`.
"""
from __future__ import annotations

import collections
import math
import os
import threading

import ray
from ray.exceptions import RayActorError, RayTaskError

from .jobs import BatchError, Job
from .runner import Plan, Recorder, _result, execute
from .server import start_server

ACTOR_START_TRIES = 3      # an actor whose server fails to start this many times in a row is given up
DRAIN_S = 120.0            # after Ctrl-C, how long finished jobs are still collected


@ray.remote
class ServerActor:
    """Owns one ComfyUI: attached to spec['url'] or started on this actor's node (and its GPU, which Ray
    exposes through CUDA_VISIBLE_DEVICES). Ray restarts the actor when it dies; __init__ then starts a new
    server. Runs up to max_concurrency jobs at once (they wait in the server's own queue)."""

    def __init__(self, spec: dict, index: int):
        self.index = index
        self.server = start_server(spec, index, die_with_parent=True)
        self.queued: set[str] = set()
        self.stopping = False
        self.stop_waiting = threading.Event()      # set by cancel_all: running jobs stop waiting at once
        self.lock = threading.Lock()

    @ray.method(max_task_retries=-1)        # asked while Ray restarts the actor: answered once it is back
    def info(self) -> dict:
        return {"index": self.index, "url": self.server.url, "node": ray.get_runtime_context().get_node_id(),
                "server_pid": getattr(getattr(self.server, "proc", None), "pid", None)}

    def object_info(self) -> dict:
        return self.server.object_info()

    def _queued(self, pid: str) -> None:
        with self.lock:
            self.queued.add(pid)
            stop = self.stopping
        if stop:                          # queued after cancel_all(): take it off again
            self.server.cancel([pid])

    def run(self, plan: Plan, job: Job, data: dict | None) -> dict:
        if self.stopping:
            return _result(job, "cancelled", None, error="cancelled")
        try:
            result = execute(self.server, plan, job, data, on_queued=self._queued, cancel=self.stop_waiting)
        except OSError:                 # ServerGone included: the server is not answering. The actor exits
            os._exit(1)                 # as a crash, so Ray restarts it with a new server and the driver
            #                             sends this job (failed with RayActorError) to another actor
        with self.lock:
            self.queued.discard(result.get("prompt_id"))
        return {**result, "server": self.server.url, "actor": self.index,
                "server_pid": self.info()["server_pid"]}

    def cancel_all(self) -> None:
        """Stop taking jobs; take this batch's prompts off the server's queue and interrupt the running one."""
        with self.lock:
            self.stopping = True
            pids = list(self.queued)
        self.stop_waiting.set()
        if pids:
            try:
                self.server.cancel(pids)
            except OSError:
                pass

    def resume(self) -> None:
        with self.lock:
            self.stopping = False
            self.stop_waiting.clear()

    def stop(self) -> None:
        stop = getattr(self.server, "stop", None)
        if stop:
            stop()


class RayPool:
    """The actors of one or more batches. start() brings them up and returns /object_info of the first;
    run() executes jobs; wait_ready() waits for restarting actors; stop() stops the servers it started
    and disconnects from Ray if it connected."""

    def __init__(self, specs: list[dict], args):
        self.specs = [dict(s) for s in specs]
        self.a = args
        self.actors: list = []
        self.infos: dict[int, dict] = {}
        self.ready: set[int] = set()
        self.restarting: dict = {}            # ObjectRef of info() -> actor index
        self.start_fail = collections.Counter()
        self.restarts = collections.Counter()
        self.started_ray = False

    # ---------------------------------------------------------------------------------------------- set-up
    def start(self) -> dict:
        a = self.a
        if not ray.is_initialized():
            if a.ray_address:
                ray.init(address=a.ray_address, log_to_driver=False, logging_level="WARNING")
            else:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                cpus = a.ray_cpus or max(1, math.ceil(len(self.specs) * a.cpus_per_server))
                ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=256 << 20,
                         log_to_driver=False, logging_level="WARNING")
            self.started_ray = True
        gpus = a.gpus_per_server
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 and not a.cpu and not a.server else 0
        for spec in self.specs:
            if not spec.get("url") and gpus == 0:
                spec["cpu"] = True
        self.opts = dict(num_cpus=a.cpus_per_server, num_gpus=gpus, max_restarts=-1, max_task_retries=0,
                         max_concurrency=a.max_queued + 3)
        self.actors = [ServerActor.options(**self.opts).remote(spec, i) for i, spec in enumerate(self.specs)]
        for i, ref in enumerate([act.info.remote() for act in self.actors]):
            try:
                self.infos[i] = ray.get(ref)
            except (RayActorError, RayTaskError) as e:
                raise BatchError(f"server {i} did not start: {_cause(e)}") from None
            self.ready.add(i)
        return self.object_info()

    def object_info(self) -> dict:
        return ray.get(self.actors[min(self.ready)].object_info.remote())

    def stop(self) -> None:
        if self.actors:
            try:
                ray.get([act.stop.remote() for act in self.actors], timeout=60)
            except Exception:          # an actor already gone has nothing to stop
                pass
            for act in self.actors:
                ray.kill(act, no_restart=True)
            self.actors = []
        if self.started_ray:
            ray.shutdown()

    def _restart(self, i: int) -> None:
        """Actor i died (its server was gone, so it exited): Ray restarts it; info() answers once it is back."""
        if i in self.ready:
            self.ready.discard(i)
            self.restarts[i] += 1
            self.restarting[self.actors[i].info.remote()] = i

    def _restarted(self, ref) -> None:
        i = self.restarting.pop(ref)
        try:
            self.infos[i] = ray.get(ref)
            self.ready.add(i)
            self.start_fail[i] = 0
        except (RayActorError, RayTaskError) as e:
            # its server did not start, so __init__ failed and Ray gave the actor up: try a new actor
            self.start_fail[i] += 1
            if self.start_fail[i] < ACTOR_START_TRIES:
                ray.kill(self.actors[i], no_restart=True)
                self.actors[i] = ServerActor.options(**self.opts).remote(self.specs[i], i)
                self.restarting[self.actors[i].info.remote()] = i
            else:
                print(f"server {i} given up after {ACTOR_START_TRIES} failed starts: {_cause(e)}")

    def wait_ready(self, timeout: float | None = None) -> set[int]:
        """Wait until no actor is restarting (each restart ends ready or given up); the ready actors."""
        while self.restarting:
            done, _ = ray.wait(list(self.restarting), num_returns=1, timeout=timeout)
            if not done:
                break
            self._restarted(done[0])
        return set(self.ready)

    # ---------------------------------------------------------------------------------------------- running
    def _data(self, job: Job, i: int) -> dict | None:
        """The job's files as bytes when actor i runs on another node than this driver."""
        if self.infos.get(i, {}).get("node") == ray.get_runtime_context().get_node_id():
            return None
        data = {}
        for role in ("clip", "mask", "points"):
            path = getattr(job, role)
            if path:
                with open(path, "rb") as f:
                    data[role] = f.read()
        return data

    def run(self, plan: Plan, jobs: list[Job], rec: Recorder) -> None:
        """Every job once: each actor holds at most --max-queued jobs; a job whose server died goes to another
        actor (up to --retries times) while Ray restarts the dead one. Ctrl-C (KeyboardInterrupt, also
        from rec's on_result) cancels the batch's prompts, still records jobs that finish meanwhile, and
        re-raises."""
        n, cap = len(self.actors), self.a.max_queued
        plan_ref = ray.put(plan)
        pending = collections.deque(jobs)
        tries = collections.Counter()
        avoid: dict[str, set] = collections.defaultdict(set)
        load = collections.Counter()
        inflight: dict = {}          # ObjectRef -> (job, actor index)
        ray.get([self.actors[i].resume.remote() for i in self.ready])
        try:
            while pending or inflight:
                for i in sorted(self.ready, key=lambda k: load[k]):
                    while load[i] < cap and pending:
                        job = next((j for j in pending if i not in avoid[j.key] or len(avoid[j.key]) >= n), None)
                        if job is None:
                            break
                        pending.remove(job)
                        inflight[self.actors[i].run.remote(plan_ref, job, self._data(job, i))] = (job, i)
                        load[i] += 1
                if not inflight and not self.restarting:
                    raise BatchError("every server is gone: the batch cannot go on (--resume continues it)")
                done, _ = ray.wait(list(inflight) + list(self.restarting), num_returns=1)
                if done[0] in self.restarting:
                    self._restarted(done[0])
                    continue
                job, i = inflight.pop(done[0])
                load[i] -= 1
                try:
                    result = ray.get(done[0])
                except RayActorError as e:
                    tries[job.key] += 1
                    avoid[job.key].add(i)
                    if tries[job.key] > self.a.retries:
                        rec.record({**_result(job, "error", None, error=f"server lost {tries[job.key]} times: "
                                                                       f"{_cause(e)}"), "retries": tries[job.key] - 1})
                    else:
                        pending.appendleft(job)
                    self._restart(i)
                    continue
                rec.record({**result, "retries": tries[job.key]})
        except KeyboardInterrupt:
            self._cancel(inflight, rec, tries)
            raise

    def _cancel(self, inflight: dict, rec: Recorder, tries) -> None:
        for i in list(self.ready):
            self.actors[i].cancel_all.remote()
        left = dict(inflight)
        while left:
            done, _ = ray.wait(list(left), num_returns=1, timeout=DRAIN_S)
            if not done:
                break
            job, i = left.pop(done[0])
            try:
                result = ray.get(done[0])
            except RayActorError:
                self._restart(i)
                continue
            if result.get("status") == "success":      # finished before the cancel reached it: keep it
                rec.record({**result, "retries": tries[job.key]})


def _cause(e: Exception) -> str:
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip()
    return text.splitlines()[-1][:300] if text else type(cause).__name__
