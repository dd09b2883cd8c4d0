"""The backbone: a sequence-classification model with one output, the reward. Device and precision helpers."""

from __future__ import annotations

import contextlib
import logging

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

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


def load_backbone(name_or_path: str, *, disable_dropout: bool = True) -> tuple[PreTrainedModel, object]:
    """A reward model (num_labels=1, pad token set) and its tokenizer from a local directory or a hub id.

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
    with _quiet_load_report():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            name_or_path,
            num_labels=1,
            dtype=torch.float32,
            use_safetensors=True,
            output_loading_info=True,
        )
    model.config.pad_token_id = tokenizer.pad_token_id
    prefix = f"{model.base_model_prefix}."
    missing = sorted(info.get("missing_keys", []))
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
    """One scalar reward per row."""
    return model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch sees no CUDA device")
    return resolved


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA by default; fp32 on CPU, where bf16 matmuls are slower without AMX."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
