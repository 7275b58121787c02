"""Drawing nodes on huge requests (issue 11, item 6): the work of a track overlay, a tracks mask or markers is
estimated exactly up front and refused beyond checks.MAX_PIXEL_TESTS with the estimate and the input to change;
within one long frame the interrupt is checked between chunks (event-driven: the interrupt is raised by the
drawing's own first chunk, never by a timer); chunking (also of one frame's trail pieces) changes no pixel."""
from __future__ import annotations

import pytest
import torch

import comfy.model_management as mm
from vdtrack.kernels import markers, track_draw
from vdtrack.nodes.point_prompting import VDT_DrawMarkers
from vdtrack.nodes.tracks import VDT_TracksToMask
from vdtrack.nodes.visualize import VDT_VisualizeTracks


def _tracks(frames: int, n: int, size: int, seed: int = 0, step: float = 6.0):
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(n, 2, generator=g) * size
    walk = torch.cumsum(torch.randn(frames, n, 2, generator=g) * step, 0)
    path = (start + walk).clamp(-10, size + 10)
    vis = torch.rand(frames, n, generator=g) > 0.2
    return path, vis


def _counting(monkeypatch, module, name):
    """Wrap module.name to count the patch pixels it is asked for; returns the running count [int]."""
    seen = [0]
    inner = getattr(module, name)

    def wrapped(*a, **k):
        out = inner(*a, **k)
        seen[0] += out[0].numel() if isinstance(out, tuple) else 0
        return out
    monkeypatch.setattr(module, name, wrapped)
    return seen


@pytest.mark.parametrize("radius,trail", [(3.0, 8), (0.0, 5), (6.0, 0), (2.5, 100)])
def test_work_estimate_is_exact(monkeypatch, radius, trail):
    path, vis = _tracks(12, 40, 64)
    seen = _counting(monkeypatch, track_draw, "_segment_coverage")
    track_draw.draw_tracks(torch.rand(12, 64, 64, 3), path, vis, radius=radius, trail=trail)
    trails, dots = track_draw.draw_tracks_work(path, vis, radius, trail)
    assert trails + dots == seen[0] > 0


def test_chunking_changes_no_pixel(monkeypatch):
    """Long jumps make many trail pieces per frame; with tiny chunks they are split and drawn in many runs."""
    path, vis = _tracks(10, 30, 96, seed=1, step=25.0)
    video = torch.rand(10, 96, 96, 3)
    whole = track_draw.draw_tracks(video, path, vis, radius=3.0, trail=6)
    mask = track_draw.tracks_to_mask(path, vis, (96, 96), 5.0)
    runs = []
    split = track_draw._split_chunks

    def counted(*a):
        for run in split(*a):
            runs.append(run[0].shape[0])
            yield run
    monkeypatch.setattr(track_draw, "_split_chunks", counted)
    monkeypatch.setattr(track_draw, "MAX_ELEMENTS", 3000)
    assert torch.equal(track_draw.draw_tracks(video, path, vis, radius=3.0, trail=6), whole)
    assert torch.equal(track_draw.tracks_to_mask(path, vis, (96, 96), 5.0), mask)
    assert len(runs) > 10 * 2     # more than one run of pieces per frame on average


def test_absurd_drawings_are_refused_up_front():
    """The issue's example (36,864 tracks, radius 64, trail 1000) and its kin: refused with the estimate and the
    input to change, before any pixel is drawn (the estimate takes no drawing time)."""
    frames, n = 40, 36_864
    path, vis = _tracks(frames, n, 64, step=1.0)
    tracks = {"track_path": path, "track_visibility": vis, "frame_size": (64, 64)}
    video = torch.rand(frames, 64, 64, 3)
    with pytest.raises(ValueError, match=r"^trail: drawing 36,864 tracks over 40 frames with radius 64 and trail "
                                         r"1000 means about [\d.e+]+ pixel tests, more than the 2.1e\+09 one drawing "
                                         r"may take .*; lower trail"):
        VDT_VisualizeTracks.execute(video, tracks, 64.0, 1000)
    with pytest.raises(ValueError, match=r"^radius: drawing 36,864 tracks .* trail 0 means about .*; lower radius"):
        VDT_VisualizeTracks.execute(video, tracks, 64.0, 0)
    with pytest.raises(ValueError, match=r"^radius: disks of radius 256 around [\d,]+ visible points means about "
                                         r".*; lower radius"):
        VDT_TracksToMask.execute(tracks, video, 256.0)
    with pytest.raises(ValueError, match=r"^radius: [\d,]+ markers of radius 64 px \(8x8 sub-samples per pixel\) "
                                         r"means about .*; lower radius"):
        VDT_DrawMarkers.execute(video, "", "#ff0000", 64.0, "query frame", tracks)
    # what the defaults ask for on the same tracks stays well inside the bound
    trails, dots = track_draw.draw_tracks_work(path[:, :1000], vis[:, :1000], 3.0, 8)
    assert trails + dots < track_draw.MAX_ELEMENTS * 100


@pytest.fixture
def interrupt_in_first_chunk(monkeypatch):
    """Sets ComfyUI's interrupt flag from inside the first chunk a drawing kernel computes (what a user's click
    does while a frame is being drawn); returns the number of chunks computed [int]."""
    chunks = [0]

    def wrap(module, name):
        inner = getattr(module, name)

        def wrapped(*a, **k):
            chunks[0] += 1
            mm.interrupt_current_processing(True)
            return inner(*a, **k)
        monkeypatch.setattr(module, name, wrapped)

    wrap(track_draw, "_segment_coverage")
    wrap(markers, "_paste_coverage")
    monkeypatch.setattr(track_draw, "MAX_ELEMENTS", 2000)          # many chunks in one frame
    monkeypatch.setattr(markers, "MAX_ELEMENTS", 20000)
    yield chunks
    mm.interrupt_current_processing(False)


def test_interrupt_within_one_frame(interrupt_in_first_chunk):
    path, vis = _tracks(1, 400, 64)
    vis[:] = True
    tracks = {"track_path": path, "track_visibility": vis, "frame_size": (64, 64)}
    video = torch.rand(1, 64, 64, 3)
    calls = [(VDT_VisualizeTracks.execute, (video, tracks, 6.0, 0)),
             (VDT_TracksToMask.execute, (tracks, video, 6.0)),
             (VDT_DrawMarkers.execute, (video, "", "#ff0000", 6.0, "query frame", tracks))]
    for fn, args in calls:
        interrupt_in_first_chunk[0] = 0
        mm.interrupt_current_processing(False)
        with pytest.raises(mm.InterruptProcessingException):
            fn(*args)
        assert interrupt_in_first_chunk[0] == 1, fn      # stopped at the next chunk of the same (only) frame
