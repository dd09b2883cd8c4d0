import dataclasses
import logging

import pytest
import torch
from transformers import AutoTokenizer, BertModel, GPT2Config, GPT2ForSequenceClassification

from rewardmodel.core import model as model_module
from rewardmodel.core.data import pad_sequences
from rewardmodel.core.model import (
    check_cpu_precision,
    cpu_has_native_bf16,
    first_token_only_last_layer,
    load_backbone,
    rewards,
)
from rewardmodel.core.train import train

from .conftest import marker_pairs


def padded_batch(vocab_size: int):
    generator = torch.Generator().manual_seed(0)
    lengths = [12, 7, 3, 12, 9]
    sequences = [[2, *torch.randint(5, vocab_size, (n - 2,), generator=generator).tolist(), 3] for n in lengths]
    return pad_sequences(sequences, pad_id=0)


def test_the_first_token_shortcut_gives_the_same_rewards_and_gradients(tiny_backbone):
    model, _ = load_backbone(tiny_backbone)
    input_ids, attention_mask = padded_batch(model.config.vocab_size)

    def rewards_and_gradients(shortcut: bool):
        model.zero_grad()
        if shortcut:
            with first_token_only_last_layer(model):
                r = rewards(model, input_ids, attention_mask)
        else:
            r = rewards(model, input_ids, attention_mask)
        (r * torch.arange(1.0, 6.0)).sum().backward()
        return r.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, plain_grads = rewards_and_gradients(shortcut=False)
    short, short_grads = rewards_and_gradients(shortcut=True)

    torch.testing.assert_close(short, plain, rtol=0, atol=1e-6)
    assert plain_grads.keys() == short_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(short_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_the_shortcut_ends_with_its_block(tiny_backbone):
    model, _ = load_backbone(tiny_backbone)
    last = model.bert.encoder.layer[-1]

    with first_token_only_last_layer(model):
        assert "forward" in vars(last)
    assert "forward" not in vars(last)
    input_ids, attention_mask = padded_batch(model.config.vocab_size)
    assert model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.shape[1] == 12


def test_other_architectures_run_unchanged():
    model = GPT2ForSequenceClassification(
        GPT2Config(
            vocab_size=50,
            n_embd=16,
            n_layer=1,
            n_head=2,
            n_positions=32,
            num_labels=1,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
        )
    ).eval()
    input_ids, attention_mask = padded_batch(50)

    with first_token_only_last_layer(model):
        inside = rewards(model, input_ids, attention_mask)

    assert torch.equal(inside, rewards(model, input_ids, attention_mask))


def test_loading_a_bare_encoder_adds_a_reward_head_without_the_load_report(tiny_backbone, tmp_path, caplog):
    # A sentence-transformers checkpoint (like all-MiniLM-L6-v2) is a bare BertModel: no classifier weights.
    encoder = BertModel.from_pretrained(tiny_backbone)
    encoder.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_backbone).save_pretrained(tmp_path)
    caplog.clear()

    with caplog.at_level("INFO"):
        model, tokenizer = load_backbone(str(tmp_path))

    assert model.config.num_labels == 1
    assert model.config.pad_token_id == tokenizer.pad_token_id == 0
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert "new reward head" in caplog.text and "classifier.weight" in caplog.text
    assert "LOAD REPORT" not in caplog.text
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "lacks" in r.getMessage()]


def test_a_missing_backbone_is_a_clear_error(tmp_path):
    with pytest.raises(OSError):
        load_backbone(str(tmp_path / "nowhere"))


ZEN4_FLAGS = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 avx512_vnni\n"
AVX2_FLAGS = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS_FLAGS = "processor\t: 0\nflags\t\t: avx2 avx512f amx_bf16 amx_tile amx_int8\n"


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16(ZEN4_FLAGS) is True
    assert cpu_has_native_bf16(SAPPHIRE_RAPIDS_FLAGS) is True
    assert cpu_has_native_bf16(AVX2_FLAGS) is False
    assert cpu_has_native_bf16("processor\t: 0\nFeatures\t: fp asimd\n") is None  # no x86 flags line: unknown
    assert cpu_has_native_bf16() in (True, False, None)  # this machine's own /proc/cpuinfo, whatever it has


def test_bf16_on_a_cpu_without_it_is_warned_about():
    cpu = torch.device("cpu")

    warning = check_cpu_precision(cpu, "bf16", AVX2_FLAGS)

    assert "without native bf16" in warning and "'fp32'" in warning
    assert check_cpu_precision(cpu, "bf16", ZEN4_FLAGS) is None
    assert check_cpu_precision(cpu, "auto", AVX2_FLAGS) is None  # auto is fp32 on a CPU
    assert check_cpu_precision(cpu, "fp32", ZEN4_FLAGS) is None  # fp32 is never wrong, only slower there
    assert check_cpu_precision(cpu, "bf16", "no flags at all") is None  # unknown CPU: no guess
    assert check_cpu_precision(torch.device("cuda"), "bf16", AVX2_FLAGS) is None


def test_training_records_the_precision_it_ran_and_warns_about_emulated_bf16(tiny_config, monkeypatch, caplog):
    monkeypatch.setattr(model_module, "cpu_has_native_bf16", lambda cpuinfo=None: False)

    with caplog.at_level(logging.WARNING, logger="rewardmodel.core.train"):
        emulated = train(dataclasses.replace(tiny_config, precision="bf16"), marker_pairs(8))
    plain = train(tiny_config, marker_pairs(8))

    assert emulated.metrics["train"]["precision"] == "bf16"
    assert plain.metrics["train"]["precision"] == "fp32"  # "auto" on a CPU
    assert [r.getMessage() for r in caplog.records if "without native bf16" in r.getMessage()]
