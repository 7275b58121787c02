"""What every vdtrack node shares: socket types, progress/interrupt, and ComfyUI folders."""
from __future__ import annotations

import os

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

# Core's TRACKS type (Wan-Move, ComfyUI >= 0.5) where it exists; the same type string otherwise, so they link.
Tracks = getattr(io, "Tracks", None) or io.Custom("TRACKS")
Features = io.Custom("VDT_FEATURES")
Backbone = io.Custom("VDT_BACKBONE")

CATEGORY = "vdtrack"


def category(family: str) -> str:
    return f"{CATEGORY}/{family}"


class Progress:
    """ComfyUI progress bar + interrupt check, handed to kernels as a plain `step()` callable.

    `total` is the number of steps the node will report. Where the work is only known as it goes (`grows=True`:
    HeFT's speculative mode redoes steps after a wrong guess) the total is extended by the first estimate each time
    the count reaches it, so the bar shows the work left instead of sitting at 100 %; `finish()` fills it."""

    def __init__(self, total: int, grows: bool = False):
        self.total = self.estimate = max(int(total), 1)
        self.done = 0
        self.grows = grows
        self.bar = comfy.utils.ProgressBar(self.total)

    def __call__(self, n: int = 1) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.done += n
        if self.grows and self.done >= self.total:
            self.total = self.done + self.estimate
        self.bar.update_absolute(min(self.done, self.total), self.total)

    def finish(self) -> None:
        self.done = self.total
        self.bar.update_absolute(self.total, self.total)


def check_interrupt() -> None:
    comfy.model_management.throw_exception_if_processing_interrupted()


def output_path(name: str, subfolder_and_prefix: str, extension: str) -> tuple[str, str, str]:
    """A fresh file path strictly inside ComfyUI's output folder; rejects absolute paths and '..'.
    Returns (full_path, subfolder, filename)."""
    if not isinstance(subfolder_and_prefix, str):
        raise ValueError(f"{name}: expected a text prefix, got {type(subfolder_and_prefix).__name__}")
    prefix = subfolder_and_prefix.strip().replace("\\", "/")
    if any(ord(c) < 32 for c in prefix):
        raise ValueError(f"{name}: contains a control character (NUL, newline, ...); use a plain file name")
    if len(prefix) > 200:
        raise ValueError(f"{name}: {len(prefix)} characters is longer than the 200 allowed")
    if not prefix:
        raise ValueError(f"{name}: the filename prefix is empty")
    if prefix.startswith("/") or any(part == ".." for part in prefix.split("/")) or ":" in prefix:
        raise ValueError(f"{name}: '{subfolder_and_prefix}' must be a relative name inside the output folder")
    root = os.path.realpath(folder_paths.get_output_directory())
    full_dir, filename, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, root)
    real = os.path.realpath(full_dir)
    if os.path.commonpath([real, root]) != root:
        raise ValueError(f"{name}: '{subfolder_and_prefix}' points outside the output folder")
    os.makedirs(real, exist_ok=True)
    file = f"{filename}_{counter:05}_.{extension}"
    return os.path.join(real, file), subfolder, file
