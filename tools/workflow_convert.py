"""Convert a UI-format workflow (what users save and drag in) to the API format /prompt takes.

The frontend's `app.graphToPrompt()` is the canonical converter; this is the same mapping in python so
the demo can run a shipped workflow headless. tests/e2e/test_frontend.py checks both agree on every
shipped workflow.
"""
from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_control(name: str, spec: list) -> bool:
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "control_after_generate" in opts:
        return bool(opts["control_after_generate"])
    return spec[0] == "INT" and name in ("seed", "noise_seed")


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    links = {l[0]: l for l in workflow.get("links", [])}
    prompt: dict[str, dict] = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind in FRONTEND_ONLY or node.get("mode", 0) in (2, 4):   # notes, muted and bypassed nodes
            continue
        if kind not in object_info:
            raise ValueError(f"workflow node {node['id']}: unknown node type {kind!r} (is its pack installed?)")
        info = object_info[kind]
        order = info.get("input_order") or {s: list(info["input"].get(s, {})) for s in ("required", "optional")}
        linked = {}
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                l = links[inp["link"]]
                linked[inp["name"]] = [str(l[1]), l[2]]
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):
            raise ValueError(f"workflow node {node['id']}: dict widgets_values are not supported")
        inputs: dict[str, object] = {}
        for section in ("required", "optional"):
            for name in order.get(section, []):
                spec = info["input"][section][name]
                if _is_widget(spec):
                    value = values.pop(0) if values else None
                    if _has_control(name, spec) and values:
                        values.pop(0)          # the UI-only "control after generate" value
                    if name in linked:
                        inputs[name] = linked[name]
                    elif value is not None:
                        inputs[name] = value
                elif name in linked:
                    inputs[name] = linked[name]
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs}
    return prompt
