"""A tiny BERT-like Hugging Face model folder, made offline: for tests of ``edgeflow export hf:DIR`` with its tokenizer.

:func:`tiny_bert_folder` writes what ``transformers`` saves for a ``BertModel`` (``config.json``,
``model.safetensors``; seeded random weights) and a WordPiece ``tokenizer.json`` built with the ``tokenizers``
library from :data:`WORDS` (BERT's normalizer, pre-tokenizer and ``[CLS] ... [SEP]`` template). Nothing is
downloaded. Needs the text extra (``transformers``, ``tokenizers``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["WORDS", "SENTENCES", "tiny_bert_folder"]

WORDS = ("the a an is are was of to in on at and or for with from by edge device cloud model text token tokens "
         "sentence sentences split network link fast slow small large data never leaves runs first layers rest "
         "embedding bit exact same answer").split()  # fmt: skip
SENTENCES = (
    "The device runs the first layers.",
    "Text never leaves the device.",
    "The cloud runs the rest of the model.",
    "A small model on a slow link",
    "Same answer, bit exact!",
    "unknown words become unk tokens",
)
_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def tiny_bert_folder(folder: str | Path, *, hidden_size: int = 16, num_layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny BERT model folder with its tokenizer; returns the folder.

    The vocabulary: the special tokens, :data:`WORDS`, single characters and their ``##`` continuations, so any
    ASCII text tokenizes (unknown characters become ``[UNK]``).
    """
    import torch
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    folder = Path(folder)
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    vocab: dict[str, int] = {}
    for token in (*_SPECIAL, *WORDS, *chars, *(f"##{c}" for c in chars)):
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
                                  num_attention_heads=2, intermediate_size=2 * hidden_size, max_position_embeddings=64)  # fmt: skip
    transformers.BertModel(cfg).eval().save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder
