"""A small randomly initialised causal LM saved to a local directory, as a new user would try one.

It has SmolLM2's tokenizer (so every notebook's text encodes, chat template included) and
random Llama weights, so no method means anything on it: a notebook run on it must still
complete, turning claims whose power needs a working model into ``inconclusive``.

    python tests/random_model.py DIRECTORY     # writes the model there and prints the directory
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

N_LAYERS = 4
HIDDEN = 64


def save_random_model(directory: str | Path, seed: int = 0) -> Path:
    """Write a random 4-layer Llama with SmolLM2's tokenizer to ``directory`` and return it."""
    from actlab.models import OFFLINE_MODELS, ensure_offline_model

    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    tokenizer = AutoTokenizer.from_pretrained(ensure_offline_model(OFFLINE_MODELS["smollm2-135m"]))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                         num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/random_model.py DIRECTORY")
    print(save_random_model(sys.argv[1]))
