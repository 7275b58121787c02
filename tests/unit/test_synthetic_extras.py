"""Optional extras of the synthetic generator: textureless objects and coloured dots riding on surfaces."""
import numpy as np
import torch

from vdtrack.kernels.synthetic import make_clip


def test_extras_off_leave_the_default_clip_unchanged():
    a = make_clip(frames=4, height=48, width=48, seed=7, background_points=3)
    b = make_clip(frames=4, height=48, width=48, seed=7, background_points=3, textureless=0.0, dots_per_object=0,
                  background_dots=0)
    assert torch.equal(a.video, b.video) and torch.equal(a.track_path, b.track_path)
    assert a.dot_coverage is None


def test_extras_keep_geometry_and_ground_truth():
    a = make_clip(frames=6, height=64, width=64, seed=3, points_per_object=5)
    b = make_clip(frames=6, height=64, width=64, seed=3, points_per_object=5, textureless=1.0, dots_per_object=2,
                  background_dots=2)
    assert torch.equal(a.track_path, b.track_path) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.video, b.video)


def test_textureless_objects_are_one_flat_colour():
    c = make_clip(frames=3, height=64, width=64, seed=5, num_objects=1, textureless=1.0, points_per_object=0)
    inside = c.labels == 1
    # away from the anti-aliased edge, every pixel of the (only) object has the same colour
    core = torch.nn.functional.max_pool2d((~inside).float()[:, None], 5, 1, 2)[:, 0] == 0
    px = c.video[core]
    assert px.shape[0] > 20
    assert float((px - px[0]).abs().max()) < 1e-4


def test_dots_ride_on_the_object_and_half_are_red():
    c = make_clip(frames=8, height=96, width=96, seed=11, num_objects=2, dots_per_object=3, background_dots=2,
                  points_per_object=0)
    cov = c.dot_coverage
    assert cov.shape == (8, 96, 96) and float(cov.max()) == 1.0
    full = cov >= 0.999
    colours = c.video[full]
    # fully covered dot pixels carry a saturated colour (max channel 1, min 0), some of them pure red
    assert float((colours.max(-1).values - 1).abs().max()) < 1e-4 and float(colours.min(-1).values.max()) < 1e-4
    red = (colours[:, 0] > 0.999) & (colours[:, 1:].max(-1).values < 1e-3)
    assert bool(red.any())
    # every frame has dots and they move (objects and background both move)
    assert bool((cov.flatten(1).amax(1) > 0.99).all())
    assert not torch.equal(cov[0], cov[-1])


def test_extras_are_checked():
    import pytest

    with pytest.raises(ValueError, match="textureless"):
        make_clip(frames=2, height=32, width=32, textureless=1.5)
    with pytest.raises(ValueError, match="dots_per_object"):
        make_clip(frames=2, height=32, width=32, dots_per_object=-1)
