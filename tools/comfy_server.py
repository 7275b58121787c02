"""Start a real headless ComfyUI (the one tools/setup.sh installed) with this pack linked in, and talk to it.

    with ComfyServer() as srv:
        status, r = srv.queue(prompt)          # POST /prompt (API format)
        h = srv.wait(r["prompt_id"])           # poll GET /history/<id>

Standard library only, so any python can drive it. Used by the demo and by the end-to-end tests.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VDT = os.path.join(ROOT, ".vdt")
COMFYUI_DIR = os.environ.get("VDT_COMFYUI_DIR", os.path.join(VDT, "ComfyUI"))
COMFY_PYTHON = os.environ.get("VDT_COMFY_PYTHON", os.path.join(VDT, "venv", "bin", "python"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """One ComfyUI process on a free loopback port, with its own base directory (models/input/output/temp)."""

    def __init__(self, base_dir: str | None = None, keep_base: bool = False, startup_timeout: float = 240.0,
                 extra_args: list[str] | None = None):
        runs = os.path.join(VDT, "runs")
        os.makedirs(runs, exist_ok=True)
        self._own_base = base_dir is None
        self.base = os.path.abspath(base_dir or tempfile.mkdtemp(prefix="comfy_", dir=runs))
        self.keep_base = keep_base
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.base, "server.log")
        self.startup_s: float | None = None

    # ---- paths inside the server's base directory
    def path(self, *parts: str) -> str:
        return os.path.join(self.base, *parts)

    def _prepare(self) -> None:
        for d in ("custom_nodes", "input", "output", "temp", "user/default", "models"):
            os.makedirs(self.path(d), exist_ok=True)
        link = self.path("custom_nodes", "vdtrack")
        if not os.path.lexists(link):
            os.symlink(ROOT, link)
        # the first-run tutorial/template dialog would cover the canvas in the frontend tests
        settings = self.path("user", "default", "comfy.settings.json")
        if not os.path.exists(settings):
            with open(settings, "w") as f:
                json.dump({"Comfy.TutorialCompleted": True}, f)

    def start(self) -> "ComfyServer":
        if not os.path.isfile(os.path.join(COMFYUI_DIR, "main.py")):
            raise RuntimeError("ComfyUI is not installed: run tools/setup.sh first")
        self._prepare()
        cmd = [COMFY_PYTHON, os.path.join(COMFYUI_DIR, "main.py"), "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port), "--disable-auto-launch", "--base-directory", self.base,
               "--database-url", "sqlite:///:memory:", "--log-stdout", *self.extra_args]
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   DO_NOT_TRACK="1")
        t0 = time.monotonic()
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.base, env=env,
                                     start_new_session=True)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() - t0 > self.startup_timeout:
                self.stop()
                raise TimeoutError(f"ComfyUI not ready after {self.startup_timeout}s:\n{self.log()[-4000:]}")
            time.sleep(0.25)
        self.startup_s = time.monotonic() - t0
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None
        if self._own_base and not self.keep_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    # ---- HTTP
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def post(self, path: str, payload: dict, timeout: float = 30) -> tuple[int, object]:
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def object_info(self, node: str | None = None) -> dict:
        return self.get("/object_info" + (f"/{node}" if node else ""))

    def queue(self, prompt: dict, workflow: dict | None = None) -> tuple[int, dict]:
        payload = {"prompt": prompt, "client_id": uuid.uuid4().hex}
        if workflow is not None:
            payload["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        return self.post("/prompt", payload)

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h:
                st = h[prompt_id].get("status", {})
                if st.get("completed") is not None and st.get("status_str") in ("success", "error"):
                    return h[prompt_id]
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout}s")

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        """Queue and wait; raises with the server's error message when it fails."""
        status, r = self.queue(prompt)
        if status != 200 or r.get("node_errors"):
            raise RuntimeError(f"prompt rejected ({status}): {json.dumps(r)[:3000]}")
        h = self.wait(r["prompt_id"], timeout)
        if h["status"]["status_str"] != "success":
            raise RuntimeError(f"prompt failed: {json.dumps(h['status'])[:3000]}")
        return h


def execution_error(history: dict) -> dict | None:
    """The execution_error message of a failed prompt's /history entry, if any."""
    for kind, msg in history.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return msg
    return None
