"""Loading a recipe's model and tokenizer: embedded-model aliases, chat templates, dtype by device, bitsandbytes
quantization (with its start-up checks), and loading on one process while a ZeRO-3 config is registered.

Used by the entry points (`alignment.commands.cli`, `alignment.commands.reward_cli`,
`alignment.commands.generate_cli`), by adapter merging (`alignment.modeling.adapters`) and by reward-model loading
(`alignment.modeling.reward_model`).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from .chat_templates import CHATML_TEMPLATE
from .models import resolve_model_name_or_path


@contextmanager
def zero3_init_disabled():
    """Unregister the Trainer's global ZeRO-3 DeepSpeed config for a while (to load and generate on one process)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = ref() if ref is not None else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if config is not None:
            hf_deepspeed.set_hf_deepspeed_config(config)


def check_quantized_loading(model_args) -> None:
    """Fail before anything is loaded when `load_in_4bit` / `load_in_8bit` cannot work here.

    bitsandbytes quantization (QLoRA) needs a CUDA GPU and the `bitsandbytes` package, and quantized weights cannot
    be trained, so it also needs `use_peft: true`. Without these checks transformers would either fail deep inside
    `from_pretrained` or, as this toolkit did before, the field would be ignored and a full-precision model trained.
    """
    field = "load_in_4bit" if model_args.load_in_4bit else "load_in_8bit" if model_args.load_in_8bit else None
    if field is None:
        return
    if not torch.cuda.is_available():
        raise ValueError(
            f"`{field}: true` (QLoRA) needs a CUDA GPU with bitsandbytes, and this machine has no CUDA device. "
            f"Remove `{field}` to train plain LoRA adapters on full-precision weights (`use_peft: true` runs on CPU, "
            "e.g. recipes/smollm2-135m/dpo-lora.yaml), or run the recipe on a GPU."
        )
    if not model_args.use_peft:
        raise ValueError(
            f"`{field}: true` loads frozen quantized weights that cannot be trained: set `use_peft: true` to train "
            "LoRA adapters on top of them (QLoRA), or remove `" + field + "`."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ValueError(f"`{field}: true` needs the `bitsandbytes` package: `pip install bitsandbytes`.") from err


def check_merge_option(model_args, script_args) -> None:
    """`merge_adapters_before_push: true` only means something for a LoRA run (`use_peft: true`)."""
    if getattr(script_args, "merge_adapters_before_push", False) and not model_args.use_peft:
        raise ValueError(
            "`merge_adapters_before_push: true` merges LoRA adapters, but this run trains the full model "
            "(`use_peft` is false): set `use_peft: true` or remove `merge_adapters_before_push`."
        )


def quantized_loading_kwargs(model_args, script_args=None) -> dict:
    """`from_pretrained` kwargs for a recipe's bitsandbytes quantization (empty when it asks for none).

    Also runs the LoRA start-up checks, so a bad combination fails before the model is loaded.
    """
    check_quantized_loading(model_args)
    check_merge_option(model_args, script_args)
    from accelerate import PartialState
    from trl import get_quantization_config

    quantization_config = get_quantization_config(model_args)
    if quantization_config is None:
        return {}
    # bitsandbytes weights are placed at load time: each process on its own GPU (TRL's old `get_kbit_device_map`).
    return {"quantization_config": quantization_config, "device_map": {"": PartialState().local_process_index}}


def chat_templates() -> dict[str, str]:
    """Chat templates a recipe can name with `chat_template:` (anything else must be a path to a Jinja file)."""
    return {"chatml": CHATML_TEMPLATE}


def load_tokenizer(model_path: str, revision: str | None = None, trust_remote_code: bool = False,
                   chat_template: str | None = None):
    """The tokenizer of `model_path`, with a recipe's `chat_template` (a known name or a file) and a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=revision, trust_remote_code=trust_remote_code)
    if chat_template:
        template = chat_templates().get(chat_template)
        if template is None:
            if not Path(chat_template).is_file():
                raise ValueError(
                    f"`chat_template: {chat_template}` is neither a known name ({sorted(chat_templates())}) nor a file."
                )
            template = Path(chat_template).read_text()
        tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(model_args, script_args, training_args, model_cls=None, **model_kwargs):
    """Load a model and its tokenizer; `model_name_or_path` may be an embedded-model alias.

    `model_cls` defaults to `AutoModelForCausalLM` (`AutoModelForSequenceClassification` for reward models, with
    `num_labels=1` in `model_kwargs`). Returns ``(model, tokenizer, resolved_path)``. The model is fp32 on CPU and bf16
    on GPU unless `dtype` is set.
    """
    from transformers import AutoModelForCausalLM

    if not model_args.model_name_or_path:
        raise ValueError("Set `model_name_or_path` in the recipe (a local path, a Hub id, or `smollm2-135m-instruct`).")
    # `load_in_4bit` / `load_in_8bit` without a GPU, bitsandbytes or `use_peft` fails here, before any download.
    quantization = quantized_loading_kwargs(model_args, script_args)
    path = resolve_model_name_or_path(model_args.model_name_or_path)
    tokenizer = load_tokenizer(path, model_args.model_revision, training_args.trust_remote_code,
                               script_args.chat_template)

    dtype = model_args.dtype
    if dtype in (None, "auto"):
        dtype = "bfloat16" if (torch.cuda.is_available() and training_args.bf16) else "float32"
    model = (model_cls or AutoModelForCausalLM).from_pretrained(
        path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=getattr(torch, dtype) if isinstance(dtype, str) else dtype,
        **quantization,
        **model_kwargs,
    )
    return model, tokenizer, path


def load_reference_model(name_or_path: str, policy, training_args):
    """The reference model at ``name_or_path`` (a path, Hub id or alias), loaded as TRL loads its default reference:
    the policy's dtype and attention implementation."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        resolve_model_name_or_path(name_or_path), dtype=policy.dtype,
        attn_implementation=policy.config._attn_implementation, trust_remote_code=training_args.trust_remote_code)
