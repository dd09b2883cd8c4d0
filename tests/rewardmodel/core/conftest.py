"""Tiny randomly initialised BERT reward models, built from a config inside the test run: no download."""

import os

import pytest

# Nothing in these tests may reach a hub; set before transformers is imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast  # noqa: E402

from rewardmodel.core.config import TrainConfig  # noqa: E402
from rewardmodel.core.examples import PreferenceExample  # noqa: E402

WORDS = (
    "human assistant system user : , . ? ! the a an is it to of and you i we can please help me tell how what why "
    "sure yes no maybe good bad great fine okay sorry thanks answer question weather today cats dogs code "
    "red blue green one two three four five six seven eight nine ten marker"
).split()


def build_tiny_backbone(directory, *, seed: int = 0) -> str:
    """A 2-layer, 32-wide BERT with a word-level vocabulary, saved the way a hub model would be."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, model_max_length=128)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
        pad_token_id=0,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> str:
    return build_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def tiny_config(tiny_backbone) -> TrainConfig:
    return TrainConfig(
        backbone=tiny_backbone,
        max_length=48,
        batch_size=8,
        epochs=1,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        device="cpu",
        eval_batch_size=32,
    )


def marker_pairs(n: int, *, seed: int = 0) -> list[PreferenceExample]:
    """A separable toy set: the response containing "marker" always wins, on either side."""
    rng = torch.Generator().manual_seed(seed)
    filler = WORDS[WORDS.index("the") : -1]

    def words(k):
        return " ".join(filler[i] for i in torch.randint(len(filler), (k,), generator=rng).tolist())

    examples = []
    for i in range(n):
        conversation = [{"role": "user", "content": words(6)}]
        plain, marked = words(5), f"{words(2)} marker {words(2)}"
        if i % 2:
            examples.append(PreferenceExample(conversation, marked, plain, target=1.0))
        else:
            examples.append(PreferenceExample(conversation, plain, marked, target=0.0))
    return examples


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tiny models gain nothing from a second thread, and on a busy CI box OpenMP threads that wait for each
    # other at every op make a 1-second test take 15.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
