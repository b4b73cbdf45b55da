"""A tokenizer carried inside an exported artifact (edgeflow.core.tokenizer): the same tokens as transformers' own
tokenizer of the folder, settings checked, covered by the fingerprint (a tampered one is refused)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from edgeflow.core.artifact import load_artifact
from edgeflow.core.inputs import InputSpec, parse_input
from edgeflow.core.tokenizer import TextEncoder, TokenizerSpec, tokenizer_from_folder
from edgeflow.errors import ArtifactError, ConfigError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("tokenizers") is None,
    reason="the text extra (transformers, tokenizers) is not installed: pip install 'edgeflow[text]'",
)
INPUTS = [parse_input(f"{n}:1,12:int64") for n in ("input_ids", "attention_mask", "token_type_ids")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeflow.testing.tinybert import tiny_bert_folder

    return tiny_bert_folder(tmp_path_factory.mktemp("tok") / "tiny-bert")


@pytest.fixture(scope="module")
def exported(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeflow.cli.export_cmd import load_source
    from edgeflow.core.export import export_model, save_graph_artifact

    ex = export_model(load_source(f"hf:{folder}"), INPUTS[:2])
    ex.tokenizer = tokenizer_from_folder(folder, ex.inputs)
    out = tmp_path_factory.mktemp("art") / "bert.ef"
    save_graph_artifact(out, ex)
    return out


@pytest.mark.parametrize("truncation", [True, False])
def test_tokens_equal_transformers_own_tokenizer(folder: Path, truncation: bool) -> None:
    import transformers

    from edgeflow.testing.tinybert import SENTENCES

    spec = tokenizer_from_folder(folder, INPUTS, truncation=truncation)
    assert spec is not None and spec.fills == ("input_ids", "attention_mask", "token_type_ids")
    assert (spec.max_length, spec.pad_token, spec.pad_id, spec.padding) == (12, "[PAD]", 0, "max_length")
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token="[PAD]")
    sentences = [*SENTENCES, "é ü 中 — émoji 🙂", ""]
    want = ref(sentences, padding="max_length", truncation=True, max_length=12, return_tensors="pt",
               return_token_type_ids=True)
    enc = TextEncoder(spec)
    long = [i for i, s in enumerate(sentences) if enc.num_tokens(s) > 12]
    assert long, "some sentence must be longer than 12 tokens"
    if truncation:
        got = enc.encode(sentences)
        for g, name in zip(got, spec.fills):
            assert g.dtype == torch.int64 and torch.equal(g, want[name]), name
    else:
        with pytest.raises(ValueError, match=rf"row {long[0]} has \d+ tokens, more than the tokenizer's max_length 12"):
            enc.encode(sentences)
        short = [s for s in sentences if enc.num_tokens(s) <= 12]
        assert torch.equal(enc.encode(short)[0], ref(short, padding="max_length", max_length=12, return_tensors="pt")["input_ids"])


def test_no_tokenizer_where_it_cannot_feed_the_model(folder: Path, tmp_path: Path) -> None:
    assert tokenizer_from_folder(tmp_path, INPUTS) is None  # no tokenizer.json
    assert tokenizer_from_folder(folder, [InputSpec("pixel_values", (1, 3, 8, 8), torch.float32)]) is None
    with pytest.raises(ConfigError, match=r"cannot feed the model's inputs: input 'input_ids' is float32"):
        tokenizer_from_folder(folder, [parse_input("input_ids:1,12:float32")])
    with pytest.raises(ConfigError, match=r"input 'attention_mask' has shape \[1, 8\]; the tokenizer makes \(B, 12\)"):
        tokenizer_from_folder(folder, [parse_input("input_ids:1,12:int64"), parse_input("attention_mask:1,8:int64")])
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"tokenizer.json: not a tokenizer JSON file"):
        tokenizer_from_folder(tmp_path, INPUTS)


def test_spec_json_round_trips_and_refuses_bad_settings(folder: Path) -> None:
    spec = tokenizer_from_folder(folder, INPUTS)
    assert spec is not None
    assert TokenizerSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    bad = [
        ({"extra": 1}, r"an object with"),
        ({"padding": "longest"}, r"only 'max_length' fits a fixed input shape"),
        ({"fills": ["input_ids", "input_ids"]}, r"distinct inputs"),
        ({"fills": ["pixel_values"]}, r"distinct inputs"),
        ({"max_length": 0}, r"max_length 0 is not an int"),
        ({"truncation": "yes"}, r"truncation 'yes' is not a bool"),
        ({"pad_id": -1}, r"pad_id -1 is not a token id"),
    ]
    for change, words in bad:
        with pytest.raises(ValueError, match=words):
            TokenizerSpec.from_json({**spec.to_json(), **change})


def test_the_artifact_carries_it_under_its_fingerprint(exported: Path, folder: Path, tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    art = load_artifact(exported)
    assert art.tokenizer is not None and art.tokenizer.fills == ("input_ids", "attention_mask")
    assert art.tokenizer.tokenizer_json == (folder / "tokenizer.json").read_text()
    with safe_open(str(exported), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}

    def variant(name: str, **changes: str | None) -> Path:
        m = dict(meta)
        for k, v in changes.items():
            if v is None:
                m.pop(f"edgeflow.{k}")
            else:
                m[f"edgeflow.{k}"] = v
        save_file(tensors, str(tmp_path / name), metadata=m)
        return tmp_path / name

    doc = json.loads(meta["edgeflow.tokenizer"])
    vocab_swapped = json.loads(doc["tokenizer_json"])
    vocab_swapped["model"]["vocab"]["device"], vocab_swapped["model"]["vocab"]["cloud"] = (
        vocab_swapped["model"]["vocab"]["cloud"], vocab_swapped["model"]["vocab"]["device"])  # fmt: skip
    cases = {
        "swapped.ef": {"tokenizer": json.dumps({**doc, "tokenizer_json": json.dumps(vocab_swapped)})},
        "untruncated.ef": {"tokenizer": json.dumps({**doc, "truncation": False})},
        "dropped.ef": {"tokenizer": None},
    }
    for name, changes in cases.items():
        with pytest.raises(ArtifactError, match=r"tampered or corrupt"):
            load_artifact(variant(name, **changes))
    with pytest.raises(ArtifactError, match=r"malformed tokenizer: .*padding 'longest'"):
        load_artifact(variant("bad.ef", tokenizer=json.dumps({**doc, "padding": "longest"})))
    with pytest.raises(ArtifactError, match=r"malformed tokenizer"):
        load_artifact(variant("deep.ef", tokenizer="[" * 100_000))
