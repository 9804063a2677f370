//! Access traces of the workload families real inference engines produce,
//! over models with realistic, unequal layer sizes.
//!
//! [`sim`](crate::sim)'s generators are synthetic patterns over layers of
//! similar sizes; these are the patterns of engines running models whose
//! layers differ: a large token embedding and LM head, equal transformer
//! blocks, small LoRA adapters, many equal experts. Every generator is a pure
//! function of its seed and parameters (the same [`Trace`] for the same
//! arguments); the seed draws the model's shape too (block count, embedding
//! size), so different seeds are different models, not only different
//! routings.
//!
//! | family | pattern per step |
//! | --- | --- |
//! | [`Family::DenseDecode`] | one decode pass per token: embedding, every block, head |
//! | [`Family::MoeDecode`] | embedding, per block its attention and the top-2 of 8 experts (skewed popularity that drifts every few hundred tokens), head |
//! | [`Family::PrefillDecode`] | per request: prompt chunks (passes without the head, the last with it), then decode passes |
//! | [`Family::ConcurrentSequences`] | 2–4 sequences decoding the same model, interleaved in bursts of layers |
//! | [`Family::EarlyExit`] | decode passes that stop at a random depth (the head at the exit) |
//! | [`Family::Speculative`] | a small draft model passed 3–5 times, then one verifying pass of the target |
//! | [`Family::LoraSwap`] | decode passes touching, beside each block, the active adapter's layer; the adapter changes per request |
//!
//! Layer sizes are in units of one dense block ([`BLOCK_BYTES`], 1 MiB; a
//! scaled-down model: ratios, not absolute sizes, decide hit ratios). The
//! embedding and head are 1–3 blocks each (untied), MoE experts one block,
//! MoE attention a quarter, LoRA adapters 1/64 (16 KiB), the draft model's
//! blocks 1/16 and its embedding and head a fifth of the target's.
//!
//! # Seeds
//!
//! The adaptive policy may be tuned on [`TUNING_SEEDS`] only; `cargo xtask
//! bench cache` reports every family at [`BENCH_SEEDS`], which tuning never
//! sees.

use crate::config::LayerId;
use crate::sim::{SplitMix64, Trace};

/// One dense transformer block, the unit of the layer sizes (1 MiB).
pub const BLOCK_BYTES: u64 = 1 << 20;

/// Seeds the adaptive policy may be tuned on.
pub const TUNING_SEEDS: [u64; 3] = [1, 2, 3];

/// Seeds of the benchmark report (never used for tuning).
pub const BENCH_SEEDS: [u64; 3] = [1009, 2027, 3061];

/// The workload families, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Decode passes: embedding, every block, head, per token.
    DenseDecode,
    /// Mixture-of-experts decode: top-2 of 8 experts per block, skewed and drifting.
    MoeDecode,
    /// Requests of a chunked prefill followed by decode passes.
    PrefillDecode,
    /// Several sequences decoding at once, interleaved.
    ConcurrentSequences,
    /// Decode passes stopping at a random depth.
    EarlyExit,
    /// Speculative decoding: draft passes, then a target pass.
    Speculative,
    /// Decode with LoRA adapters swapped per request.
    LoraSwap,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Family; 7] = [
        Family::DenseDecode,
        Family::MoeDecode,
        Family::PrefillDecode,
        Family::ConcurrentSequences,
        Family::EarlyExit,
        Family::Speculative,
        Family::LoraSwap,
    ];

    /// The snake_case name used as the trace name and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Family::DenseDecode => "dense_decode",
            Family::MoeDecode => "moe_decode",
            Family::PrefillDecode => "prefill_decode",
            Family::ConcurrentSequences => "concurrent_sequences",
            Family::EarlyExit => "early_exit",
            Family::Speculative => "speculative",
            Family::LoraSwap => "lora_swap",
        }
    }

    /// The family's trace for `seed` with the standard parameters: 5,000 to
    /// 19,000 requests (short enough for the exact upper bound,
    /// [`offline::EXACT_REQUESTS`](crate::offline::EXACT_REQUESTS)), or a
    /// sixth of that with `quick`.
    pub fn trace(self, seed: u64, quick: bool) -> Trace {
        let k = if quick { 1 } else { 6 };
        match self {
            Family::DenseDecode => dense_decode(seed, 50 * k),
            Family::MoeDecode => moe_decode(
                seed,
                &MoeParams {
                    tokens: 75 * k,
                    drift_every: if quick { 25 } else { 150 },
                    ..MoeParams::default()
                },
            ),
            Family::PrefillDecode => prefill_decode(seed, 50 * k),
            Family::ConcurrentSequences => concurrent_sequences(seed, 50 * k),
            Family::EarlyExit => early_exit(seed, 70 * k),
            Family::Speculative => speculative(seed, 25 * k),
            Family::LoraSwap => lora_swap(
                seed,
                &LoraParams {
                    tokens: 50 * k,
                    ..LoraParams::default()
                },
            ),
        }
    }
}

