"""The examples in rewardmodel.core's docstrings run and print what they claim."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["data", "examples", "jsonl", "loss", "scoring"])
def test_the_docstring_examples_hold(module):
    result = doctest.testmod(importlib.import_module(f"rewardmodel.core.{module}"), optionflags=doctest.ELLIPSIS)

    assert result.attempted > 0
    assert result.failed == 0
