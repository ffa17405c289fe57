"""CLIP ViT-B/16 loader (models/fine/clip_vit_b16.py): local checkpoints in OpenAI and open_clip formats give
features bit-identical to the reference open_clip model in memory; a missing file is one clear line; no network.

The reference is a tiny random CLIP of the same family (ViT, patch 16, QuickGELU, context 77, CLIP vocabulary).
"""

from __future__ import annotations

import copy
import importlib.util
import socket

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
if importlib.util.find_spec("open_clip") is None:  # not imported here: it needs the torchvision shim first
    pytest.skip("needs open_clip_torch (the train extra)", allow_module_level=True)

from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad_models.fine.clip_vit_b16 import (  # noqa: E402
    TINY_CLIP_CFG,
    ClipImageEncoder,
    ClipTextEncoder,
    build_clip,
    build_clip_encoders,
    import_open_clip,
)
from edge_vad_models.fine.descriptions import ClipDescriber, DescriptionVocabulary  # noqa: E402
from edge_vad_models.fine.encoders import build_fine_encoders  # noqa: E402

TEXTS = ["a photo of a cat.", "two men fighting in the street", "x", "a very long caption " * 30]

# OpenAI CLIP ViT key names (the layout of OpenAI's ViT-B-16.pt): top-level and per-residual-block entries.
OPENAI_TOP_KEYS = {
    "positional_embedding", "text_projection", "logit_scale", "token_embedding.weight", "ln_final.weight",
    "ln_final.bias", "visual.class_embedding", "visual.positional_embedding", "visual.proj", "visual.conv1.weight",
    "visual.ln_pre.weight", "visual.ln_pre.bias", "visual.ln_post.weight", "visual.ln_post.bias",
}
OPENAI_BLOCK_KEYS = {
    "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias", "ln_1.weight",
    "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias", "ln_2.weight",
    "ln_2.bias",
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test (nothing may download)."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def open_clip():
    return import_open_clip()


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return build_clip(None, TINY_CLIP_CFG)


@pytest.fixture(scope="module")
def reference_fp16(open_clip, reference):
    """The reference with OpenAI's storage precision: linear/conv/projection weights held in float16."""
    half = copy.deepcopy(reference)
    open_clip.convert_weights_to_lp(half)
    return half


@pytest.fixture(scope="module")
def inputs(open_clip):
    torch.manual_seed(1)
    images = torch.randn(3, 3, TINY_CLIP_CFG["vision_cfg"]["image_size"], TINY_CLIP_CFG["vision_cfg"]["image_size"])
    return images, open_clip.SimpleTokenizer()(TEXTS)


def features(model, inputs):
    images, tokens = inputs
    with torch.no_grad():
        return model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True)


def assert_bit_identical(model, ref, inputs):
    (img, txt), (ref_img, ref_txt) = features(model, inputs), features(ref, inputs)
    assert torch.equal(img, ref_img), f"image features differ, max {float((img - ref_img).abs().max())}"
    assert torch.equal(txt, ref_txt), f"text features differ, max {float((txt - ref_txt).abs().max())}"


def test_open_clip_key_names_are_openai_key_names(reference):
    keys = set(reference.state_dict())
    layers = TINY_CLIP_CFG["vision_cfg"]["layers"]
    expected = set(OPENAI_TOP_KEYS)
    for tower in ("visual.transformer", "transformer"):
        expected |= {f"{tower}.resblocks.{i}.{k}" for i in range(layers) for k in OPENAI_BLOCK_KEYS}
    assert keys == expected


@pytest.mark.parametrize("dtype_as_openai", [True, False], ids=["fp16-weights", "fp32-weights"])
def test_openai_state_dict_loads_bit_identical(tmp_path, reference, reference_fp16, inputs, dtype_as_openai):
    source = reference_fp16 if dtype_as_openai else reference
    path = tmp_path / "openai_state_dict.pt"
    torch.save(source.state_dict(), path)
    model = build_clip(path, checkpoint_format="openai")
    # float16 -> float32 is exact, so the fp16 checkpoint must equal its reference read in float32.
    assert_bit_identical(model, copy.deepcopy(source).float(), inputs)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_openai_torchscript_archive_loads_bit_identical(tmp_path, reference_fp16, inputs):
    # Like OpenAI's ViT-B-16.pt: a TorchScript archive whose state dict also carries these three entries.
    scripted = copy.deepcopy(reference_fp16)
    for name, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        if hasattr(scripted, name):
            delattr(scripted, name)
        scripted.register_buffer(name, torch.tensor(value))
    path = tmp_path / "ViT-B-16-tiny.pt"
    torch.jit.script(scripted).save(str(path))
    model = build_clip(path)  # auto: recognised as a TorchScript archive -> OpenAI format
    assert_bit_identical(model, copy.deepcopy(reference_fp16).float(), inputs)