/// A dense decoder: embedding (layer 0), `blocks` equal blocks, head (last).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseModel {
    /// Number of transformer blocks.
    pub blocks: usize,
    /// Bytes of the token embedding, and of the (untied) head.
    pub embedding_bytes: u64,
    /// Bytes of one block.
    pub block_bytes: u64,
}

impl DenseModel {
    /// A model drawn from `rng`: 16–32 blocks of [`BLOCK_BYTES`], embedding
    /// and head of 1–3 blocks each.
    pub fn sample(rng: &mut SplitMix64) -> DenseModel {
        let blocks = 16 + rng.below(17) as usize;
        let embedding_bytes = (BLOCK_BYTES as f64 * (1.0 + 2.0 * rng.next_f64())) as u64;
        DenseModel {
            blocks,
            embedding_bytes,
            block_bytes: BLOCK_BYTES,
        }
    }

    /// Layer sizes: embedding, blocks, head.
    pub fn layer_sizes(&self) -> Vec<u64> {
        let mut sizes = vec![self.embedding_bytes];
        sizes.extend(std::iter::repeat_n(self.block_bytes, self.blocks));
        sizes.push(self.embedding_bytes);
        sizes
    }

    /// The embedding's id.
    pub fn embedding(&self) -> LayerId {
        LayerId(0)
    }

    /// Block `i`'s id (`i < blocks`).
    pub fn block(&self, i: usize) -> LayerId {
        LayerId(1 + i as u32)
    }

    /// The head's id.
    pub fn head(&self) -> LayerId {
        LayerId(1 + self.blocks as u32)
    }

    /// Appends one full decode pass.
    fn pass(&self, out: &mut Vec<LayerId>) {
        self.pass_to_depth(self.blocks, out);
    }

    /// Appends a pass through the first `depth` blocks, then the head.
    fn pass_to_depth(&self, depth: usize, out: &mut Vec<LayerId>) {
        out.push(self.embedding());
        out.extend((0..depth.min(self.blocks)).map(|i| self.block(i)));
        out.push(self.head());
    }
}

fn trace(name: &str, layer_sizes: Vec<u64>, accesses: Vec<LayerId>) -> Trace {
    Trace {
        name: name.into(),
        layer_sizes,
        accesses,
        priorities: Vec::new(),
    }
}

/// `tokens` decode passes over a dense model drawn from `seed`.
pub fn dense_decode(seed: u64, tokens: usize) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let model = DenseModel::sample(&mut rng);
    let mut accesses = Vec::with_capacity(tokens * (model.blocks + 2));
    for _ in 0..tokens {
        model.pass(&mut accesses);
    }
    trace("dense_decode", model.layer_sizes(), accesses)
}

/// Parameters of [`moe_decode`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoeParams {
    /// Decode steps (one pass each).
    pub tokens: usize,
    /// Experts per block.
    pub experts: usize,
    /// Experts each token is routed to per block.
    pub top_k: usize,
    /// Zipf exponent of each block's expert popularity.
    pub skew: f64,
    /// Every this many tokens, each block's popularity order drifts (two
    /// random transpositions of its ranking).
    pub drift_every: usize,
}

impl Default for MoeParams {
    fn default() -> Self {
        MoeParams {
            tokens: 450,
            experts: 8,
            top_k: 2,
            skew: 1.2,
            drift_every: 150,
        }
    }
}

