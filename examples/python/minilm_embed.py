"""Sentence embeddings with all-MiniLM-L6-v2, computed with NumPy from weights
streamed through `tinyai` under a third of the model's size.

    cargo xtask py-test          # builds and installs tinyai into target/py-venv
    target/py-venv/bin/python examples/python/minilm_embed.py [SENTENCE ...]

The model (model.safetensors, tokenizer.json, config.json) is taken from
$TINYAI_REAL_MODEL_DIR, else from target/models/all-MiniLM-L6-v2/ (where
`cargo xtask fetch-model` puts it). It is converted once to model.tmai with
`tinyai.convert`, then opened with `max_cache_size` = a third of the file:

- the embeddings layer (47 MB, more than the budget) is never loaded: the rows
  of the tokens in the batch, the positions used and the LayerNorm are read
  with `Model.read_tensor_bytes`, which reads from the file without charging;
- the six encoder layers (7 MB each) are visited once with `forward_pass`,
  which prefetches the next layer while NumPy computes on the current one;
  their weights are read-only NumPy arrays over the store's memory (no copy).

The embeddings are what sentence-transformers computes: BERT's last hidden
state, mean-pooled over the attention mask, L2-normalised. The pytest
`crates/tinyai-py/tests/test_minilm.py` checks them within 1e-4 against a
NumPy reference that loads every weight from the safetensors file at once.
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

import tinyai

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "A man is riding a horse.",
]

_erf = np.vectorize(math.erf, otypes=[np.float64])


def default_model_dir() -> Path:
    configured = os.environ.get("TINYAI_REAL_MODEL_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "target" / "models" / "all-MiniLM-L6-v2"


def converted(model_dir: Path, output: Path) -> Path:
    """`model_dir/model.safetensors` as .tmai at `output` (converted once)."""
    source = model_dir / "model.safetensors"
    if not output.exists() or output.stat().st_mtime < source.stat().st_mtime:
        output.parent.mkdir(parents=True, exist_ok=True)
        tinyai.convert(source, output)
    return output


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


def gelu(x):
    # BERT's "gelu": the exact one, x * Phi(x).
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(x.dtype)


def read_rows(model, layer, name, rows, width):
    """Rows of a row-major f32 [*, width] tensor, read from the file (not charged)."""
    row_bytes = width * 4
    return np.stack(
        [np.frombuffer(model.read_tensor_bytes(layer, name, int(row) * row_bytes, row_bytes), "<f4") for row in rows]
    )


def embed(tmai_path, tokenizer_path, config_path, sentences, budget=None):
    """Returns (embeddings [n, hidden] float32, peak charged bytes, budget)."""
    from tokenizers import Tokenizer

    config = json.loads(Path(config_path).read_text())
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = config["layer_norm_eps"]
    head_size = hidden // heads
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in the batch
    encodings = tokenizer.encode_batch(sentences)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    types = np.array([e.type_ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
    batch, length = ids.shape

    if budget is None:
        budget = os.path.getsize(tmai_path) // 3
    with tinyai.open(tmai_path, max_cache_size=budget) as model:
        layers = {name: index for index, name in enumerate(
            layer["name"] for layer in tinyai.inspect(tmai_path)["layers"])}
        embeddings = layers["embeddings"]
        prefix = "embeddings."
        unique = np.unique(ids)
        table = dict(zip(unique.tolist(), read_rows(model, embeddings, prefix + "word_embeddings.weight", unique, hidden)))
        words = np.stack([np.stack([table[t] for t in row]) for row in ids.tolist()])
        positions = read_rows(model, embeddings, prefix + "position_embeddings.weight", range(length), hidden)
        token_types = read_rows(model, embeddings, prefix + "token_type_embeddings.weight", range(2), hidden)
        ln_weight = read_rows(model, embeddings, prefix + "LayerNorm.weight", [0], hidden)[0]
        ln_bias = read_rows(model, embeddings, prefix + "LayerNorm.bias", [0], hidden)[0]
        x = layer_norm(words + positions[None] + token_types[types], ln_weight, ln_bias, eps).astype(np.float32)

        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        encoder = [layers[f"layer.{i}"] for i in range(config["num_hidden_layers"])]
        peak = model.memory_usage
        for layer in model.forward_pass(encoder):
            with layer:
                peak = max(peak, model.memory_usage)
                p = f"encoder.layer.{layer.index - encoder[0]}."
                w = layer.tensors()  # read-only arrays over the layer's bytes

                def linear(inputs, name):
                    return inputs @ w[p + name + ".weight"].T + w[p + name + ".bias"]

                def split(t):
                    return t.reshape(batch, length, heads, head_size).transpose(0, 2, 1, 3)

                q = split(linear(x, "attention.self.query"))
                k = split(linear(x, "attention.self.key"))
                v = split(linear(x, "attention.self.value"))
                scores = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(head_size)) + bias
                scores = np.exp(scores - scores.max(-1, keepdims=True))
                probs = scores / scores.sum(-1, keepdims=True)
                context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
                attention = layer_norm(
                    linear(context, "attention.output.dense") + x,
                    w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
                intermediate = gelu(linear(attention, "intermediate.dense"))
                x = layer_norm(
                    linear(intermediate, "output.dense") + attention,
                    w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps).astype(np.float32)
                del w
        peak = max(peak, model.memory_usage)

    pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True), peak, budget


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sentences", nargs="*", default=SENTENCES)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--tmai", type=Path, default=None, help="where the converted model goes")
    arguments = parser.parse_args(argv)
    model_dir = arguments.model_dir or default_model_dir()
    if not (model_dir / "model.safetensors").is_file():
        sys.exit(f"{model_dir}: no model.safetensors (run `cargo xtask fetch-model`)")
    tmai_path = converted(model_dir, arguments.tmai or model_dir / "model.tmai")
    embeddings, peak, budget = embed(
        tmai_path, model_dir / "tokenizer.json", model_dir / "config.json", arguments.sentences)
    size = os.path.getsize(tmai_path)
    print(f"model {size / 1e6:.1f} MB, budget {budget / 1e6:.1f} MB, peak charged {peak / 1e6:.1f} MB")
    print(f"{len(arguments.sentences)} embeddings of dimension {embeddings.shape[1]}")
    similarities = embeddings @ embeddings.T
    for i, sentence in enumerate(arguments.sentences):
        for j in range(i + 1, len(arguments.sentences)):
            print(f"{similarities[i, j]:.4f}  {sentence!r} ~ {arguments.sentences[j]!r}")


if __name__ == "__main__":
    main()
