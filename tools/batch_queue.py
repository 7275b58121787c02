"""Run one workflow over every clip in a folder, through ComfyUI's own HTTP API.

    .vdt/venv/bin/python tools/batch_queue.py WORKFLOW CLIPS_DIR [--server http://127.0.0.1:8188]
        [--input-node ID] [--input-name NAME] [--prefix vdtrack_batch | --no-prefix]
        [--max-queued 4] [--timeout 3600] [--json summary.json] [--base-dir DIR]

WORKFLOW is a UI-format file (workflows/*.json, as saved from the canvas) or an API-format prompt. Each clip is
uploaded into ComfyUI's input folder (POST /upload/image, subfolder `vdtrack_batch`), the workflow's loader
input is pointed at it (default: the first LoadVideo node's `file`, else the first LoadImage node's `image`),
every `filename_prefix` becomes PREFIX/<clip stem>/<the node's own prefix name> so each clip's outputs land in
their own folder, and the prompts are queued with at most --max-queued of them waiting or running at once.
Prints one line per finished clip and a summary table; the exit code is 1 if any clip failed.

Without --server it starts its own headless ComfyUI with this pack linked in (tools/comfy_server.py); its base
folder (input/output) is kept and printed. Everything the batch writes goes through the server, so it lands
inside ComfyUI's input and output folders only (plus the --json summary, if asked for).
Standard library only (plus this folder's comfy_server / workflow_convert).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workflow_convert import FRONTEND_ONLY, ui_to_api  # noqa: E402

VIDEO_EXT = (".mp4", ".webm", ".mov", ".mkv", ".avi")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
LOADERS = {"LoadVideo": ("file", VIDEO_EXT), "LoadImage": ("image", IMAGE_EXT)}   # class -> (input, files)
UPLOAD_SUBFOLDER = "vdtrack_batch"


class BatchError(Exception):
    """A problem with the command line, the workflow or the clip folder (reported without a traceback)."""


# ------------------------------------------------------------------------------------------------ HTTP client

class Client:
    """The few ComfyUI endpoints the batch needs."""

    def __init__(self, url: str, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=self.timeout) as r:
            return json.loads(r.read() or b"null")

    def post(self, path: str, payload: dict) -> tuple[int, object]:
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                body = r.read()
                return r.status, (json.loads(body) if body.strip() else None)
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body or b"null")
            except ValueError:
                return e.code, body.decode(errors="replace")

    def upload(self, path: str, subfolder: str) -> str:
        """POST the file to /upload/image (any file type) into input/<subfolder>; returns the name to give a
        loader ('subfolder/name'). ComfyUI keeps an identical file and renames a different one with the same
        name, so nothing already there is overwritten."""
        boundary = uuid.uuid4().hex
        name = os.path.basename(path)
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')

        def field(key: str, value: str) -> bytes:
            return (f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n').encode()

        head = (field("type", "input") + field("subfolder", subfolder)
                + (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{quoted}"\r\n'
                   f"Content-Type: application/octet-stream\r\n\r\n").encode("utf-8"))
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = len(head) + os.path.getsize(path) + len(tail)

        def body():                      # streamed: clips can be large
            yield head
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk
            yield tail

        req = urllib.request.Request(self.url + "/upload/image", data=body(), method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                              "Content-Length": str(size)})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                info = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"upload of {name} refused by the server (HTTP {e.code})") from None
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def queue(self, prompt: dict, client_id: str) -> tuple[int, object]:
        return self.post("/prompt", {"prompt": prompt, "client_id": client_id})

    def history(self, prompt_id: str) -> dict | None:
        """The finished /history entry of a prompt, or None while it is waiting or running."""
        h = self.get(f"/history/{urllib.parse.quote(prompt_id)}")
        entry = (h or {}).get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        return None

    def cancel(self, prompt_ids: list[str]) -> None:
        """Take waiting prompts off the queue and interrupt one of them if it is running."""
        self.post("/queue", {"delete": prompt_ids})
        for pid in prompt_ids:
            self.post("/interrupt", {"prompt_id": pid})


# ------------------------------------------------------------------------------------------------ workflow

def load_workflow(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            wf = json.load(f)
    except FileNotFoundError:
        raise BatchError(f"workflow not found: {path}") from None
    except ValueError as e:
        raise BatchError(f"workflow {path} is not valid JSON: {e}") from None
    if not isinstance(wf, dict) or not (is_ui_format(wf) or _is_api_format(wf)):
        raise BatchError(f"workflow {path}: neither a UI-format workflow (with 'nodes') nor an API-format prompt")
    return wf


def is_ui_format(wf: dict) -> bool:
    return isinstance(wf.get("nodes"), list)


def _is_api_format(wf: dict) -> bool:
    return bool(wf) and all(isinstance(v, dict) and "class_type" in v for v in wf.values())


def _node_types(wf: dict) -> dict[str, str]:
    """node id -> class type, in the workflow's order of ids, for either format."""
    if is_ui_format(wf):
        pairs = [(str(n["id"]), n["type"]) for n in wf["nodes"]
                 if n.get("type") not in FRONTEND_ONLY and n.get("mode", 0) not in (2, 4)]
    else:
        pairs = [(k, v["class_type"]) for k, v in wf.items()]
    return dict(sorted(pairs, key=lambda p: (not p[0].isdigit(), int(p[0]) if p[0].isdigit() else 0, p[0])))