/// Mixture-of-experts decode: per token the embedding, then per block its
/// attention and `top_k` distinct experts drawn by popularity (a Zipf law
/// over a per-block ranking that drifts every `drift_every` tokens), then the
/// head. The model (drawn from `seed`): 8–16 blocks, experts of one
/// [`BLOCK_BYTES`], attention a quarter, embedding and head 1–3 blocks.
/// Layers: embedding, per block (attention, experts…), head.
pub fn moe_decode(seed: u64, params: &MoeParams) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let blocks = 8 + rng.below(9) as usize;
    let experts = params.experts.max(1);
    let top_k = params.top_k.clamp(1, experts);
    let embedding_bytes = (BLOCK_BYTES as f64 * (1.0 + 2.0 * rng.next_f64())) as u64;
    let per_block = 1 + experts;
    let mut layer_sizes = vec![embedding_bytes];
    for _ in 0..blocks {
        layer_sizes.push(BLOCK_BYTES / 4);
        layer_sizes.extend(std::iter::repeat_n(BLOCK_BYTES, experts));
    }
    layer_sizes.push(embedding_bytes);
    let head = LayerId((layer_sizes.len() - 1) as u32);
    let weights: Vec<f64> = (0..experts)
        .map(|rank| 1.0 / ((rank + 1) as f64).powf(params.skew))
        .collect();
    // ranking[b][r] = the expert of popularity rank r in block b.
    let mut ranking: Vec<Vec<usize>> = (0..blocks)
        .map(|_| {
            let mut order: Vec<usize> = (0..experts).collect();
            rng.shuffle(&mut order);
            order
        })
        .collect();
    let mut accesses = Vec::with_capacity(params.tokens * (2 + blocks * (1 + top_k)));
    let mut chosen = Vec::with_capacity(top_k);
    for token in 0..params.tokens {
        if token > 0 && params.drift_every > 0 && token % params.drift_every == 0 {
            for order in &mut ranking {
                for _ in 0..2 {
                    let a = rng.below(experts as u64) as usize;
                    let b = rng.below(experts as u64) as usize;
                    order.swap(a, b);
                }
            }
        }
        accesses.push(LayerId(0));
        for (b, order) in ranking.iter().enumerate() {
            let base = 1 + b * per_block;
            accesses.push(LayerId(base as u32));
            chosen.clear();
            while chosen.len() < top_k {
                let total: f64 = (0..experts)
                    .filter(|r| !chosen.contains(r))
                    .filter_map(|r| weights.get(r))
                    .sum();
                let mut u = rng.next_f64() * total;
                let mut pick = None;
                for (r, w) in weights.iter().enumerate() {
                    if chosen.contains(&r) {
                        continue;
                    }
                    pick = Some(r);
                    if u < *w {
                        break;
                    }
                    u -= w;
                }
                let Some(rank) = pick else {
                    break;
                };
                chosen.push(rank);
                let expert = order.get(rank).copied().unwrap_or(0);
                accesses.push(LayerId((base + 1 + expert) as u32));
            }
        }
        accesses.push(head);
    }
    trace("moe_decode", layer_sizes, accesses)
}

/// Requests of a chunked prefill (1–4 passes through the blocks without the
/// head, then one with it) followed by 10–40 decode passes, until `tokens`
/// decode passes have run in all.
pub fn prefill_decode(seed: u64, tokens: usize) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let model = DenseModel::sample(&mut rng);
    let mut accesses = Vec::new();
    let mut decoded = 0;
    while decoded < tokens {
        let chunks = 1 + rng.below(4) as usize;
        for _ in 1..chunks {
            accesses.push(model.embedding());
            accesses.extend((0..model.blocks).map(|i| model.block(i)));
        }
        model.pass(&mut accesses);
        let decode = (10 + rng.below(31) as usize).min(tokens - decoded);
        for _ in 0..decode {
            model.pass(&mut accesses);
        }
        decoded += decode.max(1);
    }
    trace("prefill_decode", model.layer_sizes(), accesses)
}

/// 2–4 sequences decoding the same dense model at once, `tokens` passes in
/// all: the scheduler repeatedly picks a sequence at random and advances it
/// by a burst of 1–4 layers of its current pass.
pub fn concurrent_sequences(seed: u64, tokens: usize) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let model = DenseModel::sample(&mut rng);
    let sequences = 2 + rng.below(3) as usize;
    let mut pass = Vec::new();
    model.pass(&mut pass);
    // Each sequence starts at a different point of its pass.
    let mut position: Vec<usize> = (0..sequences)
        .map(|_| rng.below(pass.len() as u64) as usize)
        .collect();
    let total = tokens * pass.len();
    let mut accesses = Vec::with_capacity(total);
    while accesses.len() < total {
        let s = rng.below(sequences as u64) as usize;
        let burst = 1 + rng.below(4) as usize;
        let Some(p) = position.get_mut(s) else {
            continue;
        };
        for _ in 0..burst {
            if let Some(&id) = pass.get(*p) {
                accesses.push(id);
            }
            *p = (*p + 1) % pass.len();
        }
    }
    accesses.truncate(total);
    trace("concurrent_sequences", model.layer_sizes(), accesses)
}

