"""The one HTTP client for a running ComfyUI: queue prompts, wait for them, upload clips, fetch outputs.

Standard library only (urllib), so any python can drive a server: the batch command, the demo runner and the
end-to-end tests all use this class. Endpoints are ComfyUI's own (server.py of ComfyUI >= 0.3.75):
POST /prompt, GET /history/<id>, POST /upload/image, GET /view, POST /queue, POST /interrupt, GET /object_info,
GET /system_stats.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


class ServerGone(ConnectionError):
    """The server stopped answering (process died, connection refused) while a prompt was waited for."""


class PromptCancelled(RuntimeError):
    """A waited-for prompt will never finish: the caller cancelled the wait, or the prompt left the server's
    queue without reaching its history (deleted from the queue, the queue cleared, or the server restarted)."""


class ComfyClient:
    """A ComfyUI server at `url` (e.g. 'http://127.0.0.1:8188'); `timeout` is seconds per HTTP request."""

    def __init__(self, url: str, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    # ---------------------------------------------------------------------------------------------- raw HTTP
    def get(self, path: str, timeout: float | None = None):
        """GET; the decoded JSON when the server answers JSON, else the raw bytes. Raises urllib's errors."""
        with urllib.request.urlopen(self.url + path, timeout=timeout or self.timeout) as r:
            body = r.read()
            if r.headers.get_content_type() == "application/json":
                return json.loads(body or b"null")
            return body

    def post(self, path: str, payload: dict, timeout: float | None = None) -> tuple[int, object]:
        """POST JSON; (HTTP status, decoded JSON body, or its text when it is not JSON). Never raises on an
        HTTP error status, only on a connection problem."""
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                return r.status, _decode(r.read())
        except urllib.error.HTTPError as e:
            return e.code, _decode(e.read())

    def alive(self) -> bool:
        """True while the server answers GET /system_stats."""
        try:
            self.get("/system_stats", timeout=min(self.timeout, 10.0))
            return True
        except (OSError, ValueError):
            return False

    def object_info(self, node: str | None = None) -> dict:
        return self.get("/object_info" + (f"/{urllib.parse.quote(node)}" if node else ""))

    # ---------------------------------------------------------------------------------------------- prompts
    def queue(self, prompt: dict, workflow: dict | None = None, client_id: str | None = None) -> tuple[int, object]:
        """POST /prompt (API format); `workflow` (UI format) is stored in the outputs' metadata like the
        frontend does. Returns (status, body): body has 'prompt_id' when accepted, 'node_errors' when not."""
        payload = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        if workflow is not None:
            payload["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        return self.post("/prompt", payload)

    def history(self, prompt_id: str) -> dict | None:
        """The /history entry of a finished prompt (success, error or interrupted), None while it waits or runs."""
        h = self.get(f"/history/{urllib.parse.quote(prompt_id)}")
        entry = (h or {}).get(prompt_id) if isinstance(h, dict) else None
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        return None

    def server_alive(self) -> bool:
        """Whether the server can still finish a prompt (a launcher that owns the process overrides this)."""
        return self.alive()

    def queued_ids(self) -> set[str]:
        """Ids of the prompts waiting or running on the server (GET /queue)."""
        q = self.get("/queue")
        items = [*(q.get("queue_running") or []), *(q.get("queue_pending") or [])] if isinstance(q, dict) else []
        return {str(item[1]) for item in items if isinstance(item, (list, tuple)) and len(item) > 1}

    def wait(self, prompt_id: str, timeout: float = 300.0, poll_s: float = 0.1, cancel=None,
             gone_check_s: float = 2.0) -> dict:
        """Poll /history until the prompt finished; its history entry. Raises TimeoutError after `timeout`
        seconds, ServerGone when the server stops answering, and PromptCancelled as soon as `cancel` (a
        threading.Event) is set or when the prompt is neither in the queue nor in the history (checked every
        `gone_check_s` seconds: a prompt taken off the queue never finishes)."""
        t0 = last_check = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if cancel is not None and cancel.is_set():
                raise PromptCancelled(f"prompt {prompt_id}: cancelled")
            try:
                entry = self.history(prompt_id)
            except OSError as e:
                if not self.server_alive():
                    raise ServerGone(f"ComfyUI at {self.url} stopped answering while running {prompt_id}: "
                                     f"{first_line(e)}") from None
                entry = None
            if entry is not None:
                return entry
            if not self.server_alive():
                raise ServerGone(f"ComfyUI at {self.url} died while running {prompt_id}")
            if time.monotonic() - last_check >= gone_check_s:
                last_check = time.monotonic()
                if self._gone(prompt_id):
                    raise PromptCancelled(f"prompt {prompt_id} was taken off the server's queue (deleted, queue "
                                          "cleared or server restarted) and will not run")
            if cancel is not None:
                cancel.wait(poll_s)
            else:
                time.sleep(poll_s)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout:.0f}s")

    def _gone(self, prompt_id: str) -> bool:
        """Neither waiting nor running nor finished. History is read again after the queue: a prompt that
        finished between the two reads is in the history by then (the server moves it under one lock)."""
        try:
            return prompt_id not in self.queued_ids() and self.history(prompt_id) is None
        except (OSError, ValueError):
            return False

    def run(self, prompt: dict, timeout: float = 300.0, workflow: dict | None = None) -> dict:
        """Queue and wait; the history entry of a successful prompt. Raises RuntimeError naming the node and
        the server's message when the prompt is refused or fails."""
        status, body = self.queue(prompt, workflow=workflow)
        if status != 200 or not isinstance(body, dict) or body.get("node_errors") or "prompt_id" not in body:
            raise RuntimeError(f"prompt rejected ({status}): {json.dumps(body)[:3000]}")
        entry = self.wait(body["prompt_id"], timeout)
        if entry["status"].get("status_str") != "success":
            raise RuntimeError(f"prompt failed: {json.dumps(entry['status'])[:3000]}")
        return entry

    def cancel(self, prompt_ids: list[str]) -> None:
        """Take waiting prompts off the queue and interrupt any of them that is running."""
        self.post("/queue", {"delete": list(prompt_ids)})
        for pid in prompt_ids:
            self.post("/interrupt", {"prompt_id": pid})

    # ---------------------------------------------------------------------------------------------- files
    def upload(self, path: str, subfolder: str = "", name: str | None = None) -> str:
        """Stream a local file to POST /upload/image (any file type) into input/<subfolder>/<name>; returns
        what a loader input takes ('subfolder/name'). ComfyUI keeps an identical file and renames a different
        one with the same name, so nothing already there is overwritten. Raises RuntimeError when refused."""
        boundary = uuid.uuid4().hex
        name = name or os.path.basename(path)
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')

        def field(key: str, value: str) -> bytes:
            return f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()

        head = (field("type", "input") + field("subfolder", subfolder)
                + (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{quoted}"\r\n'
                   "Content-Type: application/octet-stream\r\n\r\n").encode("utf-8"))
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

    def fetch(self, filename: str, subfolder: str = "", kind: str = "output") -> bytes:
        """The bytes of one file of the server's output (or temp/input) folder, through GET /view."""
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=self.timeout) as r:
            return r.read()