def choose_input(wf: dict, node_id: str | None, input_name: str | None) -> tuple[str, str, tuple[str, ...]]:
    """(node id, input name, clip extensions) of the input the clips go into; works before any conversion so a
    bad choice fails before a server is started."""
    types = _node_types(wf)
    if node_id is None:
        for nid, kind in types.items():
            if kind in LOADERS:
                name, exts = LOADERS[kind]
                return nid, input_name or name, exts
        found = ", ".join(f"{k} ({v})" for k, v in types.items())
        raise BatchError("the workflow has no LoadVideo or LoadImage node: choose the node that takes the clip "
                         f"with --input-node ID and its input with --input-name NAME (nodes: {found})")
    node_id = str(node_id)
    if node_id not in types:
        raise BatchError(f"--input-node {node_id}: no such node in the workflow (ids: {', '.join(types)})")
    kind = types[node_id]
    if input_name is None:
        if kind not in LOADERS:
            raise BatchError(f"--input-node {node_id} is a {kind}: name the input that takes the file name with "
                             "--input-name NAME")
        input_name = LOADERS[kind][0]
    exts = LOADERS[kind][1] if kind in LOADERS else VIDEO_EXT + IMAGE_EXT
    return node_id, input_name, exts


def to_api(wf: dict, client: Client) -> dict:
    if not is_ui_format(wf):
        return {k: {"class_type": v["class_type"], "inputs": dict(v.get("inputs", {}))} for k, v in wf.items()}
    try:
        return ui_to_api(wf, client.get("/object_info"))
    except ValueError as e:
        raise BatchError(f"cannot convert the workflow: {e}") from None


def clip_prompt(base: dict, node_id: str, input_name: str, value: str, prefix: str | None, key: str) -> dict:
    """A copy of the prompt reading `value` and (with a prefix) saving under prefix/key/<node's own name>."""
    prompt = json.loads(json.dumps(base))
    prompt[node_id]["inputs"][input_name] = value
    if prefix:
        for node in prompt.values():
            old = node["inputs"].get("filename_prefix")
            if isinstance(old, str):
                own = old.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or "output"
                node["inputs"]["filename_prefix"] = f"{prefix}/{key}/{own}"
    return prompt


# ------------------------------------------------------------------------------------------------ clips

