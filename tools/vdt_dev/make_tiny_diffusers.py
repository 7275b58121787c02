"""Tiny, randomly initialised diffusers video models for tests (no download, CPU, a few MB).

Writes ComfyUI-style folders `<dest>/<name>/` (model_index.json + one subfolder per component,
save_pretrained with safetensors), the layout a user gets from a diffusers repository under
ComfyUI's models/diffusers/:

  tiny_i2vgen     I2VGenXLUNet (4 levels like the real model, so up_blocks[2] has stride 8)
                  + AutoencoderKL + a tiny CLIP image encoder + DDIM scheduler config
  tiny_svd        UNetSpatioTemporalConditionModel (4 levels; GroupNorm(32) forces 32+ channels) + AutoencoderKLTemporalDecoder
                  + tiny CLIP image encoder + scheduler config
  tiny_cogvideox  CogVideoXTransformer3DModel (3 layers) + AutoencoderKLCogVideoX + CogVideoXDDIM config

Also writes the denoisers alone as single files (`<name>_single.safetensors`) with their
config folder (`<name>_single_config/config.json`) to test single-file loading.

CLI: python tools/vdt_dev/make_tiny_diffusers.py DEST_DIR
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

import torch

SEED = 0


def _clip_image_encoder(projection_dim: int):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=projection_dim)
    return CLIPVisionModelWithProjection(cfg)


def _save(folder: str, components: dict, pipeline_class: str) -> None:
    os.makedirs(folder, exist_ok=True)
    index = {"_class_name": pipeline_class, "_diffusers_version": "0.42.1"}
    for name, (library, obj) in components.items():
        sub = os.path.join(folder, name)
        if isinstance(obj, torch.nn.Module):
            obj.eval().save_pretrained(sub, safe_serialization=True)
        else:                                   # a scheduler: config only
            obj.save_config(sub)
        index[name] = [library, type(obj).__name__]
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=1)


def _single_file(folder: str, component: str, dest_dir: str, name: str) -> dict:
    """Copy a component's weights to one file + its config folder (the 'single file + config' layout)."""
    src = os.path.join(folder, component)
    file = os.path.join(dest_dir, f"{name}_single.safetensors")
    shutil.copyfile(os.path.join(src, "diffusion_pytorch_model.safetensors"), file)
    cfg_dir = os.path.join(dest_dir, f"{name}_single_config")
    os.makedirs(cfg_dir, exist_ok=True)
    shutil.copyfile(os.path.join(src, "config.json"), os.path.join(cfg_dir, "config.json"))
    return {"file": file, "config_dir": cfg_dir}


def build_i2vgen(folder: str) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLUNet

    torch.manual_seed(SEED)
    unet = I2VGenXLUNet(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
        attention_head_dim=8, num_attention_heads=None)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, norm_num_groups=8, sample_size=64)
    # the real I2VGen-XL scheduler settings (v-prediction, zero terminal SNR, scaled_linear)
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="leading",
                          steps_offset=1, set_alpha_to_one=False)
    _save(folder, {"unet": ("diffusers", unet), "vae": ("diffusers", vae),
                   "image_encoder": ("transformers", _clip_image_encoder(32)), "scheduler": ("diffusers", sched)},
          "I2VGenXLPipeline")


def build_svd(folder: str) -> None:
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel

    torch.manual_seed(SEED + 1)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
        up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
        block_out_channels=(32, 32, 64, 64), addition_time_embed_dim=8, projection_class_embeddings_input_dim=24,
        layers_per_block=1, cross_attention_dim=32, transformer_layers_per_block=1, num_attention_heads=(2, 2, 4, 4),
        num_frames=14)
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                                       layers_per_block=1, latent_channels=4, sample_size=64)
    sched = EulerDiscreteScheduler(prediction_type="v_prediction", use_karras_sigmas=True, sigma_min=0.002,
                                   sigma_max=700.0, timestep_type="continuous", interpolation_type="linear")
    _save(folder, {"unet": ("diffusers", unet), "vae": ("diffusers", vae),
                   "image_encoder": ("transformers", _clip_image_encoder(32)), "scheduler": ("diffusers", sched)},
          "StableVideoDiffusionPipeline")


def build_cogvideox(folder: str) -> None:
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    torch.manual_seed(SEED + 2)
    tr = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                                     time_embed_dim=32, text_embed_dim=32, num_layers=3, sample_width=8,
                                     sample_height=8, sample_frames=49, patch_size=2, max_text_seq_length=8)
    vae = AutoencoderKLCogVideoX(block_out_channels=(8, 16, 16, 16), latent_channels=4, layers_per_block=1,
                                 norm_num_groups=8, temporal_compression_ratio=4, sample_height=64, sample_width=64)
    sched = CogVideoXDDIMScheduler()      # CogVideoX-2B scheduler (v-prediction, zero-SNR, snr_shift_scale 3)
    _save(folder, {"transformer": ("diffusers", tr), "vae": ("diffusers", vae), "scheduler": ("diffusers", sched)},
          "CogVideoXPipeline")


TEXT_WORDS = "a red ball on the green grass rolls left right".split()


def add_tiny_t5_text_encoder(folder: str, d_model: int) -> None:
    """Add a tiny T5 text encoder (text_encoder/: transformers T5EncoderModel, seeded, safetensors) and a
    word-level tokenizer over TEXT_WORDS (tokenizer/: a tokenizers tokenizer.json read by AutoTokenizer) to a
    diffusers folder, registered in its model_index.json: CogVideoX's text layout, with `d_model`-wide outputs
    (the transformer's text_embed_dim)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5Config, T5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in TEXT_WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok_dir = os.path.join(folder, "tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    tok.save(os.path.join(tok_dir, "tokenizer.json"))
    with open(os.path.join(tok_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
                   "unk_token": "<unk>"}, f)
    torch.manual_seed(SEED + 3)
    enc = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1,
                                  num_heads=2))
    enc.eval().save_pretrained(os.path.join(folder, "text_encoder"), safe_serialization=True)
    path = os.path.join(folder, "model_index.json")
    with open(path) as f:
        index = json.load(f)
    index.update(text_encoder=["transformers", "T5EncoderModel"], tokenizer=["transformers", "PreTrainedTokenizerFast"])
    with open(path, "w") as f:
        json.dump(index, f, indent=1)


BUILDERS = {"tiny_i2vgen": (build_i2vgen, "unet"), "tiny_svd": (build_svd, "unet"),
            "tiny_cogvideox": (build_cogvideox, "transformer")}


def build_tiny_diffusers(dest_dir: str, names=None) -> dict:
    """Build the tiny folders under dest_dir. Returns {name: {"folder", "file", "config_dir"}}."""
    os.makedirs(dest_dir, exist_ok=True)
    out = {}
    for name, (builder, component) in BUILDERS.items():
        if names is not None and name not in names:
            continue
        folder = os.path.join(dest_dir, name)
        if not os.path.isfile(os.path.join(folder, "model_index.json")):
            builder(folder)
        out[name] = {"folder": folder, **_single_file(folder, component, dest_dir, name)}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest_dir", help="e.g. ComfyUI/models/diffusers")
    args = ap.parse_args()
    for k, v in build_tiny_diffusers(args.dest_dir).items():
        print(k, v["folder"])
