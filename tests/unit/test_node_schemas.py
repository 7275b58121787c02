"""Every node's V3 schema is valid and follows the pack's conventions (ids, categories, tooltips)."""
from __future__ import annotations

import pytest

from vdtrack.nodes import all_nodes


@pytest.fixture(scope="module")
def schemas():
    return {cls: cls.GET_SCHEMA() for cls in all_nodes(strict=True)}


def test_node_ids_prefixed_and_unique(schemas):
    ids = [s.node_id for s in schemas.values()]
    assert len(ids) == len(set(ids)), ids
    for s in schemas.values():
        assert s.node_id.startswith("VDT_"), s.node_id
        assert s.category.startswith("vdtrack/"), (s.node_id, s.category)
        assert (s.display_name or "").startswith("VDT "), s.node_id
        assert s.description, f"{s.node_id} has no description"


def test_every_input_has_a_tooltip(schemas):
    for s in schemas.values():
        for inp in s.inputs:
            assert inp.tooltip, f"{s.node_id}.{inp.id} has no tooltip"


def test_node_files_and_every_node_checks_its_numbers(schemas):
    """No node module shadows a ComfyUI name (io, ui, nodes), and every node derives from VdtNode (its numeric
    inputs are checked before it runs)."""
    from vdtrack.nodes.inputs import VdtNode
    for cls, s in schemas.items():
        module = cls.__module__.rsplit(".", 1)[1]
        assert module not in ("io", "ui", "nodes"), cls.__module__
        assert issubclass(cls, VdtNode), s.node_id


def test_one_file_per_category_named_after_it(schemas):
    """The nodes of category vdtrack/X live in nodes/X.py, and nowhere else: a newcomer finds a node's code from
    its menu entry, and a file never mixes families."""
    for cls, s in schemas.items():
        assert s.category == f"vdtrack/{cls.__module__.rsplit('.', 1)[1]}", (s.node_id, cls.__module__, s.category)
