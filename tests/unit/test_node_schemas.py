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


def test_feature_extraction_nodes_share_one_noise_convention(schemas):
    """Extract Diffusion Features and Extract Backbone Features take the noise level and the paper timestep the same
    way (same ids, defaults, ranges, tooltips): fails as soon as one of them drifts apart again."""
    from vdtrack.nodes.backbone import VDT_ExtractBackboneFeatures
    from vdtrack.nodes.diffusion import VDT_ExtractDiffusionFeatures

    def noise_inputs(cls):
        return {i.id: i.as_dict() for i in schemas[cls].inputs if i.id in ("noise_level", "timestep")}

    diffusion, backbone = noise_inputs(VDT_ExtractDiffusionFeatures), noise_inputs(VDT_ExtractBackboneFeatures)
    assert set(diffusion) == {"noise_level", "timestep"} and diffusion == backbone
    assert (diffusion["timestep"]["default"], diffusion["timestep"]["min"]) == (0, -1)   # 0 = off; -1: old 'off'
    assert diffusion["noise_level"]["default"] == 0.02                                  # HeFT: last of 50 steps
    for cls in (VDT_ExtractDiffusionFeatures, VDT_ExtractBackboneFeatures):
        for old in (-1, 0):                       # the two nodes' former 'no timestep' values still validate
            assert cls.validate_inputs(noise_level=0.3, timestep=old) is True, (cls, old)
        assert cls.validate_inputs(timestep=-2).startswith("timestep")


def test_noise_level_of_a_timestep_or_the_noise_level():
    from vdtrack.nodes.inputs import noise_level_of

    class Schedule:                               # a backbone whose level is t / 1000
        def noise_level_from_timestep(self, t):
            return t / 1000.0

    assert noise_level_of(Schedule(), 0.3, 0) == 0.3 and noise_level_of(Schedule(), 0.3, -1) == 0.3
    assert noise_level_of(Schedule(), 0.3, 1) == 0.001 and noise_level_of(Schedule(), 0.7, 300) == 0.3
    assert noise_level_of(Schedule(), 0.9, 500) == 0.5
