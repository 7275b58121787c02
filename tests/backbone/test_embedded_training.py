"""The embedded model's training pieces that can be checked without training: the latent-statistics fold, the
dot map and the pack's model-folder registration."""

import torch

from vdt_model import train as te


def test_fold_makes_comfyui_normalisation_return_the_standardised_latent():
    from comfy.latent_formats import Wan21

    torch.manual_seed(0)
    v = te.new_vae(4)
    with torch.no_grad():                       # give the zero-initialised residual branches some weight
        for n, p in v.named_parameters():
            if n.endswith("residual.6.weight"):
                p.normal_(0, 0.05)
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        mu, _ = te.vae_moments(v, x)
        mean, std = torch.linspace(-0.3, 0.4, 16), torch.linspace(0.5, 2.0, 16)
        z = torch.randn(1, 16, 2, 2, 2)
        dec_before = v.decode(mean.view(1, -1, 1, 1, 1) + std.view(1, -1, 1, 1, 1) * z)
        te.fold_latent_stats(v, mean, std)
        mu2 = v.encode(x)                       # ComfyUI's own encode path
        fmt = Wan21()
        torch.testing.assert_close(fmt.process_in(mu2), (mu - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1),
                                   atol=1e-4, rtol=1e-4)
        dec_after = v.decode(fmt.process_out(z))  # the same standardised latent decodes to the same video
        torch.testing.assert_close(dec_after, dec_before, atol=1e-4, rtol=1e-4)


def test_latent_dot_map_follows_the_causal_frame_grouping():
    dots = torch.zeros(9, 16, 16)
    dots[0, 1, 1] = 1.0          # frame 0 -> latent frame 0, cell (0, 0)
    dots[3, 12, 9] = 0.5         # frames 1-4 -> latent frame 1, cell (1, 1)
    dots[8, 15, 0] = 0.25        # frames 5-8 -> latent frame 2, cell (1, 0)
    m = te.latent_dot_map(dots)
    assert m.shape == (3, 2, 2)
    expected = torch.zeros(3, 2, 2)
    expected[0, 0, 0], expected[1, 1, 1], expected[2, 1, 0] = 1.0, 0.5, 0.25
    assert torch.equal(m, expected)


def test_pack_model_folder_is_registered_with_comfyui(tmp_path, monkeypatch):
    import folder_paths

    from vdtrack.nodes import model_folder

    (tmp_path / "vae").mkdir()
    (tmp_path / "diffusion_models").mkdir()
    monkeypatch.setattr(model_folder, "MODELS_DIR", str(tmp_path))
    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    try:
        added = model_folder.register_model_folders()
        again = model_folder.register_model_folders()
        assert sorted(added) == sorted([str(tmp_path / "vae"), str(tmp_path / "diffusion_models")])
        for kind in ("vae", "diffusion_models"):
            paths = folder_paths.get_folder_paths(kind)
            assert paths.count(str(tmp_path / kind)) == 1 and paths[0] != str(tmp_path / kind)
        assert sorted(again) == sorted(added)
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update({k: (v[0], v[1]) for k, v in saved.items()})


def _small_args(**over):
    a = te.parse_args(["--work", "unused", "--out", "unused", "--size", "16", "--frames", "5", "--vae-crop", "16"])
    for k, v in over.items():
        setattr(a, k, v)
    return a


def test_clip_source_in_process_is_the_rng_stream():
    import numpy as np

    a = _small_args(loader_workers=0)
    videos, dmaps = next(te.clip_source(a, np.random.default_rng(5), (4, 0), 2))
    ref = np.random.default_rng(5)
    expect = [te.raw_clip(ref, a) for _ in range(2)]
    assert videos.shape == (2, 3, 5, 16, 16) and dmaps.shape == (2, 2, 2, 2)
    assert torch.equal(videos, torch.stack([c[0] for c in expect]))
    assert torch.equal(dmaps, torch.stack([c[1] for c in expect]))


def test_clip_source_workers_draw_the_seeded_stream_of_their_key():
    import numpy as np

    a = _small_args(loader_workers=1, seed=3)
    videos, _ = next(te.clip_source(a, None, (4, 7), 2))
    ref = np.random.default_rng([3, 4, 7, 0])                    # worker 0 of key (4, 7)
    expect = torch.stack([te.raw_clip(ref, a)[0] for _ in range(2)])
    assert torch.equal(videos, expect)
    other = next(iter(te.ClipStream(a, (4, 8))))[0]
    assert not torch.equal(other, expect[0])                      # another key, another stream


def test_training_flags_are_checked(tmp_path, capsys):
    import pytest

    not_safetensors = tmp_path / "notes.txt"
    not_safetensors.write_text("not a model")
    cases = [("refresh-clips", "0"), ("loader-workers", "-1"), ("init-dit", str(tmp_path / "none.safetensors")),
             ("init-dit", str(not_safetensors)), ("ema", "nan"), ("ema", "1"), ("dot-weight", "nan"),
             ("dit-minutes", "0"), ("budget-minutes", "nan"), ("vae-minutes", "-1"), ("frames", "16"),
             ("size", "60"), ("dim", "100"), ("layers", "0"), ("dit-batch", "0"), ("dit-lr", "nan"),
             ("drop-cond", "2"), ("threads", "0"), ("pool", "0"), ("refresh-every", "-1"), ("device", "bogus"),
             ("device", "mps"), ("out", str(not_safetensors)), ("work", str(not_safetensors))]
    if not torch.cuda.is_available():
        cases.append(("device", "cuda"))
    for flag, bad in cases:
        with pytest.raises(SystemExit):
            te.parse_args(["--work", str(tmp_path), "--out", str(tmp_path), f"--{flag}", bad])   # the last wins
        assert f"--{flag}" in capsys.readouterr().err, flag
    with pytest.raises(SystemExit):                               # no default output folder (it was models/)
        te.parse_args(["--work", str(tmp_path)])


def test_a_warm_start_of_another_architecture_is_refused_naming_the_file():
    import pytest

    a = _small_args(dim=128, layers=1, ffn=64)
    small = te.new_dit(128, 1, 64, 0)
    with pytest.raises(SystemExit, match="--init-dit x.safetensors: made for another architecture"):
        te.load_matching(small, te.new_dit(128, 2, 64, 0).state_dict(), "--init-dit x.safetensors", a)
    te.load_matching(small, te.new_dit(128, 1, 64, 1).state_dict(), "--init-dit y.safetensors", a)   # same shapes


def test_a_resume_with_other_run_flags_is_refused_naming_them(tmp_path):
    import pytest

    base = ["--work", str(tmp_path), "--out", str(tmp_path / "o")]
    run = te.Run(te.parse_args(base))
    run.save()
    te.Run(te.parse_args(base + ["--dit-minutes", "99"]))         # schedule flags may change on a resume
    with pytest.raises(SystemExit, match=r"--frames 17 \(asked 9\), --dim 256 \(asked 384\)"):
        te.Run(te.parse_args(base + ["--dim", "384", "--frames", "9"]))
