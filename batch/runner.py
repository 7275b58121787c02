"""Running the jobs of a batch: one job on one server (`execute`, what a Ray actor calls too), the driver's
bookkeeping (`Recorder`: results folder, manifest, progress bar) and the local runner (one server, a few
prompts in flight)."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from .client import ComfyClient, PromptCancelled, ServerGone, rejection_message, summarize_history
from .jobs import Job, Manifest
from .workflow import rewrite_prefixes


@dataclass
class Plan:
    """How a Job becomes a prompt; plain data so it travels to Ray actors."""
    prompt: dict                                  # the workflow as an API prompt (not modified)
    input: tuple[str, str] | None = None          # (node id, input) that takes the clip
    points: list = field(default_factory=list)    # [(node id, input)] that take a clip's points file text
    mask: tuple[str, str] | None = None           # (node id, input) that takes a clip's uploaded mask file
    prefix: str | None = "vdtrack_batch"          # server-side output folder of the batch (None: keep prefixes)
    subfolder: str = "vdtrack_batch"              # input subfolder clips are uploaded to
    timeout: float = 3600.0                       # seconds per job from queueing
    download: bool = True                         # fetch the job's output files back to the results folder


def job_prompt(plan: Plan, job: Job, clip_value: str | None, mask_value: str | None,
               points_text: str | None) -> dict:
    """A copy of the plan's prompt with the job's clip, mask, points, swept values and output prefix."""
    prompt = json.loads(json.dumps(plan.prompt))
    if plan.input and clip_value is not None:
        prompt[plan.input[0]]["inputs"][plan.input[1]] = clip_value
    if plan.mask and mask_value is not None:
        prompt[plan.mask[0]]["inputs"][plan.mask[1]] = mask_value
    if points_text is not None:
        for nid, name in plan.points:
            prompt[nid]["inputs"][name] = points_text
    for label, value in job.values.items():
        nid, name = label.rsplit(".", 1)
        prompt[nid]["inputs"][name] = value
    if plan.prefix:
        rewrite_prefixes(prompt, f"{plan.prefix}/{job.key}")
    return prompt


def _upload(client: ComfyClient, plan: Plan, path: str | None, data: bytes | None, name: str) -> str | None:
    """Upload a clip or mask (from its path here, or its bytes sent to a remote actor) under `name`."""
    if path is None:
        return None
    if data is None:
        return client.upload(path, plan.subfolder, name=name)
    with tempfile.TemporaryDirectory(prefix="vdtrack_upload_") as tmp:
        local = os.path.join(tmp, name)
        with open(local, "wb") as f:
            f.write(data)
        return client.upload(local, plan.subfolder, name=name)


def execute(client: ComfyClient, plan: Plan, job: Job, data: dict | None = None, on_queued=None,
            cancel=None) -> dict:
    """Run one job on one server: upload its clip/mask, queue, wait, collect outputs. Returns the result
    (status success | error | rejected, seconds, outputs, texts, metrics, error, and the output files' bytes
    under 'files' when plan.download). Raises ServerGone / OSError when the server is unreachable, so the
    caller can run the job elsewhere. `data` holds the clip/mask/points bytes when the files are not here.
    `cancel` (a threading.Event): once set, the job stops waiting, takes its prompt off the queue and ends
    'cancelled'; a prompt someone else took off the queue ends 'cancelled' too."""
    data = data or {}
    t0 = time.monotonic()
    try:
        stem = job.key.split("/")[0]                   # the clip's unique key: uploads never collide
        clip_value = _upload(client, plan, job.clip, data.get("clip"),
                             stem + os.path.splitext(job.clip or "")[1].lower())
        mask_value = _upload(client, plan, job.mask, data.get("mask"), stem + ".mask.png")
    except RuntimeError as e:                          # the server refused the file
        return _result(job, "rejected", time.monotonic() - t0, error=str(e))
    points_text = None
    if job.points:
        raw = data.get("points")
        if raw is None:
            with open(job.points, "rb") as f:
                raw = f.read()
        points_text = raw.decode("utf-8", errors="replace")
    code, body = client.queue(job_prompt(plan, job, clip_value, mask_value, points_text))
    if code != 200 or not isinstance(body, dict) or "prompt_id" not in body or body.get("node_errors"):
        return _result(job, "rejected", time.monotonic() - t0, error=rejection_message(body))
    pid = body["prompt_id"]
    if on_queued:
        on_queued(pid)
    try:
        entry = client.wait(pid, plan.timeout, cancel=cancel)
    except TimeoutError as e:
        client.cancel([pid])
        return _result(job, "error", time.monotonic() - t0, error=str(e), prompt_id=pid)
    except PromptCancelled as e:
        if cancel is not None and cancel.is_set():
            client.cancel([pid])         # queued after the batch's cancel went out: take it off too
        return _result(job, "cancelled", time.monotonic() - t0, error=str(e), prompt_id=pid)
    s = summarize_history(entry)
    files = []
    if plan.download:
        for sub, name in s["files"]:
            files.append((sub, name, client.fetch(name, sub)))
    return _result(job, s["status"], s["seconds"] if s["seconds"] is not None else time.monotonic() - t0,
                   outputs=[f"{sub}/{name}" if sub else name for sub, name in s["files"]], texts=s["texts"],
                   metrics=s["metrics"], error=s["error"], prompt_id=pid, files=files)


def _result(job: Job, status: str, seconds: float | None, **extra) -> dict:
    return {"key": job.key, "clip": job.clip, "values": job.values, "spec": job.spec, "status": status,
            "seconds": seconds, "outputs": [], "texts": [], "metrics": {}, "error": None, "prompt_id": None,
            "retries": 0, **extra}


class Recorder:
    """The driver's side of finished jobs: writes each job's files and job.json into results/<job key>/,
    appends the manifest line, moves the progress bar, keeps the results in the jobs' order."""

    def __init__(self, folder: str, jobs: list[Job], plan: Plan, done: dict[str, dict], progress: bool = True,
                 on_result=None):
        self.folder = folder
        self.plan = plan
        self.manifest = Manifest(folder)
        self.order = {j.key: i for i, j in enumerate(jobs)}
        self.results: list[dict | None] = [None] * len(jobs)
        for key, rec in done.items():
            self.results[self.order[key]] = {**rec, "skipped": True}
        self.on_result = on_result
        self.lock = threading.Lock()
        from tqdm import tqdm
        self.bar = tqdm(total=len(jobs), initial=len(done), unit="job", file=sys.stderr, disable=not progress,
                        dynamic_ncols=True, desc="batch")
        self.failed = 0

    def record(self, result: dict) -> None:
        files = result.pop("files", [])
        with self.lock:
            job_dir = os.path.join(self.folder, *result["key"].split("/"))
            shutil.rmtree(job_dir, ignore_errors=True)    # a redo replaces what a failed try left (no job's
            #                                               key is a prefix of another's)
            os.makedirs(job_dir, exist_ok=True)
            strip = f"{self.plan.prefix}/{result['key']}/" if self.plan.prefix else ""
            local = []
            for sub, name, content in files:
                rel = f"{sub}/{name}" if sub else name
                rel = rel[len(strip):] if strip and rel.startswith(strip) else rel
                dest = os.path.join(job_dir, *rel.split("/"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with open(dest, "wb") as f:
                    f.write(content)
                local.append(rel)
            result["downloaded"] = sorted(local)
            result["finished_at"] = time.time()
            with open(os.path.join(job_dir, "job.json"), "w", encoding="utf-8") as f:
                json.dump(result, f, indent=1)
            self.manifest.append(result)
            self.results[self.order[result["key"]]] = result
            self.failed += result["status"] != "success"
            self.bar.set_postfix(failed=self.failed, refresh=False)
            self.bar.update(1)
        if self.on_result:
            self.on_result(result)

    def close(self) -> None:
        self.bar.close()

    def unfinished(self, jobs: list[Job], why: str, status: str = "cancelled") -> list[dict]:
        """All results in the jobs' order, jobs that did not finish marked with `status` and `why`."""
        return [r if r is not None else {**_result(j, status, None, error=why)}
                for j, r in zip(jobs, self.results)]


def run_local(client: ComfyClient, plan: Plan, jobs: list[Job], recorder: Recorder, max_queued: int = 2) -> None:
    """Every job on one server, at most `max_queued` prompts waiting or running there at once. On Ctrl-C the
    batch's prompts are taken off the server's queue; on a dead server the remaining jobs stay unfinished."""
    queued: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()       # set on Ctrl-C: the workers stop waiting, so the process can exit

    def one(job: Job) -> dict:
        def note(pid):
            with lock:
                queued.add(pid)
        if stop.is_set():
            return _result(job, "cancelled", None, error="cancelled")
        res = execute(client, plan, job, on_queued=note, cancel=stop)
        with lock:
            queued.discard(res.get("prompt_id"))
        return res

    todo = list(jobs)
    pool = ThreadPoolExecutor(max_workers=max(1, max_queued), thread_name_prefix="vdtrack-batch")
    running = {}
    try:
        while todo or running:
            while todo and len(running) < max(1, max_queued):
                job = todo.pop(0)
                running[pool.submit(one, job)] = job
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                running.pop(fut)
                recorder.record(fut.result())       # ServerGone / OSError propagate: the server is gone
    except BaseException:
        stop.set()
        for fut in running:
            fut.cancel()
        with lock:
            pids = list(queued)
        if pids:
            try:
                client.cancel(pids)
            except OSError:
                pass
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["Plan", "Recorder", "execute", "job_prompt", "run_local", "ServerGone"]
