"""The plain-data side of vdtrack-batch: folder names that never collide, the sweep grid, the manifest that
--resume reads, value coercion and the per-value aggregation of report metrics."""
from __future__ import annotations

import csv
import json
import os
import threading

import pytest

from vdtrack.batch.jobs import Manifest, Setting, aggregate, clip_keys, list_clips, make_jobs, unique_keys, \
    write_summary
from vdtrack.batch.client import ComfyClient, PromptCancelled
from vdtrack.batch.runner import Plan, Recorder, job_prompt, run_local
from vdtrack.batch.workflow import WorkflowError, coerce_value, rewrite_prefixes


def test_clip_keys_never_collide():
    keys = clip_keys(["d/a b.mp4", "d/a_b.mp4", "d/A_B.mov", "e/a_b.mkv", "d/ok.mp4", "d/é.mp4"])
    assert len({k.lower() for k in keys}) == 6
    assert keys[4] == "ok"                             # a safe, unique stem is kept as it is
    assert keys[0].startswith("a_b-") and keys[1].startswith("a_b-") and keys[2].startswith("A_B-")
    assert clip_keys(["d/a b.mp4", "d/a_b.mp4"])[1] == "a_b"   # a clash with a changed name hashes only that one
    assert all(set(k) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+=,") for k in keys)
    assert clip_keys(["x/../..mp4"])[0] not in ("", ".", "..")
    with pytest.raises(ValueError):
        unique_keys(["a", "b"], ["same", "same"])


def test_grid_jobs_and_keys(tmp_path):
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"x")
    (tmp_path / "c.points.json").write_text("[]")
    settings = [Setting("3", "fb_threshold", (1.5, 3.0)), Setting("1", "method", ("dis", "farneback"))]
    jobs = make_jobs([str(clip)], settings, "wf")
    assert [j.key for j in jobs] == ["c/3.fb_threshold=1.5,1.method=dis", "c/3.fb_threshold=1.5,1.method=farneback",
                                     "c/3.fb_threshold=3.0,1.method=dis", "c/3.fb_threshold=3.0,1.method=farneback"]
    assert all(j.points == str(tmp_path / "c.points.json") and j.mask is None for j in jobs)
    assert len({j.spec for j in jobs}) == 4
    assert make_jobs([str(clip)], settings, "wf")[0].spec == jobs[0].spec
    assert make_jobs([str(clip)], settings, "other workflow")[0].spec != jobs[0].spec
    assert [j.key for j in make_jobs([], [], "wf")] == ["job"]
    # sidecars are not clips
    assert list_clips([str(tmp_path)], (".mp4", ".json")) == [str(clip)]


def test_manifest_resume_rules(tmp_path):
    m = Manifest(str(tmp_path))
    jobs = make_jobs([], [Setting("1", "seed", (0, 1, 2))], "wf")
    m.append({"key": jobs[0].key, "spec": jobs[0].spec, "status": "success"})
    m.append({"key": jobs[1].key, "spec": jobs[1].spec, "status": "error"})
    m.append({"key": jobs[2].key, "spec": "an older workflow", "status": "success"})
    with open(m.path, "a") as f:
        f.write('{"key": "torn')                          # a line cut by a killed run
    assert list(m.finished(jobs)) == [jobs[0].key]
    m.append({"key": jobs[1].key, "spec": jobs[1].spec, "status": "success"})     # the last line wins
    assert sorted(m.finished(jobs)) == sorted([jobs[0].key, jobs[1].key])


