"""Untrusted diffusers model folders (issue 11, item 7): every malformed file is refused by the loader node with
an error naming the input, the file and the problem, before anything large is allocated; a load that fails after
one module is loaded leaves nothing resident. Built from the tiny CogVideoX folder of vdt_dev.make_tiny_diffusers."""
from __future__ import annotations

import gc
import json
import os
import shutil
import struct
import weakref

import pytest
import torch

GOOD = "tiny_cogvideox"


pytestmark = pytest.mark.usefixtures("offline")      # tests/backbone/conftest.py: no network


@pytest.fixture(scope="module")
def diffusers_root(tmp_path_factory):
    from vdt_dev import make_tiny_diffusers

    root = tmp_path_factory.mktemp("untrusted") / "diffusers"
    make_tiny_diffusers.build_tiny_diffusers(str(root), names=[GOOD])
    return str(root)


@pytest.fixture
def loader(diffusers_root, monkeypatch):
    """A function (name) -> the node's execute on models/diffusers/<name> inside the temporary models folder."""
    import folder_paths

    from vdtrack.nodes.backbone import VDT_LoadDiffusersBackbone

    saved = folder_paths.folder_names_and_paths["diffusers"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusers", ([diffusers_root], saved[1]))
    return lambda name: VDT_LoadDiffusersBackbone.execute(f"diffusers/{name}", "auto").result[0]


def _copy(root: str, name: str) -> str:
    d = os.path.join(root, name)
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(os.path.join(root, GOOD), d)
    return d


def _edit_json(path: str, **changes) -> None:
    with open(path) as f:
        data = json.load(f)
    data.update(changes)
    with open(path, "w") as f:
        json.dump(data, f)


def _write(path: str, text) -> None:
    with open(path, "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)


def _safetensors(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def _header_only(header: dict, data: bytes) -> bytes:
    """A .safetensors file from a hand-written header (what an attacker controls) and data bytes."""
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


MODEL_INDEX = [
    ("not_json", b"{nope", r"is not valid JSON"),
    ("not_object", b"[1, 2]", r"must hold a JSON object, got list"),
    ("not_utf8", b'{"_class_name": "\xff\xfe"}', r"is not UTF-8"),
    ("huge", b'{"_class_name": "CogVideoXPipeline"' + b" " * (2 << 20) + b"}", r"is .* bytes, more"),
    ("class_type", json.dumps({"_class_name": 5}).encode(), r"'_class_name' must be a pipeline class name, got 5"),
    ("component_type", json.dumps({"_class_name": "CogVideoXPipeline", "transformer": "diffusers"}).encode(),
     r"component 'transformer' must be \[library, class\]"),
    ("unknown_class", json.dumps({"_class_name": "CogVideoXPipeline",
                                  "transformer": ["diffusers", "NoSuchTransformer"]}).encode(),
     r"class 'NoSuchTransformer', which diffusers does not define"),
    ("unknown_library", json.dumps({"_class_name": "CogVideoXPipeline", "transformer": ["os", "system"]}).encode(),
     r"library 'os'; expected one of"),
    ("escaping", json.dumps({"_class_name": "CogVideoXPipeline",
                             "../transformer": ["diffusers", "CogVideoXTransformer3DModel"]}).encode(),
     r"component '\.\./transformer' is not a plain folder name"),
    ("escaping_class", json.dumps({"_class_name": "CogVideoXPipeline", "vae": ["diffusers", "../x"]}).encode(),
     r"class '\.\./x', which diffusers does not define"),
]


def test_model_index_pipeline_options_are_accepted(diffusers_root, loader):
    """Entries that are pipeline options, not components (Wan 2.2's boundary_ratio and expand_timesteps), load."""
    d = _copy(diffusers_root, "index_options")
    _edit_json(os.path.join(d, "model_index.json"), boundary_ratio=0.875, expand_timesteps=False)
    assert loader("index_options").family == "cogvideox"


@pytest.mark.parametrize("case,content,message", MODEL_INDEX, ids=[c[0] for c in MODEL_INDEX])
def test_malformed_model_index(diffusers_root, loader, case, content, message):
    d = _copy(diffusers_root, f"index_{case}")
    _write(os.path.join(d, "model_index.json"), content)
    with pytest.raises(ValueError, match=rf"^model: diffusers/index_{case}/model_index\.json:? .*{message}"):
        loader(f"index_{case}")


CONFIGS = [
    ("string_int", {"num_layers": "3"}, r"'num_layers' must be an integer, got '3'"),
    ("string_dim", {"attention_head_dim": "16"}, r"'attention_head_dim' must be an integer"),
    ("bool_int", {"patch_size": True}, r"'patch_size' must be an integer"),
    ("float_flag", {"attention_bias": 1.5}, r"'attention_bias' must be true or false"),
    ("negative", {"num_layers": -3}, r"'num_layers' must be an integer >= 0, got -3"),
    ("many_layers", {"num_layers": 100000}, r"'num_layers' = 100000 outside 0\.\.256"),
    ("huge_int", {"sample_height": 10 ** 12}, r"'sample_height' = 1000000000000 is beyond"),
    ("nan", {"norm_eps": float("nan")}, r"'norm_eps' = nan is not a finite number"),
    # 2 heads x 2^20 dims: a 2M-wide model, terabytes; refused from the meta-device estimate, nothing allocated
    ("huge_model", {"attention_head_dim": 1 << 20}, r"the CogVideoXTransformer3DModel it describes needs about "
                                                    r"[\d,.]+ GiB of RAM to load, [\d,.]+ GiB is free"),
    ("unknown_activation", {"activation_fn": "no-such-fn"}, r"does not describe a CogVideoXTransformer3DModel"),
    ("no_heads", {"num_attention_heads": 0}, r"tensors \d+ with other shapes \(e\.g\. '[\w.]+': \[\d+\] in the file, "
                                             r"\[0\] in the config\)"),
]


@pytest.mark.parametrize("case,changes,message", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_malformed_config(diffusers_root, loader, case, changes, message):
    d = _copy(diffusers_root, f"config_{case}")
    _edit_json(os.path.join(d, "transformer", "config.json"), **changes)
    with pytest.raises(ValueError, match=rf"^model: config_{case}/transformer/.*{message}"):
        loader(f"config_{case}")


def test_config_not_json_and_scheduler_bounds(diffusers_root, loader):
    d = _copy(diffusers_root, "config_text")
    _write(os.path.join(d, "vae", "config.json"), "not json")
    with pytest.raises(ValueError, match=r"^model: config_text/vae/config\.json is not valid JSON"):
        loader("config_text")
    d = _copy(diffusers_root, "scheduler_steps")
    _edit_json(os.path.join(d, "scheduler", "scheduler_config.json"), num_train_timesteps=10 ** 12)
    with pytest.raises(ValueError, match=r"^model: scheduler_steps/scheduler/scheduler_config\.json: "
                                         r"'num_train_timesteps' = 1000000000000 is beyond"):
        loader("scheduler_steps")


def test_truncated_and_lying_safetensors(diffusers_root, loader):
    d = _copy(diffusers_root, "truncated")
    weights = os.path.join(d, "transformer", "diffusion_pytorch_model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(ValueError, match=r"^model: truncated/transformer/diffusion_pytorch_model\.safetensors is "
                                         r"not a readable \.safetensors file, truncated or corrupt"):
        loader("truncated")
    d = _copy(diffusers_root, "lying")       # header: one tensor of 10^12 floats, the file holds 8 bytes
    _write(os.path.join(d, "vae", "diffusion_pytorch_model.safetensors"),
           _header_only({"w": {"dtype": "F32", "shape": [1000000, 1000000], "data_offsets": [0, 4 * 10 ** 12]}},
                        b"\0" * 8))
    with pytest.raises(ValueError, match=r"^model: lying/vae/diffusion_pytorch_model\.safetensors is not a "
                                         r"readable \.safetensors file"):
        loader("lying")
    d = _copy(diffusers_root, "header_garbage")
    _write(os.path.join(d, "vae", "diffusion_pytorch_model.safetensors"), struct.pack("<Q", 1 << 60) + b"{}")
    with pytest.raises(ValueError, match=r"^model: header_garbage/vae/.* truncated or corrupt"):
        loader("header_garbage")


def test_shard_index_cannot_escape_the_folder(diffusers_root, loader):
    d = _copy(diffusers_root, "shards")
    tr = os.path.join(d, "transformer")
    os.remove(os.path.join(tr, "diffusion_pytorch_model.safetensors"))
    _write(os.path.join(tr, "diffusion_pytorch_model.safetensors.index.json"),
           json.dumps({"weight_map": {"proj_out.weight": "../../tiny_cogvideox/transformer/"
                                                         "diffusion_pytorch_model.safetensors"}}))
    with pytest.raises(ValueError, match=r"^model: shards/transformer/diffusion_pytorch_model\.safetensors\.index"
                                         r"\.json: shard '\.\./\.\./.* is not a \.safetensors file name"):
        loader("shards")


def test_sharded_variant_weights_load(diffusers_root, loader):
    """The good case of the shard checks: a transformer saved as diffusers writes fp16-variant shards
    (diffusion_pytorch_model.fp16-0000k-of-0000n.safetensors + diffusion_pytorch_model.safetensors.index.fp16.json)
    loads through the node with the same weights."""
    from diffusers import CogVideoXTransformer3DModel

    d = _copy(diffusers_root, "sharded")
    tr = os.path.join(d, "transformer")
    model = CogVideoXTransformer3DModel.from_pretrained(tr)
    shutil.rmtree(tr)
    model.save_pretrained(tr, variant="fp16", max_shard_size="100KB")
    assert len([f for f in os.listdir(tr) if f.endswith(".safetensors")]) > 1
    loaded = loader("sharded").transformer.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in model.state_dict().items())


def test_unknown_and_missing_keys(diffusers_root, loader):
    from safetensors.torch import load_file

    d = _copy(diffusers_root, "keys")
    weights = os.path.join(d, "transformer", "diffusion_pytorch_model.safetensors")
    sd = load_file(weights)
    dropped = sorted(sd)[0]
    del sd[dropped]
    sd["not_a_layer.weight"] = torch.zeros(4, 4)
    _write(weights, _safetensors(sd))
    with pytest.raises(ValueError, match=rf"^model: keys/transformer/diffusion_pytorch_model\.safetensors does not "
                                         rf"match CogVideoXTransformer3DModel .*1 missing \(e\.g\. \['{dropped}'\]\); "
                                         rf"1 unknown \(e\.g\. \['not_a_layer\.weight'\]\)"):
        loader("keys")


def test_failed_load_leaves_nothing_resident(diffusers_root, loader):
    """The transformer loads, then the VAE's weights are refused (an unknown key): the node's error holds no
    reference to the loaded transformer (no traceback frame, no cycle: checked with the garbage collector off),
    ComfyUI's list of loaded models is unchanged, and the good folder loads afterwards."""
    import comfy.model_management as mm
    from safetensors.torch import load_file

    d = _copy(diffusers_root, "vae_keys")
    weights = os.path.join(d, "vae", "diffusion_pytorch_model.safetensors")
    sd = load_file(weights)
    sd["decoder.extra.weight"] = torch.zeros(8)
    _write(weights, _safetensors(sd))

    made: list[tuple[weakref.ref, str]] = []      # every parameter registered during the load, and its device
    hook = torch.nn.modules.module.register_module_parameter_registration_hook(
        lambda module, name, param: made.append((weakref.ref(param), param.device.type)) if param is not None
        else None)
    before = list(mm.current_loaded_models)
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(ValueError, match=r"^model: vae_keys/vae/diffusion_pytorch_model\.safetensors does not "
                                             r"match AutoencoderKLCogVideoX .*unknown \(e\.g\. \['decoder\.extra") as err:
            loader("vae_keys")
        assert any(device != "meta" for _, device in made), "the transformer was loaded before the VAE was refused"
        alive = [r() for r, _ in made if r() is not None]
        assert alive == [], f"{len(alive)} parameters of the failed load are still referenced"
        assert err.value.__context__ is None and err.value.__cause__ is None
    finally:
        gc.enable()
        hook.remove()
    assert list(mm.current_loaded_models) == before
    good = loader(GOOD)
    assert good.family == "cogvideox" and good.num_layers == 3


def test_single_file_with_a_lying_header_is_refused(diffusers_root, tmp_path):
    from diffusers import CogVideoXTransformer3DModel

    from vdtrack.backbones.diffusers_common import load_from_single_file

    bad = str(tmp_path / "one.safetensors")
    _write(bad, _header_only({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4))
    with pytest.raises(ValueError, match=r"one\.safetensors is not a readable \.safetensors file"):
        load_from_single_file(CogVideoXTransformer3DModel, bad, os.path.join(diffusers_root, GOOD, "transformer"),
                              torch.float32)
