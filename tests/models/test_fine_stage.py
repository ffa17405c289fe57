"""Fine stage (models/fine): the real all-MiniLM-L6-v2 text encoder, the PromptLearner's triplet layout and
length limit, FineStage shapes / MIL pooling / training / constant text table, frame descriptions, and the same
FineStage on a tiny random CLIP."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from edge_vad_test_support.torch_env import one_torch_thread, require_minilm  # noqa: E402, F401

torch = require_minilm()
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from edge_vad.constants import CLIP_TAU, XD_VIOLENCE_CLASSES  # noqa: E402
from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad_models.fine import (  # noqa: E402
    DescriptionVocabulary,
    FineStage,
    Lite0Describer,
    PromptLearner,
    build_fine_encoders,
    describe_labels,
    mil_topk_mean,
)
from edge_vad_models.fine.lite0_minilm import BackboneFeatureEncoder, minilm_model_dir  # noqa: E402
from edge_vad_models.imagenet import top_labels  # noqa: E402

CLASSES = ("normal", "fighting", "bicycle or vehicle on a walkway")
VOCAB = DescriptionVocabulary(("suit", "jersey", "street sign"))


@pytest.fixture(scope="module")
def minilm():
    return build_fine_encoders("lite0-minilm").text


def small_stage(text_encoder, feature_dim=16, n_ctx=4, **kwargs) -> FineStage:
    torch.manual_seed(0)
    return FineStage(CLASSES, text_encoder, VOCAB.texts, feature_dim=feature_dim, hidden_dim=32, n_ctx=n_ctx, **kwargs)


# ---- text encoder --------------------------------------------------------------------------------------------

def test_minilm_encode_equals_sentence_transformers(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    texts = ["a photo of a suit, a jersey", "Two men are fighting in a parking lot.", "explosion",
             "riot " * 300]  # longer than the 256-token limit: truncation must match too
    reference = sentence_transformers.SentenceTransformer(str(minilm_model_dir()), device="cpu")
    expected = torch.as_tensor(reference.encode(texts, convert_to_numpy=True))
    ours = minilm.encode(texts)
    assert ours.shape == (4, 384)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    assert minilm.context_length == reference.max_seq_length == 256


def test_minilm_token_embedding_entry_ignores_padding(minilm):
    ids, eot = minilm.tokenize(["fighting", "a photo of a street sign"])
    padded = torch.cat([ids, torch.full((2, 7), minilm.pad_id)], dim=1)
    with torch.no_grad():
        out = minilm.encode_embeddings(minilm.token_embedding(padded), eot)
    torch.testing.assert_close(out, minilm.encode(["fighting", "a photo of a street sign"]), rtol=0, atol=1e-6)


# ---- prompt learner ------------------------------------------------------------------------------------------

def test_prompt_layout_is_context_label_description(minilm):
    # With the context vectors set to the word embeddings of "a video of", the triplet input must be exactly
    # the sentence "a video of <label> <description>".
    words = minilm.word_ids("a video of")
    prompt = PromptLearner(minilm, ["fighting", "riot"], ["in a street", "near a car"], n_ctx=len(words))
    with torch.no_grad():
        prompt.ctx.copy_(minilm.token_embedding(torch.tensor(words)))
        got = prompt()
    sentences = [f"a video of {c} {d}" for c in ("fighting", "riot") for d in ("in a street", "near a car")]
    expected = minilm.encode(sentences)
    torch.testing.assert_close(got.reshape(4, -1), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(prompt.class_embeddings()[0],
                               torch.nn.functional.normalize(expected[:2].mean(0), dim=0), rtol=0, atol=1e-5)


def test_prompt_gradient_reaches_context(minilm):
    prompt = PromptLearner(minilm, CLASSES, VOCAB.texts, n_ctx=3)
    prompt(torch.tensor([1])).sum().backward()
    assert prompt.ctx.grad is not None and float(prompt.ctx.grad.abs().sum()) > 0
    assert all(p.grad is None for p in minilm.parameters())


def test_prompt_length_limit(minilm):
    context = minilm.context_length
    with pytest.raises(EdgeVadError, match=f"exceed the text encoder's context of {context} tokens"):
        PromptLearner(minilm, CLASSES, VOCAB.texts, n_ctx=context - 1)
    long_description = "street " * 400
    prompt = PromptLearner(minilm, CLASSES, [long_description, "suit"], n_ctx=40)
    assert prompt.token_ids.shape[-1] == context  # cut to exactly the context, never more
    assert int(prompt.eot_positions.max()) == context - 1
    assert prompt.truncated_pairs == len(CLASSES)  # only the long description was cut
    assert prompt(torch.tensor([0, 1])).shape == (3, 2, 384)


# ---- FineStage -----------------------------------------------------------------------------------------------

def test_forward_shapes_lite0_minilm(minilm):
    stage = small_stage(minilm, feature_dim=1280)
    feats, desc = torch.randn(2, 5, 1280), torch.randint(0, len(VOCAB), (2, 5))
    out = stage(feats, desc)
    assert out.snippet_logits.shape == (2, 5, 3) and out.video_logits.shape == (2, 3)
    assert out.class_text.shape == (3, 384)
    # cosine / tau is bounded by 1 / tau
    assert float(out.snippet_logits.abs().max()) <= 1 / CLIP_TAU + 1e-4
    torch.testing.assert_close(out.video_probs.sum(-1), torch.ones(2))
    without = stage(feats)  # description-averaged class text
    assert without.snippet_logits.shape == (2, 5, 3)
    with pytest.raises(EdgeVadError, match="frame features"):
        stage(torch.randn(2, 5, 128))


def test_snippet_logits_use_each_steps_description(minilm):
    stage = small_stage(minilm)
    feats = torch.randn(1, 4, 16)
    desc = torch.tensor([[2, 0, 2, 1]])
    with torch.no_grad():
        out = stage(feats, desc)
        video = stage.video_features(feats)[0]  # [T, D]
        text = stage.prompt()  # [C, K, D]
    expected = torch.stack([video[t] @ text[:, desc[0, t]].T for t in range(4)]) / CLIP_TAU
    torch.testing.assert_close(out.snippet_logits[0], expected, rtol=0, atol=1e-4)


def test_mil_topk_mean_by_hand():
    logits = torch.zeros(2, 32, 2)
    logits[0, :, 0] = torch.arange(32.0)  # k = 32 // 16 = 2 -> mean(31, 30)
    logits[1, :, 1] = torch.arange(32.0)  # length 20 -> k = 1, valid steps 0..19 -> 19
    logits[1, 25, 0] = 100.0  # beyond the length: ignored
    pooled = mil_topk_mean(logits, torch.tensor([32, 20]))
    torch.testing.assert_close(pooled, torch.tensor([[30.5, 0.0], [0.0, 19.0]]))
    with pytest.raises(EdgeVadError):
        mil_topk_mean(logits, torch.tensor([33, 1]))


def test_training_reduces_loss_on_separable_problem(minilm):
    stage = small_stage(minilm)
    torch.manual_seed(1)
    batch, steps = 12, 8
    prototypes = torch.randn(3, 16) * 2.0
    labels = torch.arange(batch) % 3
    feats = prototypes[labels][:, None, :] + 0.5 * torch.randn(batch, steps, 16)
    desc = torch.randint(0, len(VOCAB), (batch, steps))
    optimiser = torch.optim.Adam([p for p in stage.parameters() if p.requires_grad], lr=1e-2)
    stage.train()
    history = []
    for _ in range(8):
        losses = stage.loss(stage(feats, desc), labels)
        optimiser.zero_grad()
        losses["total"].backward()
        optimiser.step()
        history.append({k: float(v) for k, v in losses.items()})
    assert all(np.isfinite(h["total"]) for h in history)
    assert history[-1]["total"] < 0.5 * history[0]["total"], history
    stage.eval()
    with torch.no_grad():
        accuracy = float((stage(feats, desc).video_logits.argmax(-1) == labels).float().mean())
    assert accuracy == 1.0
    assert not stage.prompt.text_encoder.training  # frozen encoder stayed in eval mode under stage.train()


def test_text_table_is_constant_and_replaces_the_encoder(minilm, monkeypatch):
    stage = small_stage(minilm)
    stage.eval()
    first, second = stage.prompt.export_text_table(), stage.prompt.export_text_table()
    assert first.table.shape == (3, len(VOCAB), 384) and first.table.dtype == np.float32
    assert np.array_equal(first.table, second.table) and np.array_equal(first.mean, second.mean)
    np.testing.assert_allclose(np.linalg.norm(first.table, axis=-1), 1.0, atol=1e-5)
    feats, desc = torch.randn(2, 6, 16), torch.randint(0, len(VOCAB), (2, 6))
    with torch.no_grad():
        live = stage(feats, desc)
        stage.freeze_text()

        def no_text_encoder(*args, **kwargs):
            raise AssertionError("the text encoder ran after the table was frozen")

        monkeypatch.setattr(stage.prompt.text_encoder, "encode_embeddings", no_text_encoder)
        frozen = stage(feats, desc)
        averaged = stage(feats)
    torch.testing.assert_close(frozen.snippet_logits, live.snippet_logits, rtol=0, atol=1e-4)
    assert averaged.video_logits.shape == (2, 3)
    with pytest.raises(EdgeVadError, match="text table shape"):
        stage.use_text_table(np.zeros((3, 2, 384), dtype=np.float32))


def test_trainable_state_dict_round_trip(minilm):
    stage = small_stage(minilm)
    state = stage.trainable_state_dict()
    assert not any(k.startswith("prompt.text_encoder.") for k in state)
    assert sum(v.numel() for k, v in state.items() if "ctx" in k or "proj" in k or "rwkv" in k) == \
        stage.trainable_parameter_count()
    other = small_stage(minilm)
    with torch.no_grad():
        other.prompt.ctx.add_(1.0)
    other.load_trainable_state_dict(state)
    assert torch.equal(other.prompt.ctx, stage.prompt.ctx)


def test_class_list_is_data(minilm):
    torch.manual_seed(0)
    stage = FineStage(XD_VIOLENCE_CLASSES, minilm, ["", "a photo of a street sign"], feature_dim=8, hidden_dim=16,
                      n_ctx=2, normal_class="normal")
    out = stage(torch.randn(1, 3, 8), torch.tensor([[0, 1, 0]]))
    assert out.video_logits.shape == (1, 7)
    losses = stage.loss(out, torch.tensor([3]))
    assert set(losses) == {"align", "contrast", "total"} and all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(EdgeVadError, match="normal class"):
        FineStage(("fighting", "riot"), minilm, ["x"], feature_dim=8, normal_class="normal")


# ---- image side and descriptions -------------------------------------------------------------------------

def test_backbone_feature_encoder_passes_features_through():
    encoder = BackboneFeatureEncoder("both")
    feats = torch.randn(3, 1408)
    assert torch.equal(encoder.encode(feats), feats)
    assert encoder.preprocessing.kind == "features" and encoder.preprocessing.feature_dim == 1408
    with pytest.raises(EdgeVadError, match=r"\[N, 1408\]"):
        encoder.encode(torch.randn(3, 1280))
    frame = SimpleNamespace(trunk_feature=torch.randn(2, 1280), feature=torch.randn(2, 128))
    assert torch.equal(encoder.select(frame), torch.cat([frame.trunk_feature, frame.feature], dim=1))
    assert torch.equal(BackboneFeatureEncoder("feature").select(frame), frame.feature)


def test_importing_the_package_loads_no_encoder_library():
    code = ("import sys, edge_vad_models.fine; "
            "print(sorted(m for m in ('open_clip', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_lite0_describer_matches_top_labels():
    torch.manual_seed(0)
    logits = torch.randn(4, 1000)
    found = Lite0Describer(k=2).describe(logits)
    assert found.texts == [describe_labels(words) for words in top_labels(logits, 2)]
    assert found.ids.tolist() == logits.argmax(-1).tolist()
    subset = Lite0Describer(class_indices=[834, 1, 2], k=1)  # 834 = "suit"
    logits[0, 834] = 50.0
    picked = subset.describe(logits)
    assert picked.ids[0] == 0 and picked.texts[0] == "a photo of a suit"


# ---- the same FineStage on CLIP ------------------------------------------------------------------------------

def test_fine_stage_with_tiny_clip():
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("needs open_clip_torch (the train extra)")
    from edge_vad_models.fine.clip_vit_b16 import TINY_CLIP_CFG

    encoders = build_fine_encoders("clip-vit-b16", model_cfg=copy.deepcopy(TINY_CLIP_CFG))
    images = torch.randn(2 * 4, 3, 32, 32)
    frame_feats = encoders.image.encode(images).view(2, 4, -1)
    torch.manual_seed(0)
    stage = FineStage(CLASSES, encoders.text, VOCAB.texts, feature_dim=encoders.image.embed_dim, hidden_dim=32)
    assert stage.prompt.n_ctx == 40 and stage.prompt.token_ids.shape[-1] <= 77
    out = stage(frame_feats, torch.randint(0, len(VOCAB), (2, 4)))
    assert out.snippet_logits.shape == (2, 4, 3) and out.class_text.shape == (3, TINY_CLIP_CFG["embed_dim"])
    stage.loss(out, torch.tensor([0, 2]))["total"].backward()
    assert stage.prompt.ctx.grad is not None and stage.in_proj.weight.grad is not None
    frozen = sum(p.numel() for p in encoders.text.parameters())
    assert stage.trainable_parameter_count() == sum(p.numel() for p in stage.parameters()) - frozen
    with pytest.raises(EdgeVadError, match="context of 77 tokens"):
        PromptLearner(encoders.text, CLASSES, VOCAB.texts, n_ctx=76)
