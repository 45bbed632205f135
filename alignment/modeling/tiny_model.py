"""A tiny random Llama and its tokenizer, built fully offline from a config.

The library's `tiny-random-llama` alias (`alignment.modeling.models.prepare_tiny_random_model`) and the test helpers
(`alignment.testing`) both build it here: random weights and a byte-level BPE tokenizer trained on a small built-in
corpus by `tokenizers`. Both are deterministic: the same seed gives the same weights and the same vocabulary on every
machine.
"""

from __future__ import annotations

import os
from pathlib import Path

# SmolLM2-Instruct's ChatML layout, so tests exercise the same prompt/completion split as the embedded model.
from .chat_templates import CHATML_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
    words = (
        "what is the answer reply with just the number how many letters are in word reverse string compare which "
        "larger smaller plus minus times equals apples oranges has gives away buys more left total count"
    ).split()
    lines = [" ".join(words)]
    lines += [f"{a} + {b} = {a + b}" for a in range(0, 30) for b in range(0, 30, 7)]
    lines += [f"{a} * {b} = {a * b}" for a in range(0, 13) for b in range(0, 13, 3)]
    lines += ["system user assistant", "The answer is 42.", "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    return lines


def build_tiny_tokenizer(vocab_size: int = 320):
    """Train a byte-level BPE tokenizer offline and wrap it as a `PreTrainedTokenizerFast` with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    # transformers 5 saves only `init_kwargs`: setting the attribute alone would reload as right padding.
    fast.padding_side = "left"
    fast.init_kwargs["padding_side"] = "left"
    return fast


def build_tiny_model(tokenizer, seed: int = 0, hidden_size: int = 32, num_layers: int = 2):
    """A random Llama small enough that a training step takes well under a second on one CPU thread."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def save_tiny_model(path: str | os.PathLike, seed: int = 0, **model_kwargs) -> str:
    """Build the tiny model and tokenizer and save both to `path` (a normal HF checkpoint directory)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed, **model_kwargs)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
