"""The pack inside a real ComfyUI server: registration, every shipped workflow run over HTTP, and broken
prompts answered with clear errors while the server keeps serving."""
from __future__ import annotations

import copy
import os
import re

import pytest

from vdt_dev.paths import ROOT, WORKFLOWS, load_workflow
from vdtrack.batch.client import execution_error
from vdtrack.batch.workflow import ui_to_api

pytestmark = pytest.mark.e2e


def _our_files(block: str) -> list[str]:
    """Files of this repository (outside its .vdt environment) named in a traceback; the pack is linked into
    custom_nodes, so a path is resolved before it is compared."""
    root = os.path.realpath(ROOT)
    env = os.path.join(root, ".vdt")
    ours = []
    for path in re.findall(r'File "([^"]+)"', block):
        if not os.path.isabs(path):          # "<frozen importlib._bootstrap>" and the like
            continue
        real = os.path.realpath(path)
        if "/custom_nodes/vdtrack/" in path or (real.startswith(root + os.sep) and not real.startswith(env + os.sep)):
            ours.append(path)
    return ours


def test_pack_imports_cleanly(server):
    startup = server.log().split("Starting server")[0]
    assert "custom_nodes/vdtrack" in startup
    bad = [l for l in startup.splitlines() if ("IMPORT FAILED" in l or "skipping nodes" in l) and "vdtrack" in l]
    assert not bad, bad
    # ComfyUI's own audio nodes fail without torchaudio (not installed on purpose); nothing of ours may
    for block in startup.split("Traceback (most recent call last):")[1:]:
        assert not _our_files(block), block[:2000]


def test_object_info_lists_every_node_under_vdtrack(object_info):
    ours = {k: v for k, v in object_info.items() if k.startswith("VDT_")}
    assert len(ours) >= 10, sorted(ours)
    for node_id, info in ours.items():
        assert info["category"].startswith("vdtrack/"), (node_id, info["category"])
        assert (info.get("display_name") or "").startswith("VDT "), node_id
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
    # nothing of ours outside our category, nothing unprefixed in our category
    for node_id, info in object_info.items():
        if info["category"].startswith("vdtrack"):
            assert node_id.startswith("VDT_"), node_id


def test_tracks_socket_is_cores_type(object_info):
    """TRACKS must be the plain type string so our tracks link with core's Wan-Move nodes and other packs."""
    types = {o for k, v in object_info.items() if k.startswith("VDT_") for o in v["output"]}
    assert "TRACKS" in types


@pytest.mark.parametrize("path", WORKFLOWS, ids=[os.path.basename(p) for p in WORKFLOWS])
def test_shipped_workflow_runs(server, object_info, path):
    prompt = ui_to_api(load_workflow(path), object_info)
    h = server.run(prompt, timeout=600)
    assert h["outputs"], "the workflow produced no outputs"


def _first_workflow_prompt(object_info, node_type):
    for path in WORKFLOWS:
        prompt = ui_to_api(load_workflow(path), object_info)
        for nid, node in prompt.items():
            if node["class_type"] == node_type:
                return prompt, nid
    pytest.fail(f"no shipped workflow uses {node_type}")


def test_invalid_prompts_get_node_errors(server, object_info):
    prompt, nid = _first_workflow_prompt(object_info, "VDT_SyntheticClip")
    bad = copy.deepcopy(prompt)
    bad[nid]["inputs"]["frames"] = 10**9                       # above the widget's max
    status, r = server.queue(bad)
    assert status == 400 and "frames" in str(r), r
    bad = copy.deepcopy(prompt)
    bad[nid]["inputs"]["seed"] = "not a number"
    status, r = server.queue(bad)
    assert status == 400 and "seed" in str(r), r
    assert server.get("/system_stats")                          # still serving


def test_runtime_errors_name_the_input(server, object_info):
    prompt, nid = _first_workflow_prompt(object_info, "VDT_FlowTracker")
    bad = copy.deepcopy(prompt)
    bad[nid]["inputs"]["points"] = "100000,5"                   # outside the frame
    status, r = server.queue(bad)
    assert status == 200, r
    h = server.wait(r["prompt_id"])
    assert h["status"]["status_str"] == "error"
    err = execution_error(h)
    assert err and err["node_id"] == nid and "points" in err["exception_message"], err
    assert "outside" in err["exception_message"]
    bad[nid]["inputs"]["points"] = "[{\"x\": 3, "                # malformed JSON: refused before the graph runs
    status, r = server.queue(bad)                                # (validate_inputs checks the text)
    assert status == 400 and nid in r.get("node_errors", {}) and "points" in str(r["node_errors"][nid]), r
    # the server survives and still runs a good prompt afterwards
    h = server.run(prompt)
    assert h["status"]["status_str"] == "success"
