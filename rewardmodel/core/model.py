"""The backbone: a sequence-classification model with one output, the reward. Device and precision helpers."""

from __future__ import annotations

import contextlib
import functools
import logging

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import eager_attention_forward

logger = logging.getLogger(__name__)


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextlib.contextmanager
def _quiet_load_report():
    # transformers prints a table of missing keys at WARNING level; for a fresh reward head that table is
    # expected, so load_backbone replaces it with its own check of which keys were missing.
    target = logging.getLogger("transformers.modeling_utils")
    quiet = _DropLoadReport()
    target.addFilter(quiet)
    try:
        yield
    finally:
        target.removeFilter(quiet)


def load_backbone(
    name_or_path: str, *, disable_dropout: bool = True, num_heads: int = 1
) -> tuple[PreTrainedModel, object]:
    """A reward model (num_labels=num_heads, pad token set) and its tokenizer from a local directory or a hub id.

    A checkpoint of a bare encoder or a language model has no reward head: that head starts from random and
    is logged at INFO. Any *other* missing weight means the checkpoint does not fit the architecture: WARNING.
    Only safetensors weights are read.
    """
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the tokenizer of {name_or_path} has neither a pad nor an EOS token to pad with")
        # Decoder tokenizers often lack a pad token; the model finds the last real token through the mask's
        # pad id, and EOS is the conventional stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    config = AutoConfig.from_pretrained(name_or_path)
    # A checkpoint that already has a classification head of another width (a 1-head reward model asked for 5
    # heads, say) gets a fresh head of the asked width; only the head's shapes may differ.
    has_head = any(name.endswith("ForSequenceClassification") for name in config.architectures or [])
    new_head_width = has_head and config.num_labels != num_heads
    config.num_labels = num_heads
    with _quiet_load_report():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            name_or_path,
            config=config,
            dtype=torch.float32,
            use_safetensors=True,
            output_loading_info=True,
            ignore_mismatched_sizes=new_head_width,
        )
    model.config.pad_token_id = tokenizer.pad_token_id
    prefix = f"{model.base_model_prefix}."
    resized = [key for key, *_shapes in info.get("mismatched_keys", [])]
    missing = sorted([*info.get("missing_keys", []), *resized])
    head = [k for k in missing if not k.startswith(prefix)]
    body = [k for k in missing if k.startswith(prefix)]
    if head:
        logger.info("new reward head for %s, randomly initialised: %s", name_or_path, ", ".join(head))
    if body:
        logger.warning("%s lacks %d backbone weights, randomly initialised: %s", name_or_path, len(body), body[:5])
    if disable_dropout:
        disable_dropout_in(model)
    return model, tokenizer


def disable_dropout_in(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def rewards(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One scalar reward per row, shape (rows,); a model with H > 1 reward heads gives (rows, H)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return logits.squeeze(-1) if logits.shape[-1] == 1 else logits


def head_count(model: PreTrainedModel) -> int:
    """How many reward heads the model has (its num_labels)."""
    return int(model.config.num_labels)


@contextlib.contextmanager
def first_token_only_last_layer(model: PreTrainedModel):
    """Within this block a BERT reward model computes its last layer for the [CLS] position alone.

    BERT's reward head reads only the first token of the last layer. That layer still needs keys and values
    from every token, but its queries, attention output and feed-forward block are needed for [CLS] only: on
    MiniLM-L6 that is ~14% of the encoder's work, forward and backward, skipped with the same result (to float
    rounding; tests/rewardmodel/core/test_model.py compares both). Any other architecture runs unchanged.
    """
    layer = _last_bert_layer(model)
    if layer is None:
        yield
        return
    layer.forward = functools.partial(_first_token_layer_forward, layer)
    try:
        yield
    finally:
        del layer.forward  # back to the class's own forward


def _last_bert_layer(model):
    if type(model).__name__ != "BertForSequenceClassification" or model.config.is_decoder:
        return None
    layers = model.bert.encoder.layer
    if not layers or type(layers[-1]).__name__ != "BertLayer" or model.bert.pooler is None:
        return None
    return layers[-1]


def _first_token_layer_forward(layer, hidden_states: torch.Tensor, attention_mask=None, *args, **kwargs):
    # BertLayer.forward with queries (and everything after attention) restricted to position 0.
    attention = layer.attention.self
    first = hidden_states[:, :1]
    heads = (attention.num_attention_heads, attention.attention_head_size)
    query = attention.query(first).view(first.shape[0], 1, *heads).transpose(1, 2)
    key = attention.key(hidden_states).view(*hidden_states.shape[:2], *heads).transpose(1, 2)
    value = attention.value(hidden_states).view(*hidden_states.shape[:2], *heads).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[2] > 1:
        attention_mask = attention_mask[:, :, :1, :]
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager_attention_forward)
    context, _ = interface(
        attention,
        query,
        key,
        value,
        attention_mask,
        dropout=attention.dropout.p if attention.training else 0.0,
        scaling=attention.scaling,
    )
    attended = layer.attention.output(context.reshape(first.shape[0], 1, -1), first)
    return layer.feed_forward_chunk(attended)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch sees no CUDA device")
    return resolved


def resolve_precision(device: torch.device, precision: str) -> str:
    """What "auto", "fp32" or "bf16" means on this device: "bf16" (autocast) or "fp32"."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA by default; fp32 on CPU, where bf16 is faster only with native bf16 instructions
    (AVX512-BF16 or AMX): "bf16" asks for it (see core/README.md and check_cpu_precision)."""
    if resolve_precision(device, precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this x86 CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16), from /proc/cpuinfo's flags.

    None when that cannot be told (no /proc/cpuinfo, or no x86 flags line). torch's own
    torch.cpu._is_avx512_bf16_supported() answered False on a Zen 4 that has the instructions, so the kernel's
    flags are read instead.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
                cpuinfo = file.read()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            return any(flag in flags for flag in NATIVE_BF16_FLAGS)
    return None


def check_cpu_precision(device: torch.device, precision: str, cpuinfo: str | None = None) -> str | None:
    """A warning when the precision asked for is the slow one for this CPU, else None (GPUs: always None).

    bf16 on a CPU without native bf16 falls back to emulated matrix multiplies: on an AVX2-only CPU it measured
    many times slower than fp32 (core/README.md). The opposite case is only a hint: fp32 is correct everywhere.
    """
    if device.type != "cpu":
        return None
    native = cpu_has_native_bf16(cpuinfo)
    chosen = resolve_precision(device, precision)
    if chosen == "bf16" and native is False:
        return (
            "precision 'bf16' was asked for on a CPU without native bf16 instructions (no avx512_bf16 or amx_bf16 "
            "flag): torch emulates bf16 there, many times slower than fp32; use precision 'fp32' or 'auto'"
        )
    if chosen == "fp32" and native:
        logger.info("this CPU has native bf16 instructions: precision 'bf16' trains about twice as fast")
    return None
