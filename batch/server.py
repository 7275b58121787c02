"""Start one ComfyUI process on a free loopback port and drive it through the HTTP client.

Two ways to run it:
- `base_dir` given: a private base folder (models/, custom_nodes/, input/, output/, temp/, user/) with this pack
  linked into its custom_nodes: what the tests and the development tools use.
- `base_dir=None`: the ComfyUI installation's own folders (its models and custom nodes, where this pack is
  installed), with a private temp folder (ComfyUI empties its temp folder at start-up, so two servers on one
  machine must not share it). What a Ray actor on a user's machine starts.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from .client import ComfyClient

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_comfyui(explicit: str | None = None) -> str:
    """The ComfyUI folder (the one holding main.py): `explicit`, else $COMFYUI_DIR, else the installation this
    pack sits in (<ComfyUI>/custom_nodes/<pack>). Raises ValueError naming what was tried."""
    tried = []
    for cand in (explicit, os.environ.get("COMFYUI_DIR"),
                 os.path.dirname(os.path.dirname(PACK_ROOT)) if
                 os.path.basename(os.path.dirname(PACK_ROOT)) == "custom_nodes" else None):
        if cand:
            if os.path.isfile(os.path.join(cand, "main.py")):
                return os.path.abspath(cand)
            tried.append(cand)
    raise ValueError("no ComfyUI found to start: pass --comfyui DIR (the folder with ComfyUI's main.py) or set "
                     "COMFYUI_DIR" + (f" (tried: {', '.join(tried)})" if tried else ""))


def _parent_death_signal() -> None:
    """In the child: SIGTERM when the process that started it dies (Linux prctl PR_SET_PDEATHSIG), so a server
    never outlives a killed Ray actor. Elsewhere nothing."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class ComfyServer(ComfyClient):
    """One ComfyUI process. `comfyui_dir`: ComfyUI's folder; `python`: the interpreter to run it with (default
    this one); `cpu`: add --cpu; `extra_args`: more ComfyUI arguments; `die_with_parent`: the server gets
    SIGTERM when this process dies (Linux). Use as a context manager, or
    start()/stop(). Everything ComfyClient does (queue, wait, run, upload, ...) works on it once started."""

    def __init__(self, comfyui_dir: str, base_dir: str | None = None, python: str | None = None,
                 cpu: bool = False, keep_base: bool = True, startup_timeout: float = 240.0,
                 extra_args: list[str] | None = None, env: dict | None = None, die_with_parent: bool = False):
        self.comfyui_dir = comfyui_dir
        self.python = python or sys.executable
        self.base = os.path.abspath(base_dir) if base_dir else None
        self.keep_base = keep_base
        self.cpu = cpu
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.env = env or {}
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._private_temp: str | None = None
        self.startup_s: float | None = None
        log_dir = self.base or tempfile.mkdtemp(prefix="vdtrack_comfy_log_")
        self.log_path = os.path.join(log_dir, "server.log")
        super().__init__(f"http://127.0.0.1:{self.port}")

    # ---- paths inside the server's base folder
    def path(self, *parts: str) -> str:
        if self.base is None:
            raise ValueError("this server runs on its ComfyUI's own folders (no private base folder)")
        return os.path.join(self.base, *parts)

    def _prepare(self) -> list[str]:
        if self.base is None:
            self._private_temp = tempfile.mkdtemp(prefix="vdtrack_comfy_temp_")
            return ["--temp-directory", self._private_temp]
        for d in ("custom_nodes", "input", "output", "temp", "user/default", "models"):
            os.makedirs(self.path(d), exist_ok=True)
        link = self.path("custom_nodes", "vdtrack")
        if not os.path.lexists(link):
            os.symlink(PACK_ROOT, link)
        settings = self.path("user", "default", "comfy.settings.json")
        if not os.path.exists(settings):      # the first-run tutorial dialog would cover the canvas
            with open(settings, "w") as f:
                json.dump({"Comfy.TutorialCompleted": True}, f)
        return ["--base-directory", self.base]

    def start(self) -> "ComfyServer":
        """Start the process and wait until it answers; raises RuntimeError (with the log's tail) if it exits,
        TimeoutError if it is not ready after startup_timeout seconds."""
        if not os.path.isfile(os.path.join(self.comfyui_dir, "main.py")):
            raise RuntimeError(f"no ComfyUI in {self.comfyui_dir} (main.py missing)")
        folders = self._prepare()
        cmd = [self.python, os.path.join(self.comfyui_dir, "main.py"), "--listen", "127.0.0.1",
               "--port", str(self.port), "--disable-auto-launch", *folders,
               "--database-url", "sqlite:///:memory:", "--log-stdout", *(["--cpu"] if self.cpu else []),
               *self.extra_args]
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   DO_NOT_TRACK="1", **self.env)
        t0 = time.monotonic()
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.base or self.comfyui_dir, env=env, start_new_session=True,
                                     preexec_fn=_parent_death_signal if self.die_with_parent else None)
        while not self.alive():
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if time.monotonic() - t0 > self.startup_timeout:
                self.stop()
                raise TimeoutError(f"ComfyUI not ready after {self.startup_timeout}s:\n{self.log()[-4000:]}")
            time.sleep(0.25)
        self.startup_s = time.monotonic() - t0
        return self

    def running(self) -> bool:
        """The process is alive (it may not answer yet)."""
        return self.proc is not None and self.proc.poll() is None

    def server_alive(self) -> bool:
        return self.running()

    def alive(self) -> bool:
        return (self.proc is None or self.running()) and super().alive()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group (SIGKILL after `timeout` s); removes the base folder unless keep_base."""
        if self.running():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log:
            self._log.close()
            self._log = None
        if self._private_temp:
            shutil.rmtree(self._private_temp, ignore_errors=True)
        if self.base and not self.keep_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


def start_server(spec: dict, index: int = 0, die_with_parent: bool = False) -> ComfyClient:
    """Attach to spec['url'] (a ComfyClient) or start a ComfyUI as the spec says (a started ComfyServer):
    spec keys comfyui (folder, found by find_comfyui when None), python, base (a private base folder is made
    under it, server<index>_*), cpu, extra_args. Raises ValueError when nothing answers or starts."""
    if spec.get("url"):
        client = ComfyClient(spec["url"])
        if not client.alive():
            raise ValueError(f"no ComfyUI answering at {spec['url']}")
        return client
    base = None
    if spec.get("base"):
        os.makedirs(spec["base"], exist_ok=True)
        base = tempfile.mkdtemp(prefix=f"server{index}_", dir=spec["base"])
    return ComfyServer(find_comfyui(spec.get("comfyui")), base_dir=base, python=spec.get("python"),
                       cpu=bool(spec.get("cpu")), extra_args=spec.get("extra_args"),
                       die_with_parent=die_with_parent).start()
