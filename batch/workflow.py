"""Workflows for running outside the canvas: UI format (what users save and drag in) to the API format /prompt
takes, and the edits a batch makes to a prompt (which node takes the clip, swept inputs, output prefixes).

The frontend's `app.graphToPrompt()` is the canonical converter; `ui_to_api` is the same mapping in python so
the batch command and the demo can run a saved workflow headless. tests/e2e/test_frontend.py checks both agree
on every shipped workflow.
"""
from __future__ import annotations

import json

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


# -------------------------------------------------------------------------------------------------- batch use

class WorkflowError(ValueError):
    """A workflow, or a choice of its nodes/inputs, that cannot be run as asked (message names what to change)."""


def load_workflow(path: str) -> dict:
    """A UI-format workflow or an API-format prompt from a JSON file; raises WorkflowError otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            wf = json.load(f)
    except FileNotFoundError:
        raise WorkflowError(f"workflow not found: {path}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise WorkflowError(f"workflow {path} is not valid JSON: {e}") from None
    if not isinstance(wf, dict) or not (is_ui_format(wf) or is_api_format(wf)):
        raise WorkflowError(f"workflow {path}: neither a UI-format workflow (with 'nodes') nor an API-format "
                            "prompt")
    return wf


def is_ui_format(wf: dict) -> bool:
    return isinstance(wf.get("nodes"), list)


def is_api_format(wf: dict) -> bool:
    return bool(wf) and all(isinstance(v, dict) and "class_type" in v for v in wf.values())


def node_types(wf: dict) -> dict[str, str]:
    """node id -> class type of the nodes that run (no notes, muted or bypassed nodes), ordered by id."""
    if is_ui_format(wf):
        pairs = [(str(n["id"]), n["type"]) for n in wf["nodes"]
                 if n.get("type") not in FRONTEND_ONLY and n.get("mode", 0) not in (2, 4)]
    else:
        pairs = [(str(k), v["class_type"]) for k, v in wf.items()]
    return dict(sorted(pairs, key=lambda p: (not p[0].isdigit(), int(p[0]) if p[0].isdigit() else 0, p[0])))


def to_api(wf: dict, object_info: dict | None) -> dict:
    """The workflow as an API-format prompt (a deep copy); UI format needs the server's /object_info."""
    if not is_ui_format(wf):
        return {str(k): {"class_type": v["class_type"], "inputs": json.loads(json.dumps(v.get("inputs", {})))}
                for k, v in wf.items()}
    try:
        return ui_to_api(wf, object_info or {})
    except (ValueError, KeyError, IndexError) as e:
        raise WorkflowError(f"cannot convert the workflow: {e}") from None


def resolve_node(types: dict[str, str], ref: str, what: str) -> str:
    """A node id from `ref`: an id, or a class type that occurs exactly once in the workflow."""
    if ref in types:
        return ref
    same = [nid for nid, kind in types.items() if kind == ref]
    if len(same) == 1:
        return same[0]
    if same:
        raise WorkflowError(f"{what}: {len(same)} nodes are {ref} (ids {', '.join(same)}): use a node id")
    found = ", ".join(f"{k} ({v})" for k, v in types.items())
    raise WorkflowError(f"{what}: no node {ref!r} in the workflow (nodes: {found})")


def split_target(text: str, what: str) -> tuple[str, str]:
    """'NODE.input' -> (NODE, input); NODE may itself contain dots only if it is a class type without any."""
    node, sep, name = text.rpartition(".")
    if not sep or not node or not name:
        raise WorkflowError(f"{what}: expected NODE.input (a node id or class type, a dot, the input name), "
                            f"got {text!r}")
    return node, name


def check_input(prompt: dict, node_id: str, name: str, what: str) -> None:
    """Raises WorkflowError unless node `node_id` of the API prompt has an input `name` (as set or linked)."""
    if node_id not in prompt:
        raise WorkflowError(f"{what}: node {node_id} is not part of the prompt (muted or bypassed?)")
    if name not in prompt[node_id]["inputs"]:
        known = ", ".join(prompt[node_id]["inputs"]) or "none"
        raise WorkflowError(f"{what}: node {node_id} ({prompt[node_id]['class_type']}) has no input {name!r} "
                            f"(inputs: {known})")


def coerce_value(text: str, current: object, what: str) -> object:
    """A command-line value in the type of the input's current value (int, float, bool, string); a link's
    place takes JSON (numbers, true/false) or else the text."""
    try:
        if isinstance(current, bool):
            low = text.strip().lower()
            if low not in ("true", "false", "1", "0"):
                raise ValueError
            return low in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return value
    except ValueError:
        raise WorkflowError(f"{what}: {text!r} is not a valid {type(current).__name__}") from None
    if isinstance(current, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def rewrite_prefixes(prompt: dict, folder: str) -> dict:
    """Every string `filename_prefix` becomes `folder/<the node's own last path part>` (in place)."""
    for node in prompt.values():
        old = node["inputs"].get("filename_prefix")
        if isinstance(old, str):
            own = old.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or "output"
            node["inputs"]["filename_prefix"] = f"{folder}/{own}"
    return prompt
