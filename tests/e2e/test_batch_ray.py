"""vdtrack-batch on a local Ray cluster: two actors, each starting its own real ComfyUI on loopback; a batch of
synthetic clips with a 2-value sweep; one server killed mid-batch (on an event: the batch's first result, whichever
actor it came from; its actor still holds or is next given a job, which fails with the server and goes to the
other actor); Ctrl-C on the third success; every job completes exactly once; after the interruption, a --resume
run redoes nothing that finished; the killed actor comes back with a new server. Nothing waits on which server
is faster: fast jobs on an idle machine and slow ones on a busy machine take the same path."""
from __future__ import annotations

import json
import os
import signal

import pytest

from vdt_dev.comfy_server import COMFY_PYTHON, COMFYUI_DIR
from vdt_dev.paths import ROOT
from vdt_dev.make_synthetic import write_clip_mp4
from vdtrack.batch import cli

ray = pytest.importorskip("ray", reason="Ray is the optional 'distributed' extra (tools/setup.sh installs it)")
from vdtrack.batch.ray_runner import RayPool  # noqa: E402

pytestmark = pytest.mark.e2e

WORKFLOW = os.path.join(ROOT, "tools", "workflow_api", "vdtrack_video_flow_tracking.json")
FRAMES, SIZE, CLIPS = 6, 64, 4


def _server_files(base: str, suffix: str) -> dict[str, int]:
    """job key -> number of files ending in `suffix` under every server's output/raytest/ (all servers, the
    killed one included)."""
    counts: dict[str, int] = {}
    for server in os.listdir(base):
        root = os.path.join(base, server, "output", "raytest")
        for d, _, fs in os.walk(root):
            n = sum(f.endswith(suffix) for f in fs)
            if n:
                key = os.path.relpath(d, root).replace(os.sep, "/")
                counts[key] = counts.get(key, 0) + n
    return counts


