"""The development ComfyUI: the one tools/setup.sh installed (.vdt/ComfyUI, CPU), with this pack linked in and a
private base folder under .vdt/runs. A thin layer over the pack's own launcher and HTTP client
(vdtrack.batch.server / vdtrack.batch.client), used by the demo, the workflow builder and the end-to-end tests.

    with ComfyServer() as srv:
        status, r = srv.queue(prompt)          # POST /prompt (API format)
        h = srv.wait(r["prompt_id"])           # poll GET /history/<id>
"""
from __future__ import annotations

import os
import tempfile

from vdtrack.batch import server as _server

from .paths import COMFY_PYTHON, COMFYUI_DIR, ROOT, VDT  # noqa: F401  (ROOT re-exported for the tools)


class ComfyServer(_server.ComfyServer):
    """A CPU ComfyUI from .vdt with its own base folder (removed on stop unless keep_base)."""

    def __init__(self, base_dir: str | None = None, keep_base: bool = False, startup_timeout: float = 240.0,
                 extra_args: list[str] | None = None):
        runs = os.path.join(VDT, "runs")
        os.makedirs(runs, exist_ok=True)
        own = base_dir is None
        super().__init__(COMFYUI_DIR, base_dir=base_dir or tempfile.mkdtemp(prefix="comfy_", dir=runs),
                         python=COMFY_PYTHON, cpu=True, keep_base=keep_base or not own,
                         startup_timeout=startup_timeout, extra_args=extra_args)

    def start(self) -> "ComfyServer":
        if not os.path.isfile(os.path.join(COMFYUI_DIR, "main.py")):
            raise RuntimeError("ComfyUI is not installed: run tools/setup.sh first")
        return super().start()