/// `tokens` decode passes that exit early: after each block past the first
/// quarter the pass stops with probability `2 / blocks` (the head runs at the
/// exit), so early blocks are hotter than late ones.
pub fn early_exit(seed: u64, tokens: usize) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let model = DenseModel::sample(&mut rng);
    let exit_probability = 2.0 / model.blocks as f64;
    let mut accesses = Vec::new();
    for _ in 0..tokens {
        let mut depth = model.blocks / 4;
        while depth < model.blocks && rng.next_f64() >= exit_probability {
            depth += 1;
        }
        model.pass_to_depth(depth.max(1), &mut accesses);
    }
    trace("early_exit", model.layer_sizes(), accesses)
}

/// Speculative decoding for `rounds` rounds: the draft model (2–4 blocks of
/// 1/16 of a target block, embedding and head a fifth of the target's) runs
/// 3–5 passes, then the target runs one verifying pass. Layers: the target
/// model's, then the draft's.
pub fn speculative(seed: u64, rounds: usize) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let target = DenseModel::sample(&mut rng);
    let draft_blocks = 2 + rng.below(3) as usize;
    let mut layer_sizes = target.layer_sizes();
    let draft_base = layer_sizes.len() as u32;
    let draft_embedding = (target.embedding_bytes / 5).max(1);
    layer_sizes.push(draft_embedding);
    layer_sizes.extend(std::iter::repeat_n(BLOCK_BYTES / 16, draft_blocks));
    layer_sizes.push(draft_embedding);
    let mut accesses = Vec::new();
    for _ in 0..rounds {
        let draft_passes = 3 + rng.below(3);
        for _ in 0..draft_passes {
            accesses.extend((0..draft_blocks as u32 + 2).map(|i| LayerId(draft_base + i)));
        }
        target.pass(&mut accesses);
    }
    trace("speculative", layer_sizes, accesses)
}

/// Parameters of [`lora_swap`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraParams {
    /// Decode passes in all.
    pub tokens: usize,
    /// Adapters (each with one layer per block).
    pub adapters: usize,
    /// Zipf exponent of adapter popularity across requests.
    pub skew: f64,
    /// Decode passes per request: uniform in `min..=max`.
    pub request_tokens: (usize, usize),
}

impl Default for LoraParams {
    fn default() -> Self {
        LoraParams {
            tokens: 300,
            adapters: 8,
            skew: 1.0,
            request_tokens: (5, 20),
        }
    }
}