def list_clips(folder: str, exts: tuple[str, ...]) -> list[str]:
    if not os.path.isdir(folder):
        raise BatchError(f"clip folder not found: {folder}")
    clips = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.lower().endswith(exts) and os.path.isfile(os.path.join(folder, f)))
    if not clips:
        raise BatchError(f"no clips in {folder}: expected files ending in {', '.join(exts)}")
    return clips


def clip_keys(clips: list[str]) -> list[str]:
    """A per-clip output folder name: the file stem, with the extension added where two stems collide."""
    stems = [os.path.splitext(os.path.basename(c))[0] for c in clips]
    keys = [s if stems.count(s) == 1 else f"{s}_{os.path.splitext(c)[1][1:].lower()}" for s, c in zip(stems, clips)]
    return ["".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in k).strip(".") or "clip" for k in keys]


# ------------------------------------------------------------------------------------------------ results

def _first_line(text: object) -> str:
    lines = [l.strip() for l in str(text).splitlines() if l.strip()]
    return lines[0] if lines else str(text)


def rejection_message(body: object) -> str:
    """First line of why /prompt refused a prompt (node_errors name the node and the input)."""
    if not isinstance(body, dict):
        return _first_line(body)
    for nid, err in (body.get("node_errors") or {}).items():
        for e in err.get("errors", []):
            detail = e.get("details") or e.get("message", "")
            return _first_line(f"{err.get('class_type', '')} (node {nid}): {detail}")
    err = body.get("error")
    if isinstance(err, dict):
        return _first_line(f"{err.get('message', '')} {err.get('details', '')}")
    return _first_line(json.dumps(body)[:500])


def summarize_history(entry: dict) -> dict:
    """status, seconds of execution, output files, texts and the first error line of a finished prompt."""
    status = entry.get("status", {})
    messages = status.get("messages", [])
    stamps = {kind: data.get("timestamp") for kind, data in messages if isinstance(data, dict)}
    start = stamps.get("execution_start")
    ends = [data.get("timestamp") for kind, data in messages
            if kind in ("execution_success", "execution_error", "execution_interrupted") and isinstance(data, dict)]
    seconds = (ends[-1] - start) / 1000.0 if start is not None and ends and ends[-1] is not None else None
    files, texts = [], []
    for node_out in (entry.get("outputs") or {}).values():
        for key, items in node_out.items():
            for item in items if isinstance(items, list) else []:
                if key == "text" and isinstance(item, str):
                    texts.append(item)
                elif isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output":
                    files.append("/".join(p for p in (item.get("subfolder"), item["filename"]) if p))
    error = None
    for kind, data in messages:
        if kind == "execution_error":
            error = _first_line(f"{data.get('node_type', '')} (node {data.get('node_id')}): "
                                f"{data.get('exception_message', '')}")
        elif kind == "execution_interrupted":
            error = "interrupted"
    ok = status.get("status_str") == "success"
    return {"status": "success" if ok else "error", "seconds": seconds, "outputs": sorted(files),
            "texts": texts, "error": None if ok else (error or "failed")}


