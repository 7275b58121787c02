"""The shared input check: every Int/Float input of every node is range- and finiteness-checked before the node
runs (values through links bypass ComfyUI's widget checks)."""
from __future__ import annotations

import math

import pytest
import torch

from vdtrack.nodes import all_nodes
from vdtrack.nodes.inputs import check_number, number_limits
from vdtrack.nodes.tracking import VDT_TrackNearestNeighbour, VDT_TrackPoints
from vdtrack.nodes.tracks import VDT_TracksToATI


def test_check_number():
    assert check_number("n", 3, 0, 5, integer=True) == 3
    assert check_number("x", 2, 0.0, 5.0) == 2.0 and isinstance(check_number("x", 2, 0.0, 5.0), float)
    for bad, match in ((float("nan"), "n: nan is not a finite"), (math.inf, "not a finite"), (6, "outside"),
                       (-1, "outside"), ("3", "expected a number"), (None, "expected a number"),
                       (True, "expected a number"), (10 ** 400, r"digits\) is outside")):
        with pytest.raises(ValueError, match=match):
            check_number("n", bad, 0, 5, integer=True)
    with pytest.raises(ValueError, match="whole number"):
        check_number("n", 2.5, 0, 5, integer=True)
    assert check_number("n", torch.tensor(4), 0, 5, integer=True) == 4


def test_every_numeric_input_is_checked_before_execute():
    """For every node and each of its Int/Float inputs: NaN, and a value past max (as a link would deliver),
    are refused with a ValueError naming that input, before the node does any work."""
    checked = 0
    for cls in all_nodes(strict=True):
        for name, (lo, hi, integer) in number_limits(cls).items():
            values = [float("nan")] + ([hi + 1] if hi is not None else []) + ([lo - 1] if lo is not None else [])
            for v in values:
                with pytest.raises(ValueError, match=f"^{name}: "):
                    cls.execute(**{name: v})   # the other inputs are missing: the check must come first
                checked += 1
    assert checked > 100


def test_link_values_bypassing_widget_limits():
    tracks = {"track_path": torch.zeros(3, 2, 2), "track_visibility": torch.ones(3, 2, dtype=torch.bool)}
    with pytest.raises(ValueError, match="num_samples"):
        VDT_TracksToATI.execute(tracks, 0)
    f = {"features": torch.rand(3, 8, 4, 5), "stride": (4, 4), "frame_size": (16, 20)}
    with pytest.raises(ValueError, match="refine_radius"):
        VDT_TrackNearestNeighbour.execute(f, "3,4", 0.6, 1601, 0.05)
    with pytest.raises(ValueError, match="nn_refine_radius"):
        VDT_TrackPoints.execute(f, "3,4", "nearest_neighbour", nn_refine_radius=1601)


@pytest.mark.parametrize("text, says", [("-3,4", "negative: x and y are pixels"),
                                        ("3,4,0.5", "expected a whole frame index >= 0"),
                                        ("3,4,-1", "expected a whole frame index >= 0")])
def test_points_checked_before_the_run_say_what_is_wrong_without_stand_in_sizes(text, says):
    """Before the run the frame size and count are not known: the message says what is wrong with the point
    itself instead of quoting the stand-in sizes (2^31) the check uses."""
    from vdtrack.nodes.inputs import points_syntax

    with pytest.raises(ValueError) as e:
        points_syntax(text)
    assert says in str(e.value) and "2147483" not in str(e.value), str(e.value)


def test_head_search_is_an_output_node():
    """It shows its table and saves a CSV: a graph that ends in it must be accepted by ComfyUI."""
    from vdtrack.nodes.tracking import VDT_HeFTHeadSearch

    assert VDT_HeFTHeadSearch.define_schema().is_output_node
