"""vdtrack-batch: run one ComfyUI workflow over clips and parameter sweeps, locally or on a Ray cluster.

    vdtrack-batch WORKFLOW [CLIPS ...] --out RESULTS [--set NODE.input=a,b,c ...] [--resume]
                  [--server URL ... | --comfyui DIR [--workers N]] [--ray-address ADDR | --no-ray]

WORKFLOW is a UI-format workflow (as saved from the canvas) or an API-format prompt. CLIPS are folders (their
clip files, not recursing) and/or clip files; beside a clip NAME.mp4, NAME.points.json (query points, the text
a `points` input takes) and NAME.mask.png (a first-frame mask) are used when present. Each --set sweeps one
input over comma-separated values (a JSON list for values with commas); several --set make a grid. Jobs are
clips x grid. Each job's outputs land in RESULTS/<job>/ (and on the server under <prefix>/<job>/), with
job.json; RESULTS/summary.csv and summary.json list every job (status, seconds, outputs, metrics of the report
nodes) and the metrics aggregated per setting and per swept value; RESULTS/manifest.jsonl records finished
jobs so that --resume skips them.

Servers: --server URL attaches to running ComfyUIs; otherwise --workers N servers are started from --comfyui
(default: the ComfyUI this pack is installed in). With Ray installed each server belongs to one Ray actor:
Ray spreads the jobs over them, a job whose server dies runs again on another one, and the dead actor is
restarted (with a fresh server). --ray-address joins a cluster (`ray start` on each machine); the default is
a local one. Without Ray (or with --no-ray), one server runs every job.
Exit code: 0 all jobs succeeded, 1 some failed, 2 bad arguments, 130 cancelled.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .jobs import IMAGE_EXT, VIDEO_EXT, BatchError, Manifest, Setting, format_table, list_clips, make_jobs, \
    prompt_spec, write_summary
from .runner import Plan, Recorder, run_local
from .server import ComfyServer, start_server
from .workflow import WorkflowError, check_input, coerce_value, load_workflow, node_types, resolve_node, \
    split_target, to_api

LOADERS = {"LoadVideo": ("file", VIDEO_EXT), "LoadImage": ("image", IMAGE_EXT)}   # class -> (input, files)
MASK_LOADERS = {"LoadImageMask": "image"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="vdtrack-batch", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n")[5:]))
    ap.add_argument("workflow", help="UI-format workflow or API-format prompt (.json)")
    ap.add_argument("clips", nargs="*", help="folders of clips and/or clip files (none: the workflow makes its "
                                             "own input, e.g. a synthetic clip)")
    ap.add_argument("--out", required=True, help="results folder (one subfolder per job, summary, manifest)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.input=a,b,c",
                    help="sweep an input (node id or unique class type); repeat for a grid")
    ap.add_argument("--resume", action="store_true", help="skip the jobs the results folder's manifest lists "
                                                          "as finished with the same workflow, values and clip")
    g = ap.add_argument_group("servers")
    g.add_argument("--server", action="append", default=[], metavar="URL",
                   help="a running ComfyUI to use (repeat for several, each on its own Ray actor)")
    g.add_argument("--comfyui", help="ComfyUI folder to start servers from (default: $COMFYUI_DIR, or the "
                                     "ComfyUI this pack is installed in)")
    g.add_argument("--comfy-python", help="python that runs the started servers (default: this one)")
    g.add_argument("--server-base", help="give each started server a private base folder under this one, with "
                                         "this pack linked in (default: the ComfyUI's own folders)")
    g.add_argument("--workers", type=int, default=1, help="servers to start (default: 1)")
    g.add_argument("--cpu", action="store_true", help="start the servers with --cpu")
    g.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="one more argument for the started servers (repeatable)")
    g.add_argument("--max-queued", type=int, default=2,
                   help="prompts waiting or running on one server at once (default: 2)")
    g.add_argument("--timeout", type=float, default=3600.0, help="seconds per job from queueing (default: 3600)")
    g.add_argument("--retries", type=int, default=2,
                   help="times a job whose server died runs again on another server (Ray; default: 2)")
    r = ap.add_argument_group("Ray")
    r.add_argument("--ray-address", help="join this Ray cluster (default: start a local one)")
    r.add_argument("--no-ray", action="store_true", help="do not use Ray even if it is installed")
    r.add_argument("--cpus-per-server", type=float, default=1.0, help="Ray CPUs each server's actor reserves")
    r.add_argument("--gpus-per-server", type=float, default=None,
                   help="Ray GPUs each server's actor reserves (default: 1 when the cluster has GPUs, else 0)")
    r.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: "
                                                              "servers x cpus-per-server)")
    w = ap.add_argument_group("workflow")
    w.add_argument("--input-node", help="node that takes the clip (default: the first LoadVideo, else LoadImage)")
    w.add_argument("--input-name", help="its input that takes the file name (default: file / image)")
    w.add_argument("--points-input", action="append", default=[], metavar="NODE.input",
                   help="inputs that take a clip's NAME.points.json text (default: every 'points' text input)")
    w.add_argument("--mask-input", metavar="NODE.input",
                   help="input that takes a clip's NAME.mask.png (default: the LoadImageMask node's image)")
    w.add_argument("--prefix", default="vdtrack_batch",
                   help="server-side output folder: every filename_prefix becomes PREFIX/<job>/<node's own "
                        "name> (default: %(default)s)")
    w.add_argument("--no-prefix", action="store_true", help="keep the workflow's filename_prefix values")
    w.add_argument("--subfolder", default="vdtrack_batch", help="input subfolder clips are uploaded to")
    w.add_argument("--no-download", action="store_true",
                   help="leave output files on the servers (the results folder gets job.json only)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    if a.max_queued < 1 or a.workers < 1 or a.retries < 0:
        ap.error("--max-queued and --workers must be at least 1, --retries at least 0")
    if not a.no_prefix and (not a.prefix.strip("/ ") or ".." in a.prefix.replace("\\", "/").split("/")
                            or a.prefix.startswith("/")):
        ap.error("--prefix must be a relative folder name inside the output folder")
    return a


def choose_input(types: dict[str, str], node: str | None, name: str | None) -> tuple[str, str, tuple] | None:
    """(node id, input, clip extensions) of the clip's input, or None when the workflow has no loader and none
    was named."""
    if node is None:
        for nid, kind in types.items():
            if kind in LOADERS:
                return nid, name or LOADERS[kind][0], LOADERS[kind][1]
        return None
    nid = resolve_node(types, str(node), "--input-node")
    kind = types[nid]
    if name is None:
        if kind not in LOADERS:
            raise WorkflowError(f"--input-node {node} is a {kind}: name the input that takes the file name with "
                                "--input-name NAME")
        name = LOADERS[kind][0]
    return nid, name, LOADERS[kind][1] if kind in LOADERS else VIDEO_EXT + IMAGE_EXT


def parse_sets(texts: list[str], types: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    out, seen = [], set()
    for text in texts:
        target, sep, values = text.partition("=")
        if not sep:
            raise WorkflowError(f"--set {text}: expected NODE.input=a,b,c")
        node, name = split_target(target.strip(), f"--set {text}")
        nid = resolve_node(types, node, f"--set {text}")
        if (nid, name) in seen:
            raise WorkflowError(f"--set {text}: node {nid} input {name} is swept twice")
        seen.add((nid, name))
        values = values.strip()
        if values.startswith("["):
            try:
                items = json.loads(values)
            except ValueError as e:
                raise WorkflowError(f"--set {text}: not a JSON list: {e}") from None
            items = [v if isinstance(v, str) else json.dumps(v) for v in items]
        else:
            items = [v.strip() for v in values.split(",")]
        if not items or any(v == "" for v in items):
            raise WorkflowError(f"--set {text}: empty value")
        out.append((nid, name, items))
    return out


def build_plan(a, wf: dict, object_info: dict | None, clip_input, sets) -> tuple[Plan, list[Setting]]:
    """The API prompt with everything the command line names checked against it."""
    prompt = to_api(wf, object_info)
    types = {k: v["class_type"] for k, v in prompt.items()}
    if clip_input:
        check_input(prompt, clip_input[0], clip_input[1], "--input-name")
    settings = []
    for nid, name, items in sets:
        check_input(prompt, nid, name, f"--set {nid}.{name}")
        current = prompt[nid]["inputs"][name]
        settings.append(Setting(nid, name, tuple(coerce_value(v, current, f"--set {nid}.{name}") for v in items)))
    points = []
    for text in a.points_input:
        node, name = split_target(text, f"--points-input {text}")
        nid = resolve_node(types, node, f"--points-input {text}")
        check_input(prompt, nid, name, f"--points-input {text}")
        points.append((nid, name))
    if not a.points_input:
        points = [(nid, "points") for nid, n in prompt.items() if isinstance(n["inputs"].get("points"), str)]
    mask = None
    if a.mask_input:
        node, name = split_target(a.mask_input, f"--mask-input {a.mask_input}")
        mask = (resolve_node(types, node, f"--mask-input {a.mask_input}"), name)
        check_input(prompt, *mask, f"--mask-input {a.mask_input}")
    else:
        mask = next(((nid, MASK_LOADERS[n["class_type"]]) for nid, n in prompt.items()
                     if n["class_type"] in MASK_LOADERS), None)
    plan = Plan(prompt=prompt, input=clip_input[:2] if clip_input else None, points=points, mask=mask,
                prefix=None if a.no_prefix else a.prefix.strip("/"), subfolder=a.subfolder, timeout=a.timeout,
                download=not a.no_download)
    return plan, settings


def want_ray(a) -> bool:
    if a.no_ray:
        if a.ray_address:
            raise BatchError("--ray-address and --no-ray contradict each other")
        return False
    try:
        import ray  # noqa: F401
    except ImportError:
        if a.ray_address or a.workers > 1 or len(a.server) > 1:
            raise BatchError("several servers (or --ray-address) need Ray: pip install 'vdtrack[distributed]'") \
                from None
        return False
    return True


def server_specs(a) -> list[dict]:
    """What each server's owner attaches to or starts (plain data, sent to Ray actors)."""
    if a.server:
        return [{"url": u} for u in a.server]
    return [{"comfyui": a.comfyui, "python": a.comfy_python, "base": a.server_base, "cpu": a.cpu,
             "extra_args": list(a.server_arg)} for _ in range(a.workers)]