/// Decode passes of requests that each use one LoRA adapter (drawn from a
/// Zipf law over `adapters`): per token the embedding, then every block
/// followed by the active adapter's layer for it (1/64 of a block), then the
/// head. Layers: the dense model's, then adapter `a`'s layer for block `i`
/// at `blocks + 2 + a·blocks + i`.
pub fn lora_swap(seed: u64, params: &LoraParams) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let model = DenseModel::sample(&mut rng);
    let adapters = params.adapters.max(1);
    let mut layer_sizes = model.layer_sizes();
    let adapter_base = layer_sizes.len();
    layer_sizes.extend(std::iter::repeat_n(
        BLOCK_BYTES / 64,
        adapters * model.blocks,
    ));
    let weights: Vec<f64> = (0..adapters)
        .map(|rank| 1.0 / ((rank + 1) as f64).powf(params.skew))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut order: Vec<usize> = (0..adapters).collect();
    rng.shuffle(&mut order);
    let (low, high) = params.request_tokens;
    let mut accesses = Vec::new();
    let mut decoded = 0;
    while decoded < params.tokens {
        let mut u = rng.next_f64() * total;
        let mut rank = adapters - 1;
        for (r, w) in weights.iter().enumerate() {
            if u < *w {
                rank = r;
                break;
            }
            u -= w;
        }
        let adapter = order.get(rank).copied().unwrap_or(0);
        let span = high.saturating_sub(low) as u64 + 1;
        let request = (low + rng.below(span) as usize)
            .max(1)
            .min(params.tokens - decoded);
        for _ in 0..request {
            accesses.push(model.embedding());
            for i in 0..model.blocks {
                accesses.push(model.block(i));
                accesses.push(LayerId((adapter_base + adapter * model.blocks + i) as u32));
            }
            accesses.push(model.head());
        }
        decoded += request;
    }
    trace("lora_swap", layer_sizes, accesses)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    #[cfg_attr(
        miri,
        ignore = "generates traces of thousands of requests: minutes under Miri, and the crate has no unsafe code"
    )]
    fn families_are_deterministic_and_in_range() {
        for family in Family::ALL {
            let a = family.trace(7, true);
            let b = family.trace(7, true);
            assert_eq!(a.accesses, b.accesses, "{}", family.name());
            assert_eq!(a.layer_sizes, b.layer_sizes, "{}", family.name());
            assert_eq!(a.name, family.name());
            assert!(!a.accesses.is_empty());
            assert!(
                a.accesses.iter().all(|id| id.index() < a.layer_sizes.len()),
                "{}",
                family.name()
            );
            let c = family.trace(8, true);
            assert!(
                a.accesses != c.accesses || a.layer_sizes != c.layer_sizes,
                "{}: seeds 7 and 8 give the same trace",
                family.name()
            );
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "generates traces of thousands of requests: minutes under Miri, and the crate has no unsafe code"
    )]
    fn dense_decode_touches_embedding_and_head_every_pass() {
        let t = dense_decode(3, 5);
        let layers = t.layer_sizes.len();
        assert_eq!(t.accesses.len(), 5 * layers);
        for pass in t.accesses.chunks(layers) {
            assert_eq!(pass.first(), Some(&LayerId(0)));
            assert_eq!(pass.last(), Some(&LayerId(layers as u32 - 1)));
        }
        let sizes = &t.layer_sizes;
        assert!(sizes[0] >= BLOCK_BYTES && sizes[0] == sizes[layers - 1]);
        assert!(sizes[1..layers - 1].iter().all(|&s| s == BLOCK_BYTES));
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "generates traces of thousands of requests: minutes under Miri, and the crate has no unsafe code"
    )]
    fn moe_routes_top_2_distinct_experts_per_block_with_skew() {
        let params = MoeParams {
            tokens: 400,
            drift_every: 0,
            ..MoeParams::default()
        };
        let t = moe_decode(5, &params);
        let layers = t.layer_sizes.len();
        let blocks = (layers - 2) / 9;
        let per_token = 2 + blocks * 3;
        assert_eq!(t.accesses.len(), 400 * per_token);
        let mut counts = vec![0usize; layers];
        for token in t.accesses.chunks(per_token) {
            for b in 0..blocks {
                let [attention, e1, e2] = [token[1 + 3 * b], token[2 + 3 * b], token[3 + 3 * b]];
                assert_eq!(attention.index(), 1 + 9 * b);
                assert_ne!(e1, e2);
                for e in [e1, e2] {
                    assert!(e.index() > attention.index() && e.index() <= attention.index() + 8);
                    counts[e.index()] += 1;
                }
            }
        }
        // Skewed: in block 0 the most popular expert is used far more than the least.
        let block0 = &counts[2..10];
        let (max, min) = (block0.iter().max().unwrap(), block0.iter().min().unwrap());
        assert!(*max > 3 * *min, "{block0:?}");
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "generates traces of thousands of requests: minutes under Miri, and the crate has no unsafe code"
    )]
    fn early_exit_makes_early_blocks_hotter() {
        let t = early_exit(9, 500);
        let mut counts = vec![0usize; t.layer_sizes.len()];
        for id in &t.accesses {
            counts[id.index()] += 1;
        }
        let blocks = t.layer_sizes.len() - 2;
        assert_eq!(counts[1], 500);
        assert!(counts[blocks] < counts[blocks / 2]);
        assert_eq!(counts[blocks + 1], 500);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "generates traces of thousands of requests: minutes under Miri, and the crate has no unsafe code"
    )]
    fn lora_swap_uses_one_adapter_per_request() {
        let t = lora_swap(4, &LoraParams::default());
        let first_adapter = t
            .layer_sizes
            .iter()
            .position(|&s| s == BLOCK_BYTES / 64)
            .unwrap();
        let used: std::collections::BTreeSet<usize> = t
            .accesses
            .iter()
            .map(|id| id.index())
            .filter(|&i| i >= first_adapter)
            .collect();
        assert!(
            used.len() > 2 * (first_adapter - 2),
            "several adapters are used"
        );
    }
}
