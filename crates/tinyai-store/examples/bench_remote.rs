//! The remote-model benchmark, run by `cargo xtask bench remote` (issue 17).
//!
//! A model is served over HTTP on 127.0.0.1 by the tests' range server
//! (hyper; a ranged GET costs what its range costs), from the page cache:
//! this measures the HTTP pipeline and the store, not a disk. Each GET can be
//! made to wait before answering, as a distant server's time to first byte
//! (0 and 20 ms). Per latency, three sides interleaved round by round on the
//! same object (each round starting with another side), medians quoted:
//! - **stream**: `MappedModel::open_url` under a budget of a third of the
//!   model, every layer read once in order (open included, layer checksums
//!   verified), the store's and the remote client's default configuration;
//! - **stream, 8 prefetch threads**: the same with 8 prefetch threads;
//! - **one GET**: `object_store`'s HTTP client, one sequential GET of the
//!   whole object, copied into memory as it arrives.
//!
//! Then, at the larger latency, sweeps of `RemoteConfig::concurrency` ×
//! `part_size`, and of prefetch threads × streaming window (a remote
//! model's default is half the budget), the configurations taking turns
//! round by round.
//!
//! Usage: bench_remote --out FILE [--quick] [--data DIR]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/common/range_server.rs"]
mod range_server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::ObjectStore;
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use serde_json::{Value, json};
use tinyai_format::fixtures::{self, FixtureSpec};
use tinyai_store::{MappedModel, RemoteConfig, StoreConfig};

use crate::range_server::RangeServer;

const MIB: u64 = 1 << 20;

struct Plan {
    layers: usize,
    layer: u64,
    rounds: usize,
    sweep_rounds: usize,
    /// Each GET's wait before answering, per comparison (the sweeps use the last).
    latencies_ms: &'static [u64],
    concurrency: &'static [usize],
    part_sizes: &'static [u64],
    prefetch_threads: &'static [usize],
}

fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn progress(message: &str) {
    eprintln!("[bench remote] {message}");
}

