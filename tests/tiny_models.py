"""Tiny randomly initialised models of each supported architecture, built from configs (no downloads)."""

from __future__ import annotations

import torch
from transformers import (AutoModelForCausalLM, Gemma2Config, Gemma3TextConfig, GPT2Config, GPTNeoXConfig,
                          LlamaConfig, MistralConfig, Qwen2Config)

VOCAB = 97
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)

CONFIGS = {
    "llama": lambda: LlamaConfig(**_COMMON),
    "gemma2": lambda: Gemma2Config(**_COMMON, head_dim=8, sliding_window=16),
    "gemma3": lambda: Gemma3TextConfig(**_COMMON, head_dim=8, sliding_window=16),
    "qwen2": lambda: Qwen2Config(**_COMMON),
    "mistral": lambda: MistralConfig(**_COMMON),
    "gpt2": lambda: GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=64),
    "gpt_neox": lambda: GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=64),
}


def tiny_model(arch: str, seed: int = 0):  # noqa: ANN201
    torch.manual_seed(seed)
    cfg = CONFIGS[arch]()
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.requires_grad_(False)
    return model


def tiny_inputs(batch: int = 2, seq: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def tiny_tokenizer():  # noqa: ANN201
    """A word-level tokenizer over the words of the IOI templates (no downloads), with BOS, EOS and PAD."""
    import re

    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from actlab import generated

    text = " ".join(generated.TEMPLATES + generated.NAMES + generated.PLACES + generated.OBJECTS)
    words = sorted(set(re.findall(r"\w+|[^\w\s]", re.sub(r"\{\w+\}", " ", text))))
    specials = ["<unk>", "<bos>", "<eos>", "<pad>"]
    vocab = {w: i for i, w in enumerate(specials + words + ["two words"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def tiny_lm(arch: str = "llama", seed: int = 0):  # noqa: ANN201
    """An actlab LanguageModel: a tiny random model of ``arch`` with the tiny tokenizer's vocabulary."""
    from actlab.models import LanguageModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = CONFIGS[arch]()
    cfg.vocab_size = len(tokenizer)
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.requires_grad_(False)
    return LanguageModel(name=f"tiny-{arch}", model=model, tokenizer=tokenizer, source="random config")