def run_batch(client: Client, base: dict, node_id: str, input_name: str, clips: list[str], prefix: str | None,
              max_queued: int = 4, timeout: float = 3600.0, subfolder: str = UPLOAD_SUBFOLDER,
              log=print) -> list[dict]:
    """Upload, queue (at most max_queued in flight), wait; one result dict per clip, in the clips' order."""
    client_id = uuid.uuid4().hex
    results = [{"clip": os.path.basename(c), "status": "pending", "seconds": None, "outputs": [], "texts": [],
                "error": None, "prompt_id": None} for c in clips]
    keys = clip_keys(clips)
    todo = list(range(len(clips)))
    in_flight: dict[str, tuple[int, float]] = {}   # prompt id -> (clip index, queue time)
    done = 0
    try:
        while todo or in_flight:
            while todo and len(in_flight) < max(1, max_queued):
                i = todo.pop(0)
                res = results[i]
                t0 = time.monotonic()
                try:
                    value = client.upload(clips[i], subfolder)
                    code, body = client.queue(clip_prompt(base, node_id, input_name, value, prefix, keys[i]),
                                              client_id)
                except (OSError, RuntimeError) as e:
                    if isinstance(e, OSError) and not client_alive(client):
                        raise
                    code, body = None, (str(e) if isinstance(e, RuntimeError) else f"upload failed: {e}")
                if code == 200 and isinstance(body, dict) and "prompt_id" in body and not body.get("node_errors"):
                    res["prompt_id"] = body["prompt_id"]
                    in_flight[body["prompt_id"]] = (i, t0)
                    continue
                res.update(status="rejected", seconds=time.monotonic() - t0, error=rejection_message(body))
                done += 1
                log(f"[{done}/{len(clips)}] {res['clip']}: rejected: {res['error']}")
            for pid, (i, t0) in list(in_flight.items()):
                entry = client.history(pid)
                res = results[i]
                if entry is None:
                    if time.monotonic() - t0 > timeout:
                        client.cancel([pid])
                        res.update(status="timeout", seconds=time.monotonic() - t0,
                                   error=f"not finished after {timeout:.0f}s (cancelled)")
                    else:
                        continue
                else:
                    res.update(summarize_history(entry))
                    if res["seconds"] is None:
                        res["seconds"] = time.monotonic() - t0
                del in_flight[pid]
                done += 1
                tail = f"{len(res['outputs'])} files" if res["status"] == "success" else res["error"]
                log(f"[{done}/{len(clips)}] {res['clip']}: {res['status']} in {res['seconds']:.1f}s: {tail}")
            if in_flight:
                time.sleep(0.2)
    except (KeyboardInterrupt, OSError) as e:          # Ctrl-C, or the server went away
        if in_flight and isinstance(e, KeyboardInterrupt):
            try:
                client.cancel(list(in_flight))
            except OSError:
                pass
        why = "cancelled" if isinstance(e, KeyboardInterrupt) else f"server not reachable: {_first_line(e)}"
        for res in results:
            if res["status"] == "pending":
                res.update(status="cancelled" if isinstance(e, KeyboardInterrupt) else "error", error=why)
        if isinstance(e, KeyboardInterrupt):
            raise
    return results


def client_alive(client: Client) -> bool:
    try:
        client.get("/system_stats")
        return True
    except (OSError, ValueError):
        return False


def describe_outputs(files: list[str]) -> str:
    """'13 files in run/clip/ (12 png, 1 webp)' or the single file's name."""
    if len(files) <= 1:
        return files[0] if files else ""
    folder = os.path.commonpath(files).replace(os.sep, "/") if all("/" in f for f in files) else ""
    exts: dict[str, int] = {}
    for f in files:
        ext = os.path.splitext(f)[1][1:].lower() or "other"
        exts[ext] = exts.get(ext, 0) + 1
    kinds = ", ".join(f"{n} {e}" for e, n in sorted(exts.items()))
    return f"{len(files)} files" + (f" in {folder}/" if folder else "") + f" ({kinds})"