/// Seconds to open the model at `url` and read every layer once, in order.
fn stream_pass(
    url: &str,
    budget: u64,
    (prefetch_threads, window): (usize, Option<u64>),
    remote: &RemoteConfig,
) -> Result<f64, String> {
    let started = Instant::now();
    let config = StoreConfig {
        max_cache_size: budget,
        prefetch_threads,
        streaming_window: window,
        ..StoreConfig::default()
    };
    let model = MappedModel::open_url_with(url, config, remote).map_err(|e| e.to_string())?;
    if std::env::var_os("BENCH_REMOTE_TRACE").is_some() {
        eprintln!("open {:.3} s", started.elapsed().as_secs_f64());
    }
    let mut sum = 0u64;
    for index in 0..model.layer_count() {
        let layer = model.get(index).map_err(|e| e.to_string())?;
        sum = sum.wrapping_add(u64::from(layer.bytes().last().copied().unwrap_or(0)));
        if model.memory_usage() > budget {
            return Err(format!(
                "{} bytes charged over a budget of {budget}",
                model.memory_usage()
            ));
        }
    }
    if std::env::var_os("BENCH_REMOTE_TRACE").is_some() {
        eprintln!("{:?}", model.stats());
    }
    drop(model);
    std::hint::black_box(sum);
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds for one GET of the whole object (`len` bytes) into memory: a
/// buffer of its own, as the store's loads fill buffers of their own.
fn one_get(
    runtime: &tokio::runtime::Runtime,
    store: &dyn ObjectStore,
    path: &ObjectPath,
    len: usize,
) -> Result<f64, String> {
    let started = Instant::now();
    let mut buffer = vec![0u8; len];
    let filled = runtime.block_on(async {
        let mut stream = store
            .get_opts(path, object_store::GetOptions::default())
            .await
            .map_err(|e| e.to_string())?
            .into_stream();
        let mut filled = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let end = filled + chunk.len();
            buffer
                .get_mut(filled..end)
                .ok_or("the server sent more than the object")?
                .copy_from_slice(&chunk);
            filled = end;
        }
        Ok::<usize, String>(filled)
    })?;
    if filled != len {
        return Err(format!("{filled} of {len} bytes"));
    }
    // Freed inside the timing, as the store's pass frees its buffers at close.
    drop(std::hint::black_box(buffer));
    Ok(started.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let out = PathBuf::from(value("--out").unwrap_or_else(|| "target/bench/remote.json".into()));
    let data = PathBuf::from(value("--data").unwrap_or_else(|| "target/bench/data".into()));
    if let Err(error) = run(quick, &out, &data) {
        eprintln!("bench_remote: {error}");
        std::process::exit(1);
    }
}

fn run(quick: bool, out: &std::path::Path, data: &std::path::Path) -> Result<(), String> {
    let plan = if quick {
        Plan {
            layers: 16,
            layer: 4 * MIB,
            rounds: 2,
            sweep_rounds: 1,
            latencies_ms: &[0, 5],
            concurrency: &[1, 8],
            part_sizes: &[MIB],
            prefetch_threads: &[1, 4],
        }
    } else {
        Plan {
            layers: 32,
            layer: 16 * MIB,
            rounds: 7,
            sweep_rounds: 3,
            latencies_ms: &[0, 20],
            concurrency: &[1, 2, 4, 8, 16],
            part_sizes: &[MIB, 4 * MIB, 16 * MIB],
            prefetch_threads: &[1, 2, 4, 8],
        }
    };
    std::fs::create_dir_all(data).map_err(|e| e.to_string())?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let sizes = vec![plan.layer; plan.layers];
    let spec = FixtureSpec::uniform(17, 4096, &sizes, 4);
    let model_path = data.join(format!(
        "remote-{}x{}MiB.tmai",
        plan.layers,
        plan.layer / MIB
    ));
    if !model_path.exists() {
        progress(&format!("writing {}", model_path.display()));
        fixtures::write_fixture_file(&spec, &model_path).map_err(|e| e.to_string())?;
    }
    // Served from the page cache: read it once.
    let bytes = std::fs::read(&model_path).map_err(|e| e.to_string())?;
    let model_bytes = bytes.len() as u64;
    drop(bytes);
    let budget = model_bytes / 3;

    let server = RangeServer::start(2).map_err(|e| e.to_string())?;
    let url = server.serve("model.tmai", &model_path);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // The HTTP client's TLS provider, as the store installs it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
    let store = {
        let _entered = runtime.enter();
        HttpBuilder::new()
            .with_url(base)
            .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
            .build()
            .map_err(|e| e.to_string())?
    };
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    let path = ObjectPath::from("model.tmai");
    let gbps = |seconds: f64| model_bytes as f64 / seconds / 1e9;
    let defaults = RemoteConfig::default();
    // More prefetch threads (each waits on one layer's GETs; the fetches
    // ahead of queued read-aheads should make them unnecessary).
    let tuned_threads = *plan.prefetch_threads.last().unwrap_or(&1);
    let tuned = (tuned_threads, None);
    progress(&format!(
        "{} MiB model ({} × {} MiB), budget {} MiB, {} rounds",
        model_bytes / MIB,
        plan.layers,
        plan.layer / MIB,
        budget / MIB,
        plan.rounds
    ));

    // Per latency: streaming (default config; `tuned_threads` prefetch
    // threads) vs one GET, interleaved, the sides taking turns going first.
    let mut comparisons = Vec::new();
    for &latency_ms in plan.latencies_ms {
        server.set_latency(Duration::from_millis(latency_ms));
        let mut seconds = [Vec::new(), Vec::new(), Vec::new()];
        let mut ratios = [Vec::new(), Vec::new()];
        for round in 0..plan.rounds {
            let mut this = [0.0f64; 3];
            for k in 0..3 {
                let side = (round + k) % 3;
                this[side] = match side {
                    0 => stream_pass(&url, budget, (1, None), &defaults)?,
                    1 => stream_pass(&url, budget, tuned, &defaults)?,
                    _ => one_get(&runtime, store.as_ref(), &path, model_bytes as usize)?,
                };
            }
            progress(&format!(
                "latency {latency_ms} ms, round {round}: stream {:.3} s, stream ({tuned_threads} prefetch threads) {:.3} s, one GET {:.3} s",
                this[0], this[1], this[2]
            ));
            for side in 0..3 {
                seconds[side].push(this[side]);
            }
            ratios[0].push(this[2] / this[0]);
            ratios[1].push(this[2] / this[1]);
        }
        let side = |values: &Vec<f64>| {
            let m = median(values);
            json!({"seconds": values, "median_s": m, "gbps": gbps(m)})
        };
        comparisons.push(json!({
            "latency_ms": latency_ms,
            "stream": side(&seconds[0]),
            "stream_tuned": side(&seconds[1]),
            "one_get": side(&seconds[2]),
            "stream_vs_one_get": median(&ratios[0]),
            "stream_tuned_vs_one_get": median(&ratios[1]),
        }));
    }

    // The sweeps, at the largest latency: every configuration once per
    // round, in turn.
    let latency_ms = plan.latencies_ms.last().copied().unwrap_or(0);
    server.set_latency(Duration::from_millis(latency_ms));
    // (prefetch threads, window, concurrency, part size): concurrency × part
    // size at the defaults otherwise; then prefetch threads × window.
    type Config = (usize, Option<u64>, usize, u64);
    let mut configs: Vec<Config> = plan
        .part_sizes
        .iter()
        .flat_map(|&part| plan.concurrency.iter().map(move |&c| (1, None, c, part)))
        .collect();
    for window in [None, Some(budget / 4), Some(budget / 8)] {
        configs.extend(
            plan.prefetch_threads
                .iter()
                .map(|&threads| (threads, window, defaults.concurrency, defaults.part_size)),
        );
    }
    let mut sweep_seconds = vec![Vec::new(); configs.len()];
    for round in 0..plan.sweep_rounds {
        for (i, &(threads, window, concurrency, part_size)) in configs.iter().enumerate() {
            let remote = RemoteConfig {
                concurrency,
                part_size,
                ..RemoteConfig::default()
            };
            sweep_seconds[i].push(stream_pass(&url, budget, (threads, window), &remote)?);
        }
        progress(&format!("sweep round {round} done"));
    }
    let sweep: Vec<Value> = configs
        .iter()
        .zip(&sweep_seconds)
        .map(|(&(threads, window, concurrency, part_size), seconds)| {
            let m = median(seconds);
            json!({
                "prefetch_threads": threads,
                "streaming_window": window,
                "concurrency": concurrency,
                "part_size": part_size,
                "seconds": seconds,
                "median_s": m,
                "gbps": gbps(m),
            })
        })
        .collect();

    let doc = json!({
        "quick": quick,
        "server": "tests/common/range_server.rs (hyper) on 127.0.0.1, 2 threads, the file in the page cache; latency: each GET waits that long before answering",
        "model_bytes": model_bytes,
        "layers": plan.layers,
        "layer_bytes": plan.layer,
        "budget": budget,
        "rounds": plan.rounds,
        "defaults": {
            "concurrency": defaults.concurrency,
            "part_size": defaults.part_size,
            "prefetch_threads": StoreConfig::default().prefetch_threads,
        },
        "tuned": {"prefetch_threads": tuned.0, "streaming_window": tuned.1},
        "comparisons": comparisons,
        "sweep_latency_ms": latency_ms,
        "sweep_rounds": plan.sweep_rounds,
        "sweep": sweep,
        "server_gets": server.gets(),
        "server_bytes_sent": server.bytes_sent(),
    });
    std::fs::write(
        out,
        serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    for row in &comparisons {
        progress(&format!(
            "latency {} ms: stream {:.2} GB/s, with {tuned_threads} prefetch threads {:.2} GB/s, one GET {:.2} GB/s",
            row["latency_ms"],
            row["stream"]["gbps"].as_f64().unwrap_or(f64::NAN),
            row["stream_tuned"]["gbps"].as_f64().unwrap_or(f64::NAN),
            row["one_get"]["gbps"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    progress(&format!("wrote {}", out.display()));
    Ok(())
}
