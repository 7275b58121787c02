"""vdtrack's development and test support (not part of the published pack): the development ComfyUI server
(comfy_server), the headless frontend (browser), tiny models and synthetic clips the tests build
(make_tiny_models, make_tiny_diffusers, make_tiny_unets, make_synthetic), the workflow builder
(build_workflows), shared backbone test checks, and the repository paths (paths).

Installed editable by tools/setup.sh (tools/pyproject.toml), so tests and benchmarks import it by name.
"""
