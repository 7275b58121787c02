"""Driving ComfyUI from outside: the one HTTP client (client.py), a server launcher (server.py), workflow
conversion (workflow.py) and the `vdtrack-batch` command (cli.py) that runs a workflow over clips and
parameter sweeps on one server or on Ray (ray_runner.py).

Nothing here imports ComfyUI or torch: it talks to servers over HTTP, so any python can run it.
"""