def test_two_actors_kill_retry_resume(tmp_path):
    clips = tmp_path / "clips"
    for i in range(CLIPS):
        write_clip_mp4(str(clips / f"clip{i}.mp4"), seed=i, frames=FRAMES, size=(SIZE, SIZE))
        (clips / f"clip{i}.points.json").write_text(json.dumps([{"x": 16 + 4 * i, "y": 20}, {"x": 40, "y": 44}]))
    out, servers = tmp_path / "results", tmp_path / "servers"
    argv = [WORKFLOW, str(clips), "--out", str(out), "--workers", "2", "--comfyui", COMFYUI_DIR,
            "--comfy-python", COMFY_PYTHON, "--server-base", str(servers), "--cpu", "--quiet",
            "--set", "3.fb_threshold=1.5,3", "--max-queued", "2", "--prefix", "raytest", "--ray-cpus", "2",
            "--cpus-per-server", "0.5"]
    a = cli.parse_args(argv)
    pool = RayPool(cli.server_specs(a), a)
    try:
        pool.start()
        first_pids = {i: info["server_pid"] for i, info in pool.infos.items()}
        assert len(set(first_pids.values())) == 2
        killed: dict = {}
        run1: list[dict] = []

        def kill_then_interrupt(result):
            run1.append(result)
            if not killed:
                # kill on an event: the first result. The driver refills this actor before it sees the death,
                # so at least one job is sent to (or still sits on) the dead server
                os.kill(result["server_pid"], signal.SIGKILL)
                killed.update(pid=result["server_pid"], actor=result["actor"])
            ok = sum(r["status"] == "success" for r in run1)
            if killed and ok >= 3 and not killed.get("interrupted"):
                killed["interrupted"] = True
                raise KeyboardInterrupt        # what Ctrl-C does

        assert cli.run(a, on_result=kill_then_interrupt, pool=pool) == 130
        victim = killed.get("actor")
        assert victim is not None
        assert killed["pid"] == first_pids[victim]
        assert all(r["status"] == "success" for r in run1), run1
        finished = {r["key"] for r in run1}
        assert len(finished) == len(run1) >= 3          # nothing recorded twice
        # a job that was on the killed server ran again, on the other actor (or is left for --resume)
        retried = [r for r in run1 if r["retries"]]
        assert len(retried) <= 2 and all(r["actor"] == 1 - victim for r in retried)

        # a job failed with the server (that is what makes the driver restart an actor) and Ray restarted the
        # killed actor, which started a new server
        assert pool.wait_ready(timeout=300) == {0, 1}
        assert pool.restarts[victim] == 1 and pool.infos[victim]["server_pid"] not in first_pids.values()

        run2: list[dict] = []
        a2 = cli.parse_args(argv + ["--resume"])
        assert cli.run(a2, on_result=run2.append, pool=pool) == 0
    finally:
        pool.stop()
    redone = {r["key"] for r in run2}
    assert not redone & finished                       # nothing that finished ran again
    assert len(redone) == len(run2) == 2 * CLIPS - len(finished)
    assert {r["actor"] for r in run2} == {0, 1}          # the restarted actor took jobs
    # every job exactly once: one success line each in the manifest, one complete set of files each
    lines = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    ok = [l["key"] for l in lines if l["status"] == "success"]
    assert sorted(ok) == sorted(set(ok)) and len(ok) == 2 * CLIPS
    summary = json.loads((out / "summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["success"] * (2 * CLIPS)
    for job in summary["jobs"]:
        files = os.listdir(out / job["key"])
        assert sum(f.endswith(".png") for f in files) == FRAMES and sum(f.endswith(".webp") for f in files) == 1
    # on the servers: a job finished in the first run has exactly one tracks file (nothing redone); the jobs of
    # the second run have theirs too (an interrupted try may have left an extra one)
    npz = _server_files(str(servers), ".npz")
    assert all(npz.get(k) == 1 for k in finished), npz
    assert all(npz.get(k, 0) >= 1 for k in redone), npz


@pytest.fixture
def ray_head():
    """A Ray head of our own, started the way a user starts one (`ray start --head`) on loopback, on free ports,
    with token authentication (this Ray's default for `ray start`; drivers get the token through RAY_AUTH_TOKEN).
    Yields (address, environment for a driver, the head's temp folder). Stopped in the end by ending its own
    process group (`ray stop` would stop every Ray on the machine); its workers exit with its raylet."""
    import secrets
    import shutil
    import subprocess
    import sys
    import tempfile

    from vdtrack.batch.server import free_port

    ports = iter(free_port() for _ in range(9))
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_USAGE_STATS_ENABLED="0")
    temp = tempfile.mkdtemp(prefix="vdtray")          # short: Ray's socket paths must fit in 107 bytes
    port = next(ports)
    cmd = [os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block", f"--port={port}",
           "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
           f"--dashboard-port={next(ports)}", f"--dashboard-agent-listen-port={next(ports)}",
           f"--dashboard-agent-grpc-port={next(ports)}", f"--metrics-export-port={next(ports)}",
           f"--runtime-env-agent-port={next(ports)}", f"--node-manager-port={next(ports)}",
           f"--object-manager-port={next(ports)}", f"--temp-dir={temp}", "--disable-usage-stats"]
    head = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    try:
        started = []
        for line in head.stdout:                       # ends when it is up (or when it exits)
            started.append(line)
            if "Ray runtime started" in line:
                break
        assert head.poll() is None, "".join(started)
        yield f"127.0.0.1:{port}", env, temp
    finally:
        os.killpg(head.pid, signal.SIGKILL)            # this head's group only (gcs, raylet, monitors)
        head.wait()
        head.stdout.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_address_joins_an_existing_cluster(ray_head, server, tmp_path):
    """`vdtrack-batch --ray-address` (the user's command, in its own process with the cluster's token): the
    driver joins the head started above, its actor attaches to the session's server, every job runs once; the
    head's logs hold that driver process's log (it joined this cluster, it started none)."""
    import glob
    import subprocess
    import sys

    address, env, temp = ray_head
    clips = tmp_path / "clips"
    for i in range(2):
        write_clip_mp4(str(clips / f"clip{i}.mp4"), seed=i, frames=FRAMES, size=(SIZE, SIZE))
        (clips / f"clip{i}.points.json").write_text(json.dumps([{"x": 20, "y": 20 + 8 * i}]))
    out = tmp_path / "results"
    driver = subprocess.Popen([sys.executable, "-m", "vdtrack.batch", WORKFLOW, str(clips), "--out", str(out),
                               "--server", server.url, "--ray-address", address, "--prefix", "raytest_address",
                               "--quiet", "--no-download"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    text = driver.communicate()[0]
    assert driver.returncode == 0, text
    assert "2/2 jobs succeeded" in text, text
    summary = json.loads((out / "summary.json").read_text())
    assert sorted((j["key"], j["status"]) for j in summary["jobs"]) == [("clip0", "success"), ("clip1", "success")]
    assert glob.glob(os.path.join(temp, "session_*", "logs", f"python-core-driver-*_{driver.pid}.log")), \
        os.listdir(glob.glob(os.path.join(temp, "session_*", "logs"))[0])