def main(argv: list[str] | None = None, on_result=None) -> int:
    """The command; `on_result(result)` is called after each finished job is recorded (for embedding)."""
    return run(parse_args(argv), on_result)


def run(a: argparse.Namespace, on_result=None, pool=None) -> int:
    """The batch the parsed arguments describe; the exit code. `pool`: a started RayPool to use (and leave
    running) instead of starting servers."""
    try:
        return _run(a, on_result, pool)
    except (BatchError, WorkflowError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(a, on_result, given_pool) -> int:
    wf = load_workflow(a.workflow)
    types = node_types(wf)
    clip_input = choose_input(types, a.input_node, a.input_name)
    if a.clips and clip_input is None:
        found = ", ".join(f"{k} ({v})" for k, v in types.items())
        raise BatchError("the workflow has no LoadVideo or LoadImage node: choose the node that takes the clip "
                         f"with --input-node ID and its input with --input-name NAME (nodes: {found})")
    if not a.clips and a.input_node:
        raise BatchError("--input-node names the clip's input but no clips were given")
    clips = list_clips(a.clips, clip_input[2]) if a.clips else []
    sets = parse_sets(a.sets, types)
    out = os.path.abspath(a.out)
    manifest = Manifest(out)
    if manifest.exists() and not a.resume:
        raise BatchError(f"{out} holds a batch already (manifest.jsonl): add --resume to continue it, or choose "
                         "another --out")
    os.makedirs(out, exist_ok=True)
    specs = server_specs(a)
    pool = given_pool
    if pool is None and want_ray(a):
        from .ray_runner import RayPool
        pool = RayPool(specs, a)
    elif pool is None:
        if len(specs) > 1:
            raise BatchError("without Ray one server runs the batch: give one --server, or --workers 1")
        pool = None
    t0 = time.monotonic()
    client = None
    try:
        if pool is None:
            if not specs[0].get("url"):
                print("starting ComfyUI ...", file=sys.stderr, flush=True)
            client = start_server(specs[0])
            object_info = client.object_info()
        else:
            object_info = pool.start() if given_pool is None else pool.object_info()
        plan, settings = build_plan(a, wf, object_info, clip_input, sets)
        jobs = make_jobs(clips, settings, prompt_spec(plan.prompt))
        done = manifest.finished(jobs) if a.resume else {}
        if done:
            print(f"resuming: {len(done)} of {len(jobs)} jobs finished already", file=sys.stderr)
        rec = Recorder(out, jobs, plan, done, progress=not a.quiet, on_result=on_result)
        todo = [j for j in jobs if j.key not in done]
        header = {"workflow": os.path.abspath(a.workflow), "results": out, "prompt": plan.prompt,
                  "settings": [{"node": s.node, "input": s.name, "values": list(s.values)} for s in settings],
                  "clip_input": list(plan.input) if plan.input else None}
        status = "cancelled"
        try:
            if pool is None:
                run_local(client, plan, todo, rec, max_queued=a.max_queued)
            else:
                pool.run(plan, todo, rec)
            status = "finished"
        except KeyboardInterrupt:
            print("\ncancelled: the batch's prompts were taken off the queues; --resume continues it",
                  file=sys.stderr)
        except OSError as e:
            status = "server lost"
            print(f"\nerror: server not reachable ({e}); --resume continues the batch", file=sys.stderr)
        finally:
            rec.close()
            results = rec.unfinished(jobs, status, status="cancelled" if status == "cancelled" else "error")
            header.update(seconds=round(time.monotonic() - t0, 3), state=status)
            jpath, cpath = write_summary(out, header, results, settings)
        print(format_table(results, settings))
        print(f"summary: {cpath} and {jpath}")
    finally:
        if pool is not None and given_pool is None:
            pool.stop()
        elif isinstance(client, ComfyServer):
            client.stop()
    if status == "cancelled":
        return 130
    return 0 if status == "finished" and all(r["status"] == "success" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
