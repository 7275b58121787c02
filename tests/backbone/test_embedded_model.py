"""The embedded model the pack ships (models/): loaded by ComfyUI's own loader code, and its headline number
pinned so a regression in the VAE/DiT path, the first-frame guidance, feature capture or the red-marker tracker
shows up. The pinned values were measured with tools/eval_embedded.py's settings on the same held-out clip."""
import os

import pytest
import torch

from vdt_dev.paths import ROOT
from vdt_model import evaluate as ev

MODELS = os.path.join(ROOT, "models")
SEED_BASE = 900000           # the evaluation's held-out clips (training never draws these seeds on purpose)
# measured 2026-11-30 on the shipped weights (CPU step 22,800 + GPU step 4,970), x100
PINNED = {"pp_delta_avg": 4.49, "pp_aj": 2.19, "pp_oa": 86.25, "heft_delta_avg": 3.62}
TOL = 1.5                    # x100 points: float/thread noise is far below; a broken path moves it by more
CONTROL_OA_GAP = 30.0        # trained OA 86.25 vs 27.50 for the random-weight control on this clip


def _have_models() -> bool:
    return all(os.path.isfile(os.path.join(MODELS, d, n)) for d, n in (("diffusion_models", ev.DIT_NAME),
                                                                      ("vae", ev.VAE_NAME)))


pytestmark = pytest.mark.skipif(not _have_models(), reason="the embedded model files are not in models/")


@pytest.fixture(autouse=True)
def one_thread():
    """The pinned values were measured with one torch thread; run them the same way (float sums differ by thread
    count, and the red tracker's thresholds can turn such differences into different pixels)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clip_and_queries():
    clip = ev.held_out_clips("normal", 1, 3, SEED_BASE)[0]
    idx, q = ev.first_frame_queries(clip)
    return clip, idx, q


@pytest.fixture(scope="module")
def trained():
    return ev.load_backbone(MODELS)


def test_files_are_small_and_comfyui_detects_them(trained):
    import comfy.model_base

    size = sum(os.path.getsize(os.path.join(MODELS, d, n)) for d, n in (("diffusion_models", ev.DIT_NAME),
                                                                        ("vae", ev.VAE_NAME)))
    assert size < 25e6
    assert isinstance(trained.model.model, comfy.model_base.WAN21)
    assert trained.image_input and trained.in_channels == 36 and trained.text_dim == 4096
    # ComfyUI's Wan latent normalisation gives about unit variance on the training distribution
    clip = ev.held_out_clips("normal", 1, 0, SEED_BASE + 1)[0]
    z = trained.encode(clip.video)
    live = z[0, :12]
    assert abs(float(live.mean())) < 0.5 and 0.5 < float(live.std()) < 2.0


def test_point_prompting_headline_is_pinned_and_finds_markers_the_control_loses(trained, clip_and_queries):
    """Pinned AJ / delta_avg / OA; and what training bought: the trained model carries the pasted marker into
    later frames (the red tracker finds it: occlusion accuracy), the same architecture with its initial random
    weights loses it. Position accuracy is not asserted above "static": on this clip the shipped model's delta_avg
    (4.49) is above holding the point still (3.48), but by less than the pin's tolerance, and over the held-out
    table it is below "static" on normal clips, far above it on identical objects (docs/embedded_model.md)."""
    clip, idx, q = clip_and_queries
    s = ev.Settings()
    path, vis, _ = ev.point_prompting_tracks(trained, clip, q, s)
    pp = ev.score(clip, idx, path, vis)
    d, aj, oa = (100 * pp[k] for k in ("average_pts_within_thresh", "average_jaccard", "occlusion_accuracy"))
    assert abs(d - PINNED["pp_delta_avg"]) <= TOL, d
    assert abs(aj - PINNED["pp_aj"]) <= TOL, aj
    assert abs(oa - PINNED["pp_oa"]) <= TOL, oa
    control = ev.load_backbone(MODELS, control=True, seed=s.seed)
    cpath, cvis, _ = ev.point_prompting_tracks(control, clip, q, s)
    assert oa - 100 * ev.score(clip, idx, cpath, cvis)["occlusion_accuracy"] >= CONTROL_OA_GAP


def test_heft_on_the_embedded_model_is_pinned(trained, clip_and_queries):
    clip, idx, q = clip_and_queries
    s = ev.Settings()
    feats = ev.diffusion_features(trained, clip, s)
    path, vis = ev.feature_trackers(feats, s.feat_layer, clip, q)["HeFT"]
    d = 100 * ev.score(clip, idx, path, vis)["average_pts_within_thresh"]
    assert abs(d - PINNED["heft_delta_avg"]) <= TOL, d
