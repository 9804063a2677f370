//! Sentence embeddings with all-MiniLM-L6-v2 streamed through the store
//! under a budget smaller than the model (`cargo xtask embed`).
//!
//! ```text
//! minilm_embed [--budget-mib N] [--batch N] [--json PATH] [SENTENCE ...]
//! ```
//! Default budget: a third of the model. Prints each embedding's first
//! values, the pairwise cosine similarities, time per batch and to the first
//! embedding, the peak charged memory and the peak RSS; `--json` writes the
//! full vectors.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use candle_core::Device;
use tinyai_candle::bert::{self, StreamedBert};

struct Options {
    budget: Option<u64>,
    batch: usize,
    json: Option<String>,
    sentences: Vec<String>,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        budget: None,
        batch: 8,
        json: None,
        sentences: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--budget-mib" => {
                let mib: f64 = value("--budget-mib")?
                    .parse()
                    .map_err(|_| "--budget-mib: not a number")?;
                if !(mib > 0.0 && mib < 1e9) {
                    return Err("--budget-mib must be positive".into());
                }
                options.budget = Some((mib * 1048576.0) as u64);
            }
            "--batch" => {
                options.batch = value("--batch")?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--batch: a positive number")?;
            }
            "--json" => options.json = Some(value("--json")?),
            "-h" | "--help" => {
                println!("minilm_embed [--budget-mib N] [--batch N] [--json PATH] [SENTENCE ...]");
                std::process::exit(0);
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => options.sentences.push(arg),
        }
    }
    if options.sentences.is_empty() {
        options.sentences = common::sentences().into_iter().take(6).collect();
    }
    Ok(options)
}

fn main() {
    if let Err(error) = run() {
        eprintln!("minilm_embed: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse()?;
    let minilm = common::minilm()?;
    let device = Device::Cpu;
    let started = Instant::now();
    let file_size = std::fs::metadata(&minilm.tmai)?.len();
    let budget = options.budget.unwrap_or(file_size / 3);
    let model = minilm.open(budget)?;
    let streamed = StreamedBert::new(&model, minilm.config.clone(), &device)?;
    let tokenizer = minilm.tokenizer();
    let mut first_embedding = None;
    let mut batch_times = Vec::new();
    let mut peak_charged = 0u64;
    let mut embeddings: Vec<Vec<f32>> = Vec::new();
    for group in options.sentences.chunks(options.batch) {
        let texts: Vec<&str> = group.iter().map(String::as_str).collect();
        let batch_started = Instant::now();
        let batch = bert::encode(&tokenizer, &texts, &device)?;
        let states = streamed.forward_inspect(
            &batch.input_ids,
            &batch.token_type_ids,
            &batch.attention_mask,
            |_| peak_charged = peak_charged.max(model.memory_usage()),
        )?;
        let vectors: Vec<Vec<f32>> =
            bert::mean_pool_normalized(&states, &batch.attention_mask)?.to_vec2()?;
        batch_times.push(batch_started.elapsed().as_secs_f64());
        first_embedding.get_or_insert(started.elapsed().as_secs_f64());
        embeddings.extend(vectors);
    }
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    println!(
        "model {} ({:.1} MiB), budget {:.1} MiB, checksums verified on first load",
        std::env::current_dir()
            .ok()
            .and_then(|cwd| minilm.tmai.strip_prefix(cwd).ok())
            .unwrap_or(&minilm.tmai)
            .display(),
        mib(file_size),
        mib(budget)
    );
    println!(
        "embeddings (first 6 of {} values):",
        minilm.config.hidden_size
    );
    for (n, (sentence, vector)) in options.sentences.iter().zip(&embeddings).enumerate() {
        let head: Vec<String> = vector.iter().take(6).map(|v| format!("{v:+.4}")).collect();
        println!("  [{n}] {}  {sentence:?}", head.join(" "));
    }
    println!("cosine similarities:");
    let cosines: Vec<Vec<f32>> = embeddings
        .iter()
        .map(|a| embeddings.iter().map(|b| common::cosine(a, b)).collect())
        .collect();
    print!("      ");
    for n in 0..embeddings.len() {
        print!(" {:>6}", format!("[{n}]"));
    }
    println!();
    for (n, row) in cosines.iter().enumerate() {
        print!("  {:>4}", format!("[{n}]"));
        for value in row {
            print!(" {value:>6.3}");
        }
        println!();
    }
    let mean_batch = batch_times.iter().sum::<f64>() / batch_times.len() as f64;
    let stats = model.stats();
    println!(
        "time per batch {:.1} ms ({} batches of up to {}), to first embedding {:.1} ms (open, tokenizer, first batch)",
        mean_batch * 1e3,
        batch_times.len(),
        options.batch,
        first_embedding.unwrap_or_default() * 1e3
    );
    println!(
        "peak charged {:.1} MiB of {:.1} MiB budget, peak RSS {:.1} MiB; store: {} loads, {} hits, {} evictions, {} checksums verified",
        mib(peak_charged),
        mib(budget),
        mib(common::peak_rss_bytes()),
        stats.misses,
        stats.hits,
        stats.evictions,
        stats.checksums_verified
    );
    if let Some(path) = &options.json {
        let json = serde_json::json!({
            "model": minilm.tmai,
            "budget_bytes": budget,
            "peak_charged_bytes": peak_charged,
            "peak_rss_bytes": common::peak_rss_bytes(),
            "ms_per_batch": mean_batch * 1e3,
            "sentences": options.sentences,
            "embeddings": embeddings,
            "cosine": cosines,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
        println!("wrote {path}");
    }
    Ok(())
}
