//! `cargo xtask bench candle`: all-MiniLM-L6-v2 sentence embeddings, three
//! ways, interleaved A B C in each round, each in its own process (so peak
//! RSS is its own):
//! - `reference`: candle-transformers' `BertModel` with every weight in
//!   memory, from the original safetensors (memory-mapped, as candle's
//!   examples load it);
//! - `cached`: ours, budget ≥ the model (everything stays cached);
//! - `third`: ours at a third of the model.
//!
//! Reports, per variant, medians over rounds of sentences per second (steady
//! state: the batches after the first), time to first embedding (from
//! process start of the work: open, tokenizer, first batch) and peak RSS.
//!
//! ```text
//! bench_candle --out PATH [--quick]            # parent: runs the rounds
//! bench_candle --variant NAME --sentences N    # one measurement, one JSON line
//! ```
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;
use serde_json::{Value, json};
use tinyai_candle::bert::{self, StreamedBert};

const VARIANTS: [&str; 3] = ["reference", "cached", "third"];
const BATCH: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let result = match value("--variant") {
        Some(variant) => {
            let sentences = value("--sentences")
                .and_then(|n| n.parse().ok())
                .unwrap_or(64);
            measure(&variant, sentences).map(|line| println!("{line}"))
        }
        None => parent(value("--out"), args.iter().any(|a| a == "--quick")),
    };
    if let Err(error) = result {
        eprintln!("bench_candle: {error}");
        std::process::exit(1);
    }
}

fn parent(out: Option<String>, quick: bool) -> Result<(), Box<dyn std::error::Error>> {
    let out = out.ok_or("--out PATH is required")?;
    // Fetch and convert once, before timing anything.
    let minilm = common::minilm()?;
    let (rounds, sentences) = if quick { (1, 16) } else { (5, 64) };
    let exe = std::env::current_exe()?;
    let mut samples: Vec<Vec<Value>> = vec![Vec::new(); VARIANTS.len()];
    for round in 0..rounds {
        for (slot, variant) in VARIANTS.iter().enumerate() {
            let output = Command::new(&exe)
                .args(["--variant", variant, "--sentences", &sentences.to_string()])
                .output()?;
            if !output.status.success() {
                return Err(format!(
                    "{variant} failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
                .into());
            }
            let line: Value = serde_json::from_slice(&output.stdout)?;
            eprintln!("[bench candle] round {round} {line}");
            samples[slot].push(line);
        }
    }
    let median = |values: &[Value], key: &str| -> f64 {
        let mut v: Vec<f64> = values.iter().filter_map(|s| s[key].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let variants: Vec<Value> = VARIANTS
        .iter()
        .zip(&samples)
        .map(|(name, runs)| {
            json!({
                "variant": name,
                "sentences_per_s": median(runs, "sentences_per_s"),
                "ttfe_ms": median(runs, "ttfe_ms"),
                "peak_rss_bytes": median(runs, "peak_rss_bytes"),
                "budget_bytes": runs.first().map_or(Value::Null, |r| r["budget_bytes"].clone()),
                "runs": runs,
            })
        })
        .collect();
    let report = json!({
        "model": minilm.tmai,
        "model_bytes": std::fs::metadata(&minilm.tmai)?.len(),
        "rounds": rounds,
        "sentences": sentences,
        "batch": BATCH,
        "profile": if cfg!(debug_assertions) { "dev (candle at opt-level 3, store unoptimised)" } else { "release" },
        "variants": variants,
    });
    std::fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
    Ok(())
}

/// One variant, in this process: returns its JSON line.
fn measure(variant: &str, count: usize) -> Result<Value, Box<dyn std::error::Error>> {
    let minilm = common::minilm()?;
    let device = Device::Cpu;
    let all = common::sentences();
    let sentences: Vec<&str> = all.iter().cycle().take(count).map(String::as_str).collect();
    let started = Instant::now();
    let file_size = std::fs::metadata(&minilm.tmai)?.len();
    let budget = match variant {
        "reference" => None,
        "cached" => Some(file_size),
        "third" => Some(file_size / 3),
        other => return Err(format!("unknown variant {other:?}").into()),
    };
    let tokenizer = minilm.tokenizer();
    let (ttfe, sentences_per_s) = match budget {
        None => {
            // SAFETY: the model file is not modified while this process runs
            // (the bench owns target/models); candle's examples load models this way.
            let vb = unsafe {
                VarBuilder::from_mmaped_safetensors(&[&minilm.safetensors], DType::F32, &device)?
            };
            let reference = BertModel::load(vb, &minilm.config)?;
            run_batches(&sentences, &tokenizer, started, &mut |batch| {
                common::reference_embeddings(&reference, batch)
            })?
        }
        Some(budget) => {
            let store = minilm.open(budget)?;
            let streamed = StreamedBert::new(&store, minilm.config.clone(), &device)?;
            run_batches(&sentences, &tokenizer, started, &mut |batch| {
                let states = streamed.forward(
                    &batch.input_ids,
                    &batch.token_type_ids,
                    &batch.attention_mask,
                )?;
                bert::mean_pool_normalized(&states, &batch.attention_mask)
            })?
        }
    };
    Ok(json!({
        "variant": variant,
        "budget_bytes": budget,
        "ttfe_ms": ttfe * 1e3,
        "sentences_per_s": sentences_per_s,
        "peak_rss_bytes": common::peak_rss_bytes(),
    }))
}

/// Embeds `sentences` in batches; returns (seconds from `started` to the
/// first embedding, sentences per second over the later batches).
fn run_batches(
    sentences: &[&str],
    tokenizer: &tokenizers::Tokenizer,
    started: Instant,
    embed: &mut dyn FnMut(&bert::Batch) -> candle_core::Result<Tensor>,
) -> candle_core::Result<(f64, f64)> {
    let device = Device::Cpu;
    let mut ttfe = None;
    let mut steady = (0usize, 0f64);
    for group in sentences.chunks(BATCH) {
        let batch_started = Instant::now();
        let batch = bert::encode(tokenizer, group, &device)?;
        let _: Vec<Vec<f32>> = embed(&batch)?.to_vec2()?;
        if ttfe.is_none() {
            ttfe = Some(started.elapsed().as_secs_f64());
        } else {
            steady.0 += group.len();
            steady.1 += batch_started.elapsed().as_secs_f64();
        }
    }
    let rate = if steady.1 > 0.0 {
        steady.0 as f64 / steady.1
    } else {
        f64::NAN
    };
    Ok((ttfe.unwrap_or_default(), rate))
}
