"""vdtrack: Video Diffusion Tracking nodes for ComfyUI.

ComfyUI finds the V3 entry point below (it ignores `comfy_entrypoint` when `NODE_CLASS_MAPPINGS` exists, so
there is none) and serves the frontend extension in `WEB_DIRECTORY` (web/report_text.js: the text reports of
the nodes shown inside the node). Importing ComfyUI lazily keeps `vdtrack.kernels` importable without it.
The version lives in pyproject.toml only (importlib.metadata.version("vdtrack") where the pack is installed).
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import VdtrackExtension

    return VdtrackExtension()
