"""The text-conditioning size of a loaded MODEL, read in the backbone layer (the Zero Conditioning node calls it
and never touches model internals): Wan DiTs and Wan 2.2 loaded by ComfyUI's own loader take 512 umT5 tokens of
the DiT's text width; a model with neither Wan's text embedding nor a UNet context width is refused by name."""
from __future__ import annotations

import pytest

from vdtrack.backbones.comfy_native import CLIP_TEXT_TOKENS, text_context_size
from vdtrack.nodes.motion import VDT_ZeroConditioning


@pytest.mark.parametrize("fixture", ["wan_t2v", "wan22"])
def test_wan_models_take_512_tokens_of_their_text_width(fixture, request):
    model = request.getfixturevalue(fixture)
    width = int(model.model.diffusion_model.text_dim)      # the DiT's own constructor argument
    assert text_context_size(model) == (512, width)
    (cond, extra), = VDT_ZeroConditioning.execute(model).result[0]
    assert cond.shape == (1, 512, width) and not cond.any() and extra == {}


def test_unet_takes_clip_tokens_of_its_context_width(tmp_path_factory):
    import comfy.sd
    from vdt_dev import make_tiny_unets

    paths = make_tiny_unets.build_tiny_unets(str(tmp_path_factory.mktemp("vdt_unet")), kinds=("sd15",))
    model = comfy.sd.load_diffusion_model(paths["sd15"])
    assert text_context_size(model) == (CLIP_TEXT_TOKENS, int(model.model.model_config.unet_config["context_dim"]))


def test_other_models_are_refused_naming_the_input(cosmos):
    # Cosmos-Predict2 has neither Wan's text embedding nor a UNet config context_dim
    with pytest.raises(ValueError, match="model: cannot tell the text width of CosmosPredict2"):
        text_context_size(cosmos)
    with pytest.raises(ValueError, match="^model: "):
        text_context_size(object())
