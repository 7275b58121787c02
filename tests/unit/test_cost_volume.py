"""Cost volumes, descriptor sampling and pixel <-> cell coordinates: fast versions against plain references."""
import pytest
import torch

from vdtrack.kernels.cost_volume import cell_to_pixel, iter_cost_volume, pixel_to_cell, sample_descriptors
from vdtrack.references.cost_volume import cost_volume_ref, sample_descriptors_ref


def cost_volume(desc, feats, kind="cosine", scale=1.0, max_elements=2 ** 25, progress=None):
    """The whole [T,N,h,w] volume, gathered from the streamed chunks."""
    return torch.cat([c for _, c in iter_cost_volume(desc, feats, kind, scale, max_elements, progress)])


def test_pixel_cell_mapping_by_hand():
    # stride 8: cell 0 is centred on pixel 3.5, cell 1 on 11.5; pixel -0.5 (left frame edge) is cell -0.5
    px = torch.tensor([[3.5, 11.5], [-0.5, 0.0]], dtype=torch.float64)
    c = pixel_to_cell(px, (8, 8))
    assert torch.allclose(c, torch.tensor([[0.0, 1.0], [-0.5, -7 / 16]], dtype=torch.float64))
    assert torch.allclose(cell_to_pixel(c, (8, 8)), px)
    # anisotropic stride (sy=4, sx=2): x uses sx, y uses sy
    assert pixel_to_cell(torch.tensor([0.5, 1.5]), (4, 2)).tolist() == [0.0, 0.0]
    cc = cell_to_pixel(torch.tensor([2.0, 1.0]), (4, 2))       # centre of cell (row 1, column 2)
    assert cc.tolist() == [4.5, 5.5]


def test_sample_descriptors_matches_reference_and_cell_centres():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(3, 5, 6, 7, generator=g, dtype=torch.float64)
    stride = (4, 4)
    pts = torch.tensor([[0, 0.0, 0.0], [1, 27.4, 23.2], [2, 13.3, 7.9], [2, -0.5, 23.5], [1, 9.5, 5.5]])
    fast = sample_descriptors(f, pts, stride)
    ref = sample_descriptors_ref(f, pts, stride)
    assert torch.allclose(fast, ref, atol=1e-12)
    # pixel (9.5, 5.5) is exactly the centre of cell (x=2, y=1)
    assert torch.allclose(fast[4], f[1, :, 1, 2])
    # beyond the outer cell centres the value is clamped to the border cell
    assert torch.allclose(fast[0], f[0, :, 0, 0])


@pytest.mark.parametrize("kind", ["cosine", "dot"])
def test_cost_volume_chunked_equals_reference(kind):
    g = torch.Generator().manual_seed(1)
    f = torch.randn(7, 6, 4, 5, generator=g, dtype=torch.float64)
    d = torch.randn(3, 6, generator=g, dtype=torch.float64)
    ref = cost_volume_ref(d, f, kind, scale=2.5)
    steps = []
    fast = cost_volume(d, f, kind, scale=2.5, max_elements=2 * 3 * 20, progress=lambda: steps.append(1))
    assert fast.shape == (7, 3, 4, 5)
    assert torch.allclose(fast, ref, atol=1e-12)
    assert len(steps) == 7
    # chunks of two frames: bounded memory, clip-length independent
    assert [t0 for t0, _ in iter_cost_volume(d, f, kind, 2.5, max_elements=2 * 3 * 20)] == [0, 2, 4, 6]
    if kind == "cosine":
        assert fast.abs().max() <= 1 + 1e-12


def test_cost_volume_bad_inputs():
    f = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="kind"):
        cost_volume(torch.randn(1, 4), f, "l2")
    with pytest.raises(ValueError, match="descriptors"):
        cost_volume(torch.randn(1, 5), f)
    with pytest.raises(ValueError, match="features"):
        cost_volume(torch.randn(1, 4), torch.randn(4, 3, 3))
    bad = f.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        cost_volume(torch.randn(1, 4), bad)
    with pytest.raises(ValueError, match="scale"):
        cost_volume(torch.randn(1, 4), f, "dot", scale=0.0)
    with pytest.raises(ValueError, match="stride"):
        sample_descriptors(f, torch.tensor([[0, 1.0, 1.0]]), (0, 4))
    with pytest.raises(ValueError, match="points"):
        sample_descriptors(f, torch.tensor([[5, 1.0, 1.0]]), (4, 4))
