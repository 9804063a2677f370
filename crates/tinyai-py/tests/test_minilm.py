"""The MiniLM example (examples/python/minilm_embed.py), streamed under a third
of the model's size, against a NumPy reference that loads every weight from
the original safetensors file at once and computes in float64."""

import json
import math
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import record_skip

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "examples" / "python"))

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "A man is riding a horse.",
    "Zero-copy views of memory-mapped layers!",
]


@pytest.fixture(scope="module")
def model_dir():
    unavailable = os.environ.get("TINYAI_REAL_MODEL_UNAVAILABLE")
    directory = Path(os.environ.get("TINYAI_REAL_MODEL_DIR") or ROOT / "target/models/all-MiniLM-L6-v2")
    files = ["model.safetensors", "tokenizer.json", "config.json"]
    if unavailable or not all((directory / f).is_file() for f in files):
        record_skip("python minilm example", unavailable or f"{directory} lacks {', '.join(files)}")
    return directory


def load_safetensors(path):
    """Every tensor of a safetensors file as float64 (header parsed by hand)."""
    data = Path(path).read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_length])
    base = 8 + header_length
    dtypes = {"F32": "<f4", "I64": "<i8"}
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(data[base + start : base + end], dtypes[entry["dtype"]]).reshape(entry["shape"]).astype(np.float64)
    return tensors


def reference_embeddings(model_dir, sentences):
    from tokenizers import Tokenizer

    config = json.loads((model_dir / "config.json").read_text())
    weights = load_safetensors(model_dir / "model.safetensors")
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    eps, heads = config["layer_norm_eps"], config["num_attention_heads"]
    erf = np.vectorize(math.erf)

    def norm(x, prefix):
        centred = x - x.mean(-1, keepdims=True)
        return centred / np.sqrt((centred**2).mean(-1, keepdims=True) + eps) * weights[prefix + ".weight"] + weights[prefix + ".bias"]

    def dense(x, prefix):
        return x @ weights[prefix + ".weight"].T + weights[prefix + ".bias"]

    result = []
    for sentence in sentences:  # one at a time, no padding, no mask
        encoding = tokenizer.encode(sentence)
        ids, n = np.array(encoding.ids), len(encoding.ids)
        x = weights["embeddings.word_embeddings.weight"][ids] + weights["embeddings.position_embeddings.weight"][:n]
        x = norm(x + weights["embeddings.token_type_embeddings.weight"][np.array(encoding.type_ids)], "embeddings.LayerNorm")
        for i in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q, k, v = (dense(x, p + "attention.self." + m).reshape(n, heads, -1).transpose(1, 0, 2) for m in ("query", "key", "value"))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            context = (probs @ v).transpose(1, 0, 2).reshape(n, -1)
            a = norm(dense(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = dense(a, p + "intermediate.dense")
            h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
            x = norm(dense(h, p + "output.dense") + a, p + "output.LayerNorm")
        pooled = x.mean(0)
        result.append(pooled / np.linalg.norm(pooled))
    return np.stack(result)


def test_streamed_embeddings_match_the_in_memory_reference(model_dir, tmp_path):
    import minilm_embed

    tmai = minilm_embed.converted(model_dir, tmp_path / "model.tmai")
    size = os.path.getsize(tmai)
    embeddings, peak, budget = minilm_embed.embed(tmai, model_dir / "tokenizer.json", model_dir / "config.json", SENTENCES)
    assert budget <= size // 3
    assert 0 < peak <= budget, (peak, budget)
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(SENTENCES), 384)
    reference = reference_embeddings(model_dir, SENTENCES)
    difference = np.abs(embeddings - reference).max()
    assert difference < 1e-4, difference
    # sentence-transformers' documented score for this pair is 0.7553.
    assert abs(float(embeddings[0] @ embeddings[1]) - 0.7553) < 5e-4


def test_the_example_runs(model_dir, tmp_path, capsys):
    import minilm_embed

    minilm_embed.main(["--model-dir", str(model_dir), "--tmai", str(tmp_path / "m.tmai"), "a cat", "a kitten", "a car"])
    out = capsys.readouterr().out
    assert "budget 30.3 MB" in out and "3 embeddings of dimension 384" in out
    assert "'a cat' ~ 'a kitten'" in out
