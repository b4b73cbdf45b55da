"""The input spec: text form, JSON round trip, examples, checks."""

from __future__ import annotations

import json

import pytest
import torch

from edgeflow.core.inputs import (
    InputSpec,
    check_tensors,
    example_inputs,
    inputs_from_json,
    inputs_to_json,
    parse_input,
)
from edgeflow.errors import ConfigError


def test_parse_text_form() -> None:
    assert parse_input("input_ids:1,16:int64") == InputSpec("input_ids", (1, 16), torch.int64)
    assert parse_input("x:1,3,8,8") == InputSpec("x", (1, 3, 8, 8), torch.float32)
    assert str(parse_input("mask:2,4:bool")) == "mask:2,4:bool"


@pytest.mark.parametrize(
    "text, words",
    [
        ("x", "expected NAME:SHAPE:DTYPE"),
        ("x:1,a:int64", "invalid literal"),
        ("x:1,16:complex64", "dtype 'complex64' is not one of"),
        ("1x:1,16:int64", "not a Python identifier"),
        ("class:1:int64", "not a Python identifier"),
        ("x:0,16", "integers in 1.."),
        ("x::int64", "invalid literal"),
    ],
)
def test_bad_text_names_the_problem(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match="--input") as e:
        parse_input(text)
    assert words in str(e.value)


def test_json_round_trip_and_refusals() -> None:
    specs = [InputSpec("input_ids", (1, 16), torch.int64), InputSpec("attention_mask", (1, 16), torch.int64)]
    assert inputs_from_json(json.loads(inputs_to_json(specs))) == specs
    for bad in ([], [{"name": "x"}], [{"name": "x", "shape": [1], "dtype": "object"}], "x", [specs[0].to_json()] * 2,
                [{"name": "x", "shape": list(range(1, 20)), "dtype": "int64"}]):
        with pytest.raises(ValueError):
            inputs_from_json(bad)


def test_examples_have_the_spec_at_any_batch() -> None:
    specs = [InputSpec("x", (1, 3, 4, 4), torch.float32), InputSpec("mask", (1, 4), torch.int64)]
    ex = example_inputs(specs, 3)
    assert list(ex) == ["x", "mask"]
    assert ex["x"].shape == (3, 3, 4, 4) and ex["x"].dtype == torch.float32
    assert ex["mask"].shape == (3, 4) and ex["mask"].dtype == torch.int64 and bool((ex["mask"] == 1).all())
    check_tensors(specs, ex)
    with pytest.raises(ValueError, match="input 'mask' has dtype int32"):
        check_tensors(specs, {**ex, "mask": ex["mask"].int()})
    with pytest.raises(ValueError, match=r"input 'x' has shape \[3, 3, 5, 4\]"):
        check_tensors(specs, {**ex, "x": torch.zeros(3, 3, 5, 4)})
    with pytest.raises(ValueError, match=r"missing \['mask'\]"):
        check_tensors(specs, {"x": ex["x"]})
