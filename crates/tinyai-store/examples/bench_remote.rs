//! The remote-model benchmark, run by `cargo xtask bench remote` (issue 17).
//!
//! A model is served over HTTP on 127.0.0.1 by the tests' range server
//! (hyper; a ranged GET costs what its range costs), from the page cache:
//! this measures the HTTP pipeline and the store, not a disk. Two sides,
//! interleaved round by round on the same object, medians quoted:
//! - **stream**: `MappedModel::open_url` under a budget of a third of the
//!   model, every layer read once in order (open included, layer checksums
//!   verified, prefetch and lookahead at their defaults);
//! - **one GET**: `object_store`'s HTTP client, one sequential GET of the
//!   whole object, copied into a buffer as it arrives.
//!
//! Then a sweep of `RemoteConfig::concurrency` × `part_size`, streaming as
//! above, the configurations taking turns round by round.
//!
//! Usage: bench_remote --out FILE [--quick] [--data DIR]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/common/range_server.rs"]
mod range_server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

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
    concurrency: &'static [usize],
    part_sizes: &'static [u64],
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
fn stream_pass(url: &str, budget: u64, remote: &RemoteConfig) -> Result<f64, String> {
    let started = Instant::now();
    let config = StoreConfig {
        max_cache_size: budget,
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
            concurrency: &[1, 8],
            part_sizes: &[MIB],
        }
    } else {
        Plan {
            layers: 32,
            layer: 16 * MIB,
            rounds: 7,
            sweep_rounds: 3,
            concurrency: &[1, 2, 4, 8, 16],
            part_sizes: &[MIB, 4 * MIB, 16 * MIB],
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
    let defaults = RemoteConfig::default();

    // Stream vs one GET, interleaved; the sides take turns going first.
    progress(&format!(
        "{} MiB model ({} × {} MiB), budget {} MiB, {} rounds",
        model_bytes / MIB,
        plan.layers,
        plan.layer / MIB,
        budget / MIB,
        plan.rounds
    ));
    let (mut streamed, mut fetched, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let (s, g) = if round % 2 == 0 {
            let s = stream_pass(&url, budget, &defaults)?;
            (
                s,
                one_get(&runtime, store.as_ref(), &path, model_bytes as usize)?,
            )
        } else {
            let g = one_get(&runtime, store.as_ref(), &path, model_bytes as usize)?;
            (stream_pass(&url, budget, &defaults)?, g)
        };
        progress(&format!(
            "round {round}: stream {:.3} s, one GET {:.3} s",
            s, g
        ));
        streamed.push(s);
        fetched.push(g);
        ratios.push(g / s);
    }
    let gbps = |seconds: f64| model_bytes as f64 / seconds / 1e9;
    let stream_median = median(&streamed);
    let get_median = median(&fetched);

    // The sweep: every configuration once per round, in turn.
    let configs: Vec<(usize, u64)> = plan
        .part_sizes
        .iter()
        .flat_map(|&part| plan.concurrency.iter().map(move |&c| (c, part)))
        .collect();
    let mut sweep_seconds = vec![Vec::new(); configs.len()];
    for round in 0..plan.sweep_rounds {
        for (i, &(concurrency, part_size)) in configs.iter().enumerate() {
            let remote = RemoteConfig {
                concurrency,
                part_size,
                ..RemoteConfig::default()
            };
            let seconds = stream_pass(&url, budget, &remote)?;
            sweep_seconds[i].push(seconds);
        }
        progress(&format!("sweep round {round} done"));
    }
    let sweep: Vec<Value> = configs
        .iter()
        .zip(&sweep_seconds)
        .map(|(&(concurrency, part_size), seconds)| {
            let m = median(seconds);
            json!({
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
        "server": "tests/common/range_server.rs (hyper) on 127.0.0.1, 2 threads, file in the page cache",
        "model_bytes": model_bytes,
        "layers": plan.layers,
        "layer_bytes": plan.layer,
        "budget": budget,
        "rounds": plan.rounds,
        "defaults": {
            "concurrency": defaults.concurrency,
            "part_size": defaults.part_size,
        },
        "stream": {"seconds": streamed, "median_s": stream_median, "gbps": gbps(stream_median)},
        "one_get": {"seconds": fetched, "median_s": get_median, "gbps": gbps(get_median)},
        "stream_vs_one_get": {
            "ratios": ratios,
            "median": median(&ratios),
            "meaning": "throughput of streaming ÷ that of one GET, per round (> 1: streaming is faster)",
        },
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
    progress(&format!(
        "stream {:.2} GB/s vs one GET {:.2} GB/s (median ratio {:.2}); wrote {}",
        gbps(stream_median),
        gbps(get_median),
        median(&ratios),
        out.display()
    ));
    Ok(())
}
