//! Streams a model through the store: forward passes with prefetch under a memory
//! budget smaller than the model, then a summary. `cargo xtask demo` runs this on a
//! freshly generated fixture.
//!
//! Usage: stream MODEL [--budget-mib N] [--passes N] [--compute-us N] [--owned] [--policy lru|classic|adaptive] [--no-prefetch]
//! Logs: RUST_LOG=tinyai_store=debug
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tinyai_store::{Backend, MappedModel, PolicyKind, StoreConfig};

fn usage() -> ! {
    eprintln!(
        "usage: stream MODEL [--budget-mib N] [--passes N] [--compute-us N] [--owned] [--policy lru|classic|adaptive] [--no-prefetch]"
    );
    std::process::exit(2)
}

/// Bytes this process has caused to be read from storage (Linux `/proc/self/io`).
fn storage_read_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("read_bytes: "))
        .and_then(|value| value.trim().parse().ok())
}

fn spin(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut budget_mib = 64u64;
    let mut passes = 5u32;
    let mut compute_us = 200u64;
    let mut config = StoreConfig::default();
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--budget-mib" => budget_mib = value().parse().unwrap_or_else(|_| usage()),
            "--passes" => passes = value().parse().unwrap_or_else(|_| usage()),
            "--compute-us" => compute_us = value().parse().unwrap_or_else(|_| usage()),
            "--owned" => config.backend = Backend::Owned { direct_io: false },
            "--no-prefetch" => config.prefetch_enabled = false,
            "--window-mib" => {
                config.streaming_window =
                    Some(value().parse::<u64>().unwrap_or_else(|_| usage()) << 20)
            }
            "--lookahead" => config.lookahead = value().parse().unwrap_or_else(|_| usage()),
            "--threads" => config.prefetch_threads = value().parse().unwrap_or_else(|_| usage()),
            "--policy" => {
                config.policy = Some(match value().as_str() {
                    "lru" => PolicyKind::Lru,
                    "classic" => PolicyKind::TinyAiClassic,
                    "adaptive" => PolicyKind::Adaptive,
                    _ => usage(),
                })
            }
            "-h" | "--help" => usage(),
            other if path.is_none() && !other.starts_with('-') => path = Some(other.to_owned()),
            _ => usage(),
        }
    }
    let path = path.unwrap_or_else(|| usage());
    config.max_cache_size = budget_mib << 20;
    let budget = config.max_cache_size;
    let model = match MappedModel::open(&path, config) {
        Ok(model) => model,
        Err(error) => {
            eprintln!("stream: {error}");
            std::process::exit(1);
        }
    };
    let file_bytes = model.format().file_length();
    println!(
        "model {path}: {} layers, {:.1} MiB; budget {} MiB; backend {:?}; policy {}",
        model.layer_count(),
        file_bytes as f64 / 1048576.0,
        budget_mib,
        model.config().backend,
        model.config().effective_policy().name(),
    );
    let compute = Duration::from_micros(compute_us);
    let io_before = storage_read_bytes();
    let started = Instant::now();
    let mut peak_charged = 0;
    let mut peak_resident = 0;
    let mut checksum = 0u64;
    for pass in 1..=passes {
        let pass_start = Instant::now();
        let before = model.stats();
        let io_pass = storage_read_bytes();
        let mut waiting = Duration::ZERO;
        let mut layers = model.forward_pass(0..model.layer_count()).unwrap();
        loop {
            let wait_start = Instant::now();
            let Some(guard) = layers.next() else { break };
            waiting += wait_start.elapsed();
            let guard = guard.unwrap_or_else(|error| {
                eprintln!("stream: {error}");
                std::process::exit(1);
            });
            // "Use" the weights: read a byte per page and spin for the compute time.
            checksum = guard
                .iter()
                .step_by(4096)
                .fold(checksum, |acc, &b| acc.wrapping_add(u64::from(b)));
            spin(compute);
            peak_charged = peak_charged.max(model.memory_usage());
        }
        peak_resident = peak_resident.max(model.resident_bytes());
        let after = model.stats();
        let read = match (io_pass, storage_read_bytes()) {
            (Some(a), Some(b)) => format!("{:.1} MiB from storage", (b - a) as f64 / 1048576.0),
            _ => "storage reads unknown".to_owned(),
        };
        println!(
            "pass {pass}/{passes}: {:7.1} ms ({:.1} ms waiting for layers, {:.1} ms spent loading), {:.1} MiB loaded, {read}, hit ratio {:.2}",
            pass_start.elapsed().as_secs_f64() * 1e3,
            waiting.as_secs_f64() * 1e3,
            after
                .load_time
                .saturating_sub(before.load_time)
                .as_secs_f64()
                * 1e3,
            (after.bytes_read - before.bytes_read) as f64 / 1048576.0,
            (after.hits - before.hits) as f64
                / ((after.hits + after.misses) - (before.hits + before.misses)).max(1) as f64,
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = model.stats();
    println!("summary:");
    println!(
        "  passes per second      {:.2}",
        f64::from(passes) / elapsed
    );
    println!(
        "  bytes loaded by store  {:.1} MiB",
        stats.bytes_read as f64 / 1048576.0
    );
    if let (Some(a), Some(b)) = (io_before, storage_read_bytes()) {
        println!(
            "  bytes read from disk   {:.1} MiB (/proc/self/io)",
            (b - a) as f64 / 1048576.0
        );
    }
    println!("  hit ratio              {:.3}", stats.hit_ratio());
    println!(
        "  prefetch               {} issued, {} used, {} wasted, {} cancelled",
        stats.prefetch_issued, stats.prefetch_used, stats.prefetch_wasted, stats.prefetch_cancelled
    );
    println!("  evictions              {}", stats.evictions);
    println!(
        "  peak charged memory    {:.1} MiB (budget {} MiB)",
        peak_charged as f64 / 1048576.0,
        budget_mib
    );
    println!(
        "  peak resident (mincore){:.1} MiB (budget {} MiB)",
        peak_resident as f64 / 1048576.0,
        budget_mib
    );
    println!("  (checksum of touched bytes: {checksum:#x})");
    if peak_charged > budget + (model.format().layers().map(|l| l.length).max().unwrap_or(0)) {
        eprintln!("stream: charged memory exceeded the budget by more than one layer");
        std::process::exit(1);
    }
}