def test_coercion_and_prompt_edits():
    assert coerce_value("3", 1, "x") == 3 and coerce_value("2.5", 1.0, "x") == 2.5
    assert coerce_value("true", False, "x") is True and coerce_value("dis", "farneback", "x") == "dis"
    for bad, cur in (("2.5", 1), ("nan", 1.0), ("yes", True)):
        with pytest.raises(WorkflowError, match="x:"):
            coerce_value(bad, cur, "x")
    base = {"1": {"class_type": "LoadVideo", "inputs": {"file": "x.mp4"}},
            "2": {"class_type": "T", "inputs": {"points": "[]", "fb_threshold": 1.5}},
            "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "vdtrack/overlay"}}}
    job = make_jobs([], [Setting("2", "fb_threshold", (3.0,))], "wf")[0]
    p = job_prompt(Plan(prompt=base, input=("1", "file"), points=[("2", "points")], prefix="run"), job,
                   "up/c.mp4", None, '[{"x": 1, "y": 2}]')
    assert p["1"]["inputs"]["file"] == "up/c.mp4" and p["2"]["inputs"]["fb_threshold"] == 3.0
    assert p["2"]["inputs"]["points"] == '[{"x": 1, "y": 2}]'
    assert p["3"]["inputs"]["filename_prefix"] == f"run/{job.key}/overlay"
    assert base["3"]["inputs"]["filename_prefix"] == "vdtrack/overlay" and base["2"]["inputs"]["points"] == "[]"
    assert rewrite_prefixes(json.loads(json.dumps(base)), "a/b")["3"]["inputs"]["filename_prefix"] == "a/b/overlay"
    # a mask beside the clip goes into the mask loader; without a prefix the workflow's own ones stay
    base["4"] = {"class_type": "LoadImageMask", "inputs": {"image": "x.png", "channel": "alpha"}}
    p = job_prompt(Plan(prompt=base, input=("1", "file"), mask=("4", "image"), prefix=None), job, "up/c.mp4",
                   "up/c.mask.png", None)
    assert p["4"]["inputs"]["image"] == "up/c.mask.png" and p["2"]["inputs"]["points"] == "[]"
    assert p["3"]["inputs"]["filename_prefix"] == "vdtrack/overlay"


def test_aggregate_per_setting_and_value():
    settings = [Setting("1", "seed", (0, 1)), Setting("2", "method", ("a", "b"))]
    res = []
    for seed, method, aj, status in ((0, "a", 10.0, "success"), (0, "b", 20.0, "success"),
                                     (1, "a", 30.0, "success"), (1, "b", None, "error")):
        res.append({"key": f"{seed}{method}", "values": {"1.seed": seed, "2.method": method}, "status": status,
                    "seconds": 1.0, "metrics": {"7": {"average_jaccard": aj}} if aj is not None else {}})
    agg = aggregate(res, settings)
    by_method = {v["value"]: v for v in agg["by_value"]["2.method"]}
    assert by_method["a"]["metrics"]["7.average_jaccard"] == 20.0 and by_method["a"]["succeeded"] == 2
    assert by_method["b"]["metrics"]["7.average_jaccard"] == 20.0 and by_method["b"]["jobs"] == 2
    assert by_method["b"]["succeeded"] == 1
    assert [r["metrics"].get("7.average_jaccard") for r in agg["by_setting"]] == [10.0, 20.0, 30.0, None]


# ------------------------------------------------------------------------------------------------ cancelling

class _FakeServer(ComfyClient):
    """A ComfyUI that queues prompts and never finishes them (a long job), until they are deleted."""

    def __init__(self):
        super().__init__("http://fake")
        self.lock = threading.Lock()
        self.waiting: list[str] = []
        self.deleted: set[str] = set()
        self.two_queued = threading.Event()
        self.finishes = None             # the one prompt that finishes, once two are queued

    def upload(self, path, subfolder="", name=None):
        return name

    def queue(self, prompt, workflow=None, client_id=None):
        with self.lock:
            pid = f"p{len(self.waiting) + len(self.deleted)}"
            self.waiting.append(pid)
            if len(self.waiting) >= 2:
                self.two_queued.set()
        return 200, {"prompt_id": pid}

    def history(self, prompt_id):
        if prompt_id == self.finishes and self.two_queued.is_set():
            return {"status": {"completed": True, "status_str": "success", "messages": []}, "outputs": {}}
        return None

    def queued_ids(self):
        with self.lock:
            return set(self.waiting)

    def server_alive(self):
        return True

    def cancel(self, prompt_ids):
        with self.lock:
            for pid in prompt_ids:
                if pid in self.waiting:
                    self.waiting.remove(pid)
                    self.deleted.add(pid)


def test_wait_ends_on_cancel_and_on_a_deleted_prompt():
    server = _FakeServer()
    _, body = server.queue({})
    stop = threading.Event()
    stop.set()
    with pytest.raises(PromptCancelled, match="cancelled"):          # still queued, but the caller gave up
        server.wait(body["prompt_id"], timeout=1e9, cancel=stop)
    server.cancel([body["prompt_id"]])
    with pytest.raises(PromptCancelled, match="taken off the server's queue"):   # never finishes: not waited
        server.wait(body["prompt_id"], timeout=1e9, gone_check_s=0.0)


def test_ctrl_c_ends_the_local_runners_waits(tmp_path):
    """Ctrl-C (KeyboardInterrupt in the driver, raised from on_result like test_batch_ray does) while a prompt
    waits on the server: its worker stops waiting and ends, so the command exits (it used to poll /history
    for --timeout seconds)."""
    server = _FakeServer()
    server.finishes = "p0"
    plan = Plan(prompt={"1": {"class_type": "X", "inputs": {"seed": 0}}}, timeout=1e9, download=False)
    jobs = make_jobs([], [Setting("1", "seed", (0, 1, 2, 3))], "spec")

    def ctrl_c(result):
        raise KeyboardInterrupt                  # what Ctrl-C does

    rec = Recorder(str(tmp_path), jobs, plan, {}, progress=False, on_result=ctrl_c)
    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        run_local(server, plan, jobs, rec, max_queued=2)
    rec.close()
    workers = [t for t in set(threading.enumerate()) - before if t.name.startswith("vdtrack-batch")]
    for t in workers:
        t.join(timeout=60)                       # a bound for a broken fix only: they end at their next poll
    assert not [t for t in workers if t.is_alive()]
    assert server.waiting == ["p0"] and server.deleted == {"p1"}      # the waiting one taken off the queue
    assert [r and r["status"] for r in rec.results] == ["success", None, None, None]


def test_summary_counts_retries_not_attempts(tmp_path):
    """A job that succeeded on its first run was listed with attempts=0: the column counts reruns."""
    res = [{"key": "a", "clip": None, "values": {}, "status": "success", "seconds": 1.0, "outputs": [],
            "retries": 0},
           {"key": "b", "clip": None, "values": {}, "status": "success", "seconds": 1.0, "outputs": [],
            "retries": 1}]
    _, cpath = write_summary(str(tmp_path), {}, res, [])
    with open(cpath, newline="") as f:
        rows = list(csv.DictReader(f))
    assert "attempts" not in rows[0] and [r["retries"] for r in rows] == ["0", "1"]