def format_table(results: list[dict]) -> str:
    rows = [("clip", "status", "seconds", "outputs / error")]
    for r in results:
        if r["status"] == "success":
            texts = [_first_line(t) for t in r["texts"]]
            detail = "; ".join(x for x in [describe_outputs(r["outputs"])] + texts if x) or "(no outputs)"
        else:
            detail = r["error"] or ""
        secs = f"{r['seconds']:.1f}" if r["seconds"] is not None else "-"
        rows.append((r["clip"], r["status"], secs, detail))
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    lines = ["  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]), row[3]])
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 15)
    ok = sum(r["status"] == "success" for r in results)
    lines.append(f"{ok}/{len(results)} clips succeeded")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ CLI

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workflow", help="UI-format workflow (workflows/*.json) or API-format prompt (.json)")
    ap.add_argument("clips", help="folder of clips (.mp4 .webm .mov .mkv .avi; images for a LoadImage input)")
    ap.add_argument("--server", help="URL of a running ComfyUI (default: start a headless one)")
    ap.add_argument("--base-dir", help="base folder of the server started without --server (default: a new "
                                       "folder under .vdt/runs, kept)")
    ap.add_argument("--input-node", help="id of the node that takes the clip (default: the first LoadVideo, "
                                         "else LoadImage node)")
    ap.add_argument("--input-name", help="its input that takes the file name (default: file for LoadVideo, "
                                         "image for LoadImage)")
    ap.add_argument("--prefix", default="vdtrack_batch",
                    help="every filename_prefix becomes PREFIX/<clip stem>/<node's own name> (default: %(default)s)")
    ap.add_argument("--no-prefix", action="store_true", help="keep the workflow's filename_prefix values")
    ap.add_argument("--subfolder", default=UPLOAD_SUBFOLDER, help="input subfolder the clips are uploaded to")
    ap.add_argument("--max-queued", type=int, default=4, help="prompts waiting or running at once (default: 4)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per clip from queueing (default: 3600)")
    ap.add_argument("--json", dest="json_path", help="write the summary (one entry per clip) to this file")
    a = ap.parse_args(argv)
    if a.max_queued < 1:
        ap.error("--max-queued must be at least 1")
    if not a.no_prefix and (not a.prefix.strip("/ ") or ".." in a.prefix.replace("\\", "/").split("/")):
        ap.error("--prefix must be a relative folder name inside the output folder")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        wf = load_workflow(a.workflow)
        node_id, input_name, exts = choose_input(wf, a.input_node, a.input_name)
        clips = list_clips(a.clips, exts)
        skipped = sorted(d for d in os.listdir(a.clips) if os.path.isdir(os.path.join(a.clips, d)))
        if skipped:
            print(f"note: subfolders are not clips and are skipped: {', '.join(skipped)}", file=sys.stderr)
        if a.server:
            summary = _run(Client(a.server), wf, node_id, input_name, clips, a)
        else:
            from comfy_server import ComfyServer
            srv = ComfyServer(base_dir=a.base_dir, keep_base=True)
            print(f"starting ComfyUI (base folder {srv.base}) ...", file=sys.stderr)
            try:
                srv.start()
                print(f"ComfyUI started on {srv.url} in {srv.startup_s:.1f}s", file=sys.stderr)
                summary = _run(Client(srv.url), wf, node_id, input_name, clips, a)
            finally:
                srv.stop()
            print(f"outputs are in {srv.path('output')}")
    except BatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled: the batch's waiting prompts were taken off the queue", file=sys.stderr)
        return 130
    print(format_table(summary["clips"]))
    if a.json_path:
        with open(a.json_path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    return 0 if all(r["status"] == "success" for r in summary["clips"]) else 1


def _run(client: Client, wf: dict, node_id: str, input_name: str, clips: list[str], a) -> dict:
    if not client_alive(client):
        raise BatchError(f"no ComfyUI answering at {client.url}")
    base = to_api(wf, client)
    if node_id not in base:
        raise BatchError(f"input node {node_id} is not part of the prompt (muted or bypassed?)")
    if input_name not in base[node_id]["inputs"]:
        known = ", ".join(base[node_id]["inputs"]) or "none"
        raise BatchError(f"--input-name {input_name}: node {node_id} ({base[node_id]['class_type']}) has no such "
                         f"input (inputs: {known})")
    t0 = time.monotonic()
    results = run_batch(client, base, node_id, input_name, clips, None if a.no_prefix else a.prefix.strip("/"),
                        max_queued=a.max_queued, timeout=a.timeout, subfolder=a.subfolder,
                        log=lambda m: print(m, file=sys.stderr, flush=True))
    return {"workflow": os.path.abspath(a.workflow), "server": client.url, "input_node": node_id,
            "input_name": input_name, "seconds": round(time.monotonic() - t0, 3), "clips": results}


if __name__ == "__main__":
    sys.exit(main())