@pytest.mark.parametrize("wrapped", [True, False], ids=["state_dict-module-prefix", "plain"])
def test_open_clip_checkpoint_loads_bit_identical(tmp_path, reference, inputs, wrapped):
    state = reference.state_dict()
    if wrapped:  # what open_clip's training script saves (DDP prefixes, under "state_dict")
        state = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    path = tmp_path / "open_clip.pt"
    torch.save(state, path)
    model = build_clip(path, TINY_CLIP_CFG)  # auto + model_cfg -> open_clip format
    assert_bit_identical(model, reference, inputs)


def test_comparison_detects_a_different_model(tmp_path, reference, inputs):
    # Control: the same weights under GELU instead of QuickGELU must NOT compare equal.
    path = tmp_path / "open_clip.pt"
    torch.save(reference.state_dict(), path)
    gelu_cfg = {**TINY_CLIP_CFG, "quick_gelu": False}
    with pytest.raises(AssertionError, match="features differ"):
        assert_bit_identical(build_clip(path, gelu_cfg), reference, inputs)


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    path = tmp_path / "nowhere" / "ViT-B-16.pt"
    with pytest.raises(EdgeVadError) as info:
        build_clip(path)
    message = str(info.value)
    assert message == (f"CLIP checkpoint not found: {path}; download ViT-B-16 weights elsewhere and pass "
                       f"--clip-checkpoint PATH")
    assert "\n" not in message


def test_unreadable_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(EdgeVadError) as info:
        build_clip(path)
    assert "cannot load CLIP checkpoint" in str(info.value) and "\n" not in str(info.value)


def test_encoders_equal_open_clip_encode(reference, inputs):
    images, tokens = inputs
    # Our encoders freeze the parameters (requires_grad False), which lets torch take its fused attention path
    # (different rounding); the reference is frozen the same way so the SAME kernels run on both sides.
    frozen_reference = copy.deepcopy(reference).requires_grad_(False)
    ref_img, ref_txt = features(frozen_reference, inputs)
    clip = copy.deepcopy(reference)  # the wrappers freeze the model they are given
    text = ClipTextEncoder(clip)
    image = ClipImageEncoder(clip)
    assert torch.equal(text.encode(TEXTS), ref_txt)
    assert torch.equal(image.encode(images), ref_img)
    # The token-embedding entry point, trimmed to the real tokens: the causal mask makes it the same function.
    ids, eot = text.tokenize(TEXTS[:3])
    length = int(eot.max()) + 1
    with torch.no_grad():
        trimmed = text.encode_embeddings(text.token_embedding(ids[:, :length]), eot)
    torch.testing.assert_close(trimmed, ref_txt[:3], rtol=0, atol=1e-5)
    assert text.context_length == 77 and text.embed_dim == TINY_CLIP_CFG["embed_dim"]
    assert image.preprocessing.kind == "pixels" and image.preprocessing.image_size == 32


def test_encoders_are_frozen(reference):
    text = ClipTextEncoder(copy.deepcopy(reference))
    text.train()
    assert not text.training and not any(p.requires_grad for p in text.parameters())


def test_registry_builds_clip_encoders():
    encoders = build_fine_encoders("clip-vit-b16", model_cfg=TINY_CLIP_CFG)
    assert encoders.name == "clip-vit-b16"
    assert encoders.image.embed_dim == encoders.text.embed_dim == TINY_CLIP_CFG["embed_dim"]
    with pytest.raises(EdgeVadError, match="unknown fine-stage encoders"):
        build_fine_encoders("clip-vit-l14")


def test_clip_describer_picks_the_matching_caption(reference):
    text = ClipTextEncoder(copy.deepcopy(reference))
    vocabulary = DescriptionVocabulary(("cat", "street sign", "fire engine", "suit"))
    describer = ClipDescriber(text, vocabulary, k=2)
    # An "image" feature equal to the caption embedding of one word must retrieve that word first.
    image = text.encode(["a photo of a fire engine.", "a photo of a suit."])
    found = describer.describe(image * 3.0)  # scale must not matter (cosine)
    assert found.ids.tolist() == [2, 3]
    assert found.texts[0].startswith("a photo of a fire engine, a ")
    assert found.scores.shape == (2, 2) and bool((found.scores[:, 0] >= found.scores[:, 1]).all())
    torch.testing.assert_close(found.scores[:, 0], torch.ones(2), rtol=0, atol=1e-5)


def test_build_clip_encoders_from_checkpoint(tmp_path, reference, inputs):
    path = tmp_path / "openai.pt"
    torch.save(reference.state_dict(), path)
    encoders = build_clip_encoders(path)
    images, _ = inputs
    frozen_reference = copy.deepcopy(reference).requires_grad_(False)
    assert torch.equal(encoders.image.encode(images), features(frozen_reference, inputs)[0])