def _decode(body: bytes) -> object:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


# -------------------------------------------------------------------------------------------------- history

def first_line(text: object) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else str(text)


def execution_error(history: dict) -> dict | None:
    """The execution_error message of a failed prompt's /history entry, if any."""
    for kind, msg in history.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return msg
    return None


def rejection_message(body: object) -> str:
    """First line of why POST /prompt refused a prompt (node_errors name the node and the input)."""
    if not isinstance(body, dict):
        return first_line(body)
    for nid, err in (body.get("node_errors") or {}).items():
        for e in err.get("errors", []):
            detail = e.get("details") or e.get("message", "")
            return first_line(f"{err.get('class_type', '')} (node {nid}): {detail}")
    err = body.get("error")
    if isinstance(err, dict):
        return first_line(f"{err.get('message', '')} {err.get('details', '')}")
    return first_line(json.dumps(body)[:500])


def summarize_history(entry: dict) -> dict:
    """status ('success' | 'error'), seconds of execution, output files [(subfolder, filename)] of the output
    folder, text outputs, the metrics report nodes put in their ui ('vdtrack_metrics', per node id) and the
    first line of the error of a finished prompt's /history entry."""
    status = entry.get("status", {})
    messages = [m for m in status.get("messages", []) if isinstance(m, (list, tuple)) and len(m) == 2]
    stamps = {kind: data.get("timestamp") for kind, data in messages if isinstance(data, dict)}
    start = stamps.get("execution_start")
    ends = [data.get("timestamp") for kind, data in messages
            if kind in ("execution_success", "execution_error", "execution_interrupted") and isinstance(data, dict)]
    seconds = (ends[-1] - start) / 1000.0 if start is not None and ends and ends[-1] is not None else None
    files, texts, metrics = [], [], {}
    for node_id, node_out in (entry.get("outputs") or {}).items():
        for key, items in node_out.items():
            for item in items if isinstance(items, list) else []:
                if key == "text" and isinstance(item, str):
                    texts.append(item)
                elif key == "vdtrack_metrics" and isinstance(item, dict):
                    metrics[str(node_id)] = item
                elif isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output":
                    files.append((item.get("subfolder") or "", item["filename"]))
    error = None
    for kind, data in messages:
        if kind == "execution_error":
            error = first_line(f"{data.get('node_type', '')} (node {data.get('node_id')}): "
                               f"{data.get('exception_message', '')}")
        elif kind == "execution_interrupted":
            error = "interrupted"
    ok = status.get("status_str") == "success"
    return {"status": "success" if ok else "error", "seconds": seconds, "files": sorted(set(files)),
            "texts": texts, "metrics": metrics, "error": None if ok else (error or "failed")}
