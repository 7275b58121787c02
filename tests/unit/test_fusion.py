"""TED fusion: fast == reference (with a resize), the effective cosine of docs/methods.md §5, and bad inputs."""
import pytest
import torch

from vdtrack.kernels.fusion import fuse_feature_dicts, fuse_features
from vdtrack.references.fusion import fuse_features_ref


def test_fusion_equals_reference_with_resize():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 5, 6, 8, generator=g, dtype=torch.float64)
    b = torch.randn(2, 3, 3, 5, generator=g, dtype=torch.float64)
    out = fuse_features(a, b, 0.4)
    assert out.shape == (2, 8, 6, 8)
    assert torch.allclose(out, fuse_features_ref(a, b, 0.4), atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.4, 0.6, 1.0])
def test_fusion_effective_cosine(alpha):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(1, 7, 2, 1, generator=g, dtype=torch.float64)
    b = torch.randn(1, 4, 2, 1, generator=g, dtype=torch.float64)
    f = fuse_features(a, b, alpha)

    def cos(x):
        u, v = x[0, :, 0, 0], x[0, :, 1, 0]
        return float(u @ v / (u.norm() * v.norm()))
    expect = (alpha ** 2 * cos(a) + (1 - alpha) ** 2 * cos(b)) / (alpha ** 2 + (1 - alpha) ** 2)
    assert abs(cos(f) - expect) < 1e-12
    assert torch.allclose(f.norm(dim=1), torch.full((1, 2, 1), (alpha ** 2 + (1 - alpha) ** 2) ** 0.5,
                                                     dtype=torch.float64))


def test_fuse_dicts_and_errors():
    fa = {"features": torch.randn(3, 4, 6, 8), "stride": (8, 8), "frame_size": (48, 64), "meta": {"backbone": "x"}}
    fb = {"features": torch.randn(3, 2, 12, 16), "stride": (4, 4), "frame_size": (48, 64), "meta": {}}
    out = fuse_feature_dicts(fa, fb, 0.4)
    assert out["features"].shape == (3, 6, 6, 8) and out["stride"] == (8, 8) and out["frame_size"] == (48, 64)
    with pytest.raises(ValueError, match="alpha"):
        fuse_features(fa["features"], fb["features"], 1.2)
    with pytest.raises(ValueError, match="features_b"):
        fuse_features(fa["features"], fb["features"][:2], 0.5)
    with pytest.raises(ValueError, match="features_b"):
        fuse_feature_dicts(fa, dict(fb, frame_size=(40, 64)), 0.5)
    with pytest.raises(ValueError, match="select heads"):
        fuse_feature_dicts(fa, dict(fb, features=torch.randn(3, 2, 2, 12, 16)), 0.5)
    with pytest.raises(ValueError, match="features_a"):
        fuse_features(torch.randn(4, 6, 8), fb["features"], 0.5)
