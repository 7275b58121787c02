"""The headless UI -> API converter (vdtrack.batch.workflow) on a hand-built workflow: widget order,
the UI-only 'control after generate' value, links, widgets converted to inputs, muted nodes and notes."""
from __future__ import annotations

import pytest

from vdtrack.batch.workflow import ui_to_api

OBJECT_INFO = {
    "Clip": {"input": {"required": {"seed": ["INT", {"control_after_generate": True}], "frames": ["INT", {}],
                                    "variant": [["a", "b"]]}},
             "input_order": {"required": ["seed", "frames", "variant"]}},
    "Track": {"input": {"required": {"images": ["IMAGE", {}], "points": ["STRING", {"multiline": True}],
                                     "method": ["COMBO", {"options": ["x", "y"]}]},
                        "optional": {"keys": ["VDT_FEATURES", {}], "scale": ["FLOAT", {}]}},
              "input_order": {"required": ["images", "points", "method"], "optional": ["keys", "scale"]}},
}


def workflow(mode=0):
    return {
        "nodes": [
            {"id": 1, "type": "Clip", "mode": 0, "inputs": [], "widgets_values": [7, "fixed", 24, "b"]},
            {"id": 2, "type": "Track", "mode": mode,
             "inputs": [{"name": "images", "link": 10}, {"name": "points", "link": 11, "widget": {"name": "points"}},
                        {"name": "keys", "link": None}],
             "widgets_values": ["1,2", "y", 0.5]},
            {"id": 3, "type": "Note", "mode": 0, "widgets_values": ["a note"]},
        ],
        "links": [[10, 1, 0, 2, 0, "IMAGE"], [11, 1, 4, 2, 1, "STRING"]],
    }


def test_widgets_links_and_control_values():
    assert ui_to_api(workflow(), OBJECT_INFO) == {
        "1": {"class_type": "Clip", "inputs": {"seed": 7, "frames": 24, "variant": "b"}},
        "2": {"class_type": "Track", "inputs": {"images": ["1", 0], "points": ["1", 4], "method": "y",
                                                "scale": 0.5}},
    }


def test_muted_and_bypassed_nodes_are_left_out():
    for mode in (2, 4):
        assert set(ui_to_api(workflow(mode), OBJECT_INFO)) == {"1"}


def test_unknown_node_type_names_the_node():
    wf = workflow()
    wf["nodes"][1]["type"] = "Missing"
    with pytest.raises(ValueError, match="node 2.*Missing"):
        ui_to_api(wf, OBJECT_INFO)
