//! The store's side-by-side benchmarks, run by `cargo xtask bench store`.
//!
//! Every figure is measured beside its reference in the same run on the same
//! file, interleaving the sides round by round (A B A B …) and quoting the
//! median of the per-round ratios, because storage bandwidth on shared
//! machines swings from minute to minute. The device limit is `fio`
//! (sequential read, O_DIRECT, 1 MiB blocks, iodepth 16) where it is on PATH,
//! else the bench's own O_DIRECT reader with the same parameters. Writes one
//! JSON document to `--out`; its `checks` are issue 13's acceptance figures,
//! each with its goal, and a `skipped` reason where it could not be measured.
//!
//! Usage: bench_report --out FILE [--quick] [--data DIR]
//!        bench_report --child-stream MODEL --side ours|mmap|pread --budget BYTES --passes N [--cgroup DIR]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod baselines;
mod cgroup;
mod device;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tinyai_cache::{AccessKind, Decision, Engine, EngineConfig, LayerId, PolicyKind};
use tinyai_format::fixtures::{self, FixtureSpec};
use tinyai_store::{Backend, MappedModel, StoreConfig, evict_file_from_page_cache};

use crate::baselines::{memory_touch, mmap_touch, plain_read, storage_read_bytes};
use crate::cgroup::{Cgroup, Side, run_child, stream_store};
use crate::device::Device;

const MIB: u64 = 1 << 20;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn med(values: &[f64]) -> f64 {
    let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    median(&mut finite)
}

fn progress(message: &str) {
    eprintln!("[bench store] {message}");
}

fn spin(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

/// Median of the passes after the first (the first is cold).
fn steady(values: &[f64]) -> f64 {
    let mut tail: Vec<f64> = values.iter().skip(1).copied().collect();
    if tail.is_empty() {
        tail = values.to_vec();
    }
    median(&mut tail)
}

fn steady_u64(values: &[u64]) -> f64 {
    steady(&values.iter().map(|&v| v as f64).collect::<Vec<_>>())
}

/// `(offset, length)` of every layer of the model at `path`.
fn layer_spans(path: &Path) -> Result<Vec<(u64, u64)>, String> {
    let model = MappedModel::open(path, StoreConfig::default()).map_err(|e| e.to_string())?;
    Ok(model
        .format()
        .layers()
        .map(|l| (l.offset, l.length))
        .collect())
}

fn ensure_fixture(path: PathBuf, spec: impl FnOnce() -> FixtureSpec) -> PathBuf {
    if !path.exists() {
        progress(&format!("writing fixture {}", path.display()));
        fixtures::write_fixture_file(&spec(), &path).unwrap();
    }
    path
}

/// Bytes Belady misses per steady-state pass of a cyclic forward pass.
fn belady_missed_bytes_per_pass(sizes: &[u64], budget: u64, passes: usize) -> u64 {
    let config = EngineConfig {
        budget_bytes: budget,
        min_layer_charge: 4096,
        page_size: 4096,
        policy: PolicyKind::FurthestNextUse,
    };
    let mut engine = Engine::new(config, sizes).unwrap();
    let n = sizes.len();
    let trace: Vec<LayerId> = (0..passes * n).map(|i| LayerId((i % n) as u32)).collect();
    engine.set_future_trace(trace.clone());
    let mut missed_last_pass = 0;
    for (position, &id) in trace.iter().enumerate() {
        if position % n == 0 {
            missed_last_pass = 0;
        }
        let decision = engine
            .request(id, AccessKind::Demand, position as u64)
            .unwrap();
        if decision != Decision::Hit {
            missed_last_pass += sizes[id.0 as usize];
        }
    }
    missed_last_pass
}

/// A finite number, or JSON null.
fn number(value: f64) -> Value {
    if value.is_finite() {
        json!(value)
    } else {
        Value::Null
    }
}

/// One acceptance figure of issue 13: `ratio` (median of per-round ratios)
/// against `goal` (`op` is `"<="` or `">="`). `ours` and `reference` are in
/// `unit` (`"s"`, `"B"` or `"B/s"`). `skipped` says why it was not measured.
struct Check<'a> {
    measure: &'a str,
    ours: f64,
    reference: f64,
    unit: &'a str,
    ratio: f64,
    op: &'a str,
    goal: f64,
    /// The ratio of every round (its median is `ratio`).
    per_round: Vec<f64>,
}

impl Check<'_> {
    fn json(&self, skipped: Option<&str>) -> Value {
        let met = match (skipped, self.ratio.is_finite()) {
            (None, true) => json!(if self.op == "<=" {
                self.ratio <= self.goal
            } else {
                self.ratio >= self.goal
            }),
            _ => Value::Null,
        };
        json!({
            "measure": self.measure,
            "ours": number(self.ours),
            "reference": number(self.reference),
            "unit": self.unit,
            "ratio": if skipped.is_some() { Value::Null } else { number(self.ratio) },
            "goal_op": self.op,
            "goal": self.goal,
            "met": met,
            "per_round": self.per_round.iter().map(|&r| number(r)).collect::<Vec<_>>(),
            "skipped": skipped,
        })
    }
}

/// Sizes of the run.
struct Plan {
    quick: bool,
    /// Cold-load model and rounds.
    cold_model: u64,
    cold_rounds: usize,
    /// Streaming (overlap) budget, its model is twice as large; rounds, passes.
    budget: u64,
    stream_rounds: usize,
    passes: usize,
    /// Cgroup streaming: limit, layers of 4 MiB, budget, passes, rounds.
    cg_limit: u64,
    cg_layers: u64,
    cg_budget: u64,
    cg_passes: usize,
    cg_rounds: usize,
}

const CG_LAYER: u64 = 4 * MIB;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--child-stream") {
        if let Err(e) = cgroup::child_main(&args) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let out = PathBuf::from(value("--out").unwrap_or_else(|| "target/bench/store.json".into()));
    let data = PathBuf::from(value("--data").unwrap_or_else(|| "target/bench/data".into()));
    std::fs::create_dir_all(&data).unwrap();
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let plan = if quick {
        Plan {
            quick,
            cold_model: 128 * MIB,
            cold_rounds: 3,
            budget: 64 * MIB,
            stream_rounds: 2,
            passes: 3,
            cg_limit: 160 * MIB,
            cg_layers: 64,
            cg_budget: 64 * MIB,
            cg_passes: 3,
            cg_rounds: 3,
        }
    } else {
        Plan {
            quick,
            cold_model: 1024 * MIB,
            // Seven: a cold load's rounds swing with the disk and with what
            // a first touch of fresh memory costs on this VM (0.05-2.8 s
            // per GiB, the memory going back to the host once freed), 0.31-1.29
            // of the device in one run's buffered rounds.
            cold_rounds: 7,
            budget: 256 * MIB,
            // Five rounds: a ratio's rounds swing by a third with the disk
            // (0.75-1.03 in one cgroup run), and the median of five holds
            // better than that of three.
            stream_rounds: 5,
            passes: 4,
            cg_limit: 600 * MIB,
            cg_layers: 256,
            cg_budget: 256 * MIB,
            cg_passes: 4,
            cg_rounds: 7,
        }
    };
    let started = Instant::now();
    let mut doc = serde_json::Map::new();
    let mut checks = Vec::new();

    let cold_path = ensure_fixture(
        data.join(format!("cold-{}MiB.tmai", plan.cold_model / MIB)),
        || fixtures::large(plan.cold_model),
    );
    let device = Device::choose(&cold_path);
    doc.insert(
        "device".into(),
        json!({"tool": device.tool_name(), "note": device.note}),
    );

    // `--only cold|stream|cgroup` runs one section (to study one figure).
    let only = value("--only");
    let run = |section: &str| only.as_deref().is_none_or(|only| only == section);
    if run("cold") {
        cold_load(&plan, &cold_path, &device, &mut doc, &mut checks);
    }
    if run("stream") {
        streaming(&plan, &data, &device, &mut doc, &mut checks);
    }
    if run("cgroup") {
        cgroup_streaming(&plan, &data, &device, &mut doc, &mut checks);
    }

    doc.insert("checks".into(), Value::Array(checks));
    doc.insert("quick".into(), json!(plan.quick));
    doc.insert(
        "seconds_total".into(),
        json!(started.elapsed().as_secs_f64()),
    );
    let document = serde_json::to_string_pretty(&Value::Object(doc)).unwrap();
    std::fs::write(&out, format!("{document}\n")).unwrap();
    progress(&format!(
        "wrote {} ({:.1} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    ));
    println!("{document}");
}

/// Whether `path` can be opened with O_DIRECT.
fn direct_io_allowed(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map(drop)
        .map_err(|e| format!("O_DIRECT refused on this file system ({e})"))
}

/// Cold whole-model load through the store (default config but the
/// backend, budget twice the model). Returns seconds and bytes read from storage.
fn store_load(path: &Path, backend: Backend) -> Result<(f64, u64), String> {
    evict_file_from_page_cache(path).map_err(|e| e.to_string())?;
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    let io = storage_read_bytes();
    let start = Instant::now();
    let config = StoreConfig {
        max_cache_size: size * 2,
        backend,
        ..StoreConfig::default()
    };
    let model = MappedModel::open(path, config).map_err(|e| e.to_string())?;
    let mut sum = 0u64;
    for guard in model
        .forward_pass(0..model.layer_count())
        .map_err(|e| e.to_string())?
    {
        let guard = guard.map_err(|e| e.to_string())?;
        sum = sum.wrapping_add(u64::from(guard.last().copied().unwrap_or(0)));
    }
    std::hint::black_box(sum);
    let seconds = start.elapsed().as_secs_f64();
    Ok((seconds, storage_read_bytes() - io))
}

/// Cold load per backend against the device limit and a plain sequential
/// read, interleaved per round: plain, then for each backend the device and
/// the load, each load after a first touch of model-size memory (measured
/// and reported: the memory an Owned load must fault in; it also gives every
/// backend the same memory state to start from).
fn cold_load(
    plan: &Plan,
    path: &Path,
    device: &Device,
    doc: &mut serde_json::Map<String, Value>,
    checks: &mut Vec<Value>,
) {
    let model_size = std::fs::metadata(path).unwrap().len();
    let direct = direct_io_allowed(path);
    let variants: [(&str, Backend, f64, &str); 3] = [
        (
            "mapped_default",
            Backend::Mapped,
            0.95,
            "default config (Mapped)",
        ),
        (
            "owned_buffered",
            Backend::Owned { direct_io: false },
            0.9,
            "Owned, buffered",
        ),
        (
            "owned_direct",
            Backend::Owned { direct_io: true },
            0.95,
            "Owned, O_DIRECT",
        ),
    ];
    let mut plain = Vec::new();
    let mut touch = Vec::new();
    let mut device_seconds = Vec::new();
    let mut device_error = None;
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut vs_device: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut read_bytes: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut vs_plain: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut errors: Vec<Option<String>> = vec![None; variants.len()];
    for round in 0..plan.cold_rounds {
        progress(&format!(
            "cold load, round {}/{}",
            round + 1,
            plan.cold_rounds
        ));
        let plain_s = plain_read(path).map_or(f64::NAN, |s| s);
        plain.push(plain_s);
        for (i, &(name, backend, _, _)) in variants.iter().enumerate() {
            if name == "owned_direct" && direct.is_err() {
                continue;
            }
            // The device right before each load: every ratio comes from an
            // adjacent pair (the disk's speed drifts within a round).
            let device_s = match device.measure(path) {
                Ok(reading) => reading.seconds,
                Err(e) => {
                    device_error.get_or_insert(e);
                    f64::NAN
                }
            };
            device_seconds.push(device_s);
            touch.push(memory_touch(model_size as usize));
            match store_load(path, backend) {
                Ok((s, bytes)) => {
                    seconds[i].push(s);
                    read_bytes[i].push(bytes as f64);
                    vs_device[i].push(device_s / s);
                    vs_plain[i].push(plain_s / s);
                }
                Err(e) => {
                    errors[i].get_or_insert(e);
                }
            }
        }
    }
    let plain_median = med(&plain);
    let device_median = med(&device_seconds);
    doc.insert("model_bytes".into(), json!(model_size));
    doc.insert("plain_read_seconds".into(), number(plain_median));
    doc.insert(
        "plain_read_bandwidth".into(),
        number(model_size as f64 / plain_median),
    );
    // The first touch of model-size fresh memory, made before every load:
    // what an Owned cold load pays besides reading (see `memory_touch`).
    let touch_median = med(&touch);
    doc.insert("memory_touch_seconds".into(), number(touch_median));
    doc.insert(
        "memory_touch_bandwidth".into(),
        number(model_size as f64 / touch_median),
    );
    doc.insert("device_read_seconds".into(), number(device_median));
    doc.insert(
        "device_bandwidth".into(),
        number(model_size as f64 / device_median),
    );
    let mut rows = Vec::new();
    for (i, &(name, _, goal, label)) in variants.iter().enumerate() {
        let s = med(&seconds[i]);
        let ratio = med(&vs_device[i]);
        let skipped = if name == "owned_direct" {
            direct.as_ref().err().cloned()
        } else {
            None
        }
        .or_else(|| errors[i].clone())
        .or_else(|| device_error.clone().map(|e| format!("device limit: {e}")));
        if name == "mapped_default" {
            doc.insert("cold_load_ratio".into(), number(med(&vs_plain[i])));
        }
        rows.push(json!({
            "variant": name,
            "seconds": number(s),
            "bandwidth": number(model_size as f64 / s),
            "read_bytes": number(med(&read_bytes[i])),
            "ratio_vs_plain": number(med(&vs_plain[i])),
            "ratio_vs_device": number(ratio),
            "goal_vs_device": goal,
            "skipped": skipped,
        }));
        checks.push(
            Check {
                measure: &format!(
                    "cold load of {:.0} MiB, {label}, bandwidth vs the device limit",
                    model_size as f64 / MIB as f64
                ),
                ours: model_size as f64 / s,
                reference: model_size as f64 / device_median,
                unit: "B/s",
                ratio,
                op: ">=",
                goal,
                per_round: vs_device[i].clone(),
            }
            .json(skipped.as_deref()),
        );
    }
    doc.insert("cold_load".into(), Value::Array(rows));
    doc.insert("cold_load_rounds".into(), json!(plan.cold_rounds));
}

/// Streaming a model twice the budget with compute per layer equal to that
/// layer's I/O time at the device bandwidth (the overlap case), interleaved
/// per round with the device measurement on the same file: ours (default
/// config) against max(total compute, bytes ours reads / device bandwidth);
/// other configurations and a naive mmap against the Belady bound; then
/// pass time vs budget (for the plot) and peak RSS.
fn streaming(
    plan: &Plan,
    data: &Path,
    device: &Device,
    doc: &mut serde_json::Map<String, Value>,
    checks: &mut Vec<Value>,
) {
    let model_bytes = 2 * plan.budget;
    let path = ensure_fixture(
        data.join(format!("stream-{}MiB.tmai", model_bytes / MIB)),
        || fixtures::large(model_bytes),
    );
    let spans = layer_spans(&path).unwrap();
    let sizes: Vec<u64> = spans.iter().map(|s| s.1).collect();
    let missed = belady_missed_bytes_per_pass(&sizes, plan.budget, 4);
    let default = StoreConfig {
        max_cache_size: plan.budget,
        ..StoreConfig::default()
    };
    let with_policy = |policy| StoreConfig {
        policy: Some(policy),
        ..default.clone()
    };
    // (name, config, prefetch through forward_pass)
    let variants: Vec<(&str, Option<StoreConfig>, bool)> = vec![
        ("default", Some(default.clone()), true),
        ("default_noprefetch", Some(default.clone()), false),
        ("lru_prefetch", Some(with_policy(PolicyKind::Lru)), true),
        (
            "tinyai_classic_prefetch",
            Some(with_policy(PolicyKind::TinyAiClassic)),
            true,
        ),
        ("naive_mmap", None, true),
    ];
    let n = variants.len();
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut reads: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut vs_belady: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut rss = vec![0u64; n];
    let mut overlap_ratio = Vec::new();
    let mut overlap_bound = Vec::new();
    let mut bandwidths = Vec::new();
    let mut computes = Vec::new();
    let mut skipped = None;
    for round in 0..plan.stream_rounds {
        progress(&format!(
            "overlap streaming, round {}/{}",
            round + 1,
            plan.stream_rounds
        ));
        let bandwidth = match device.measure(&path) {
            Ok(reading) => reading.bandwidth,
            Err(e) => {
                skipped = Some(format!("device limit: {e}"));
                break;
            }
        };
        bandwidths.push(bandwidth);
        let compute: Vec<Duration> = sizes
            .iter()
            .map(|&s| Duration::from_secs_f64(s as f64 / bandwidth))
            .collect();
        let compute_total: f64 = compute.iter().map(Duration::as_secs_f64).sum();
        computes.push(compute_total);
        let belady_bound = compute_total.max(missed as f64 / bandwidth);
        for (i, (name, config, prefetch)) in variants.iter().enumerate() {
            let run = match config {
                Some(config) => {
                    evict_file_from_page_cache(&path).unwrap();
                    stream_store(
                        &path,
                        config.clone(),
                        *prefetch,
                        &compute,
                        plan.passes,
                        false,
                    )
                    .map(|(_, passes)| passes)
                }
                None => {
                    evict_file_from_page_cache(&path).unwrap();
                    mmap_touch(&path, &spans, &compute, plan.passes).map_err(|e| e.to_string())
                }
            };
            let passes = match run {
                Ok(passes) => passes,
                Err(e) => {
                    skipped = Some(format!("{name}: {e}"));
                    continue;
                }
            };
            let s = steady(&passes.seconds);
            let bytes = steady_u64(&passes.read_bytes);
            seconds[i].push(s);
            reads[i].push(bytes);
            vs_belady[i].push(s / belady_bound);
            rss[i] = rss[i].max(passes.peak_rss);
            if *name == "default" {
                let bound = compute_total.max(bytes / bandwidth);
                overlap_bound.push(bound);
                overlap_ratio.push(s / bound);
            }
        }
    }
    let bandwidth = med(&bandwidths);
    let compute_total = med(&computes);
    let bound = compute_total.max(missed as f64 / bandwidth);
    doc.insert("stream_budget".into(), json!(plan.budget));
    doc.insert("stream_model_bytes".into(), json!(model_bytes));
    doc.insert("stream_rounds".into(), json!(plan.stream_rounds));
    doc.insert("stream_device_bandwidth".into(), number(bandwidth));
    doc.insert("belady_missed_bytes_per_pass".into(), json!(missed));
    doc.insert("compute_seconds_per_pass".into(), number(compute_total));
    doc.insert("stream_lower_bound_seconds".into(), number(bound));
    let mut rows = Vec::new();
    for (i, (name, _, _)) in variants.iter().enumerate() {
        rows.push(json!({
            "variant": name,
            "seconds_per_pass": number(med(&seconds[i])),
            "vs_bound": number(med(&vs_belady[i])),
            "read_bytes_per_pass": number(med(&reads[i])),
            "peak_rss_bytes": rss[i],
        }));
    }
    doc.insert("streaming".into(), Value::Array(rows));
    doc.insert("stream_vs_bound".into(), number(med(&vs_belady[0])));
    let ours = med(&seconds[0]);
    doc.insert(
        "overlap".into(),
        json!({
            "seconds_per_pass": number(ours),
            "read_bytes_per_pass": number(med(&reads[0])),
            "bound_seconds": number(med(&overlap_bound)),
            "ratio": number(med(&overlap_ratio)),
            "skipped": skipped,
        }),
    );
    checks.push(
        Check {
            measure: &format!(
                "overlap: pass over a {:.0} MiB model, {:.0} MiB budget, compute per layer = its I/O time \
                 at device bandwidth, vs max(compute, bytes read / device bandwidth)",
                model_bytes as f64 / MIB as f64,
                plan.budget as f64 / MIB as f64
            ),
            ours,
            reference: med(&overlap_bound),
            unit: "s",
            ratio: med(&overlap_ratio),
            op: "<=",
            goal: 1.1,
            per_round: overlap_ratio.clone(),
        }
        .json(skipped.as_deref()),
    );

    // Pass time vs budget (for the plot), default config, the same compute.
    let mut budget_rows = Vec::new();
    if bandwidth.is_finite() {
        let compute: Vec<Duration> = sizes
            .iter()
            .map(|&s| Duration::from_secs_f64(s as f64 / bandwidth))
            .collect();
        for fraction in [0.25, 0.5, 0.75, 1.0] {
            let b = (model_bytes as f64 * fraction) as u64;
            progress(&format!("pass time at budget fraction {fraction}"));
            let missed = belady_missed_bytes_per_pass(&sizes, b, 4);
            let bound_b = compute_total.max(missed as f64 / bandwidth);
            evict_file_from_page_cache(&path).unwrap();
            let config = StoreConfig {
                max_cache_size: b,
                ..StoreConfig::default()
            };
            if let Ok((_, passes)) =
                stream_store(&path, config, true, &compute, plan.passes.min(3), false)
            {
                budget_rows.push(json!({
                    "budget_fraction": fraction,
                    "seconds_per_pass": number(steady(&passes.seconds)),
                    "lower_bound_seconds": number(bound_b),
                }));
            }
        }
    }
    doc.insert("pass_time_vs_budget".into(), Value::Array(budget_rows));

    // Memory: peak RSS while streaming a model 4x the budget.
    let memory_budget = plan.budget / 2;
    progress("peak RSS while streaming a model 4x the budget");
    evict_file_from_page_cache(&path).unwrap();
    let config = StoreConfig {
        max_cache_size: memory_budget,
        ..StoreConfig::default()
    };
    let ours = stream_store(&path, config, true, &[], 2, false).map_or(0, |(_, p)| p.peak_rss);
    evict_file_from_page_cache(&path).unwrap();
    let naive = mmap_touch(&path, &spans, &[], 2).map_or(0, |p| p.peak_rss);
    doc.insert(
        "memory".into(),
        json!({
            "budget": memory_budget,
            "model_bytes": model_bytes,
            "peak_rss_bytes": ours,
            "naive_peak_rss_bytes": naive,
        }),
    );
}

/// Streaming in a memory cgroup smaller than the model: ours, a plain
/// mmap-and-touch loop and a plain 4 MiB `pread` loop, each in its own child
/// process, interleaved per round with the device measurement on the same file.
fn cgroup_streaming(
    plan: &Plan,
    data: &Path,
    device: &Device,
    doc: &mut serde_json::Map<String, Value>,
    checks: &mut Vec<Value>,
) {
    let model_bytes = plan.cg_layers * CG_LAYER;
    let budget = plan.cg_budget;
    let label = format!(
        "{:.0} MiB cgroup, {:.0} MiB model of {} × 4 MiB layers, {:.0} MiB budget, no compute",
        plan.cg_limit as f64 / MIB as f64,
        model_bytes as f64 / MIB as f64,
        plan.cg_layers,
        budget as f64 / MIB as f64
    );
    let result = Cgroup::create(plan.cg_limit).and_then(|cgroup| {
        let path = ensure_fixture(
            data.join(format!("uniform4m-{}x4MiB.tmai", plan.cg_layers)),
            || {
                FixtureSpec::uniform(
                    7,
                    tinyai_format::limits::DEFAULT_ALIGNMENT,
                    &vec![CG_LAYER; plan.cg_layers as usize],
                    1,
                )
            },
        );
        let mut rounds = Vec::new();
        for round in 0..plan.cg_rounds {
            progress(&format!(
                "memory-cgroup streaming, round {}/{}",
                round + 1,
                plan.cg_rounds
            ));
            let reading = device
                .measure(&path)
                .map_err(|e| format!("device limit: {e}"))?;
            // The sides take turns at going first (right after the device
            // reading), so that no side always starts from the same state.
            let mut sides = vec![cgroup::ChildResult::default(); Side::ALL.len()];
            for k in 0..Side::ALL.len() {
                let i = (k + round) % Side::ALL.len();
                sides[i] = run_child(Side::ALL[i], &path, budget, plan.cg_passes, &cgroup.dir)?;
            }
            rounds.push((reading, sides));
        }
        Ok(rounds)
    });
    let (rounds, skipped) = match result {
        Ok(rounds) => (rounds, None),
        Err(reason) => {
            progress(&format!("memory-cgroup streaming: SKIP: {reason}"));
            (Vec::new(), Some(reason))
        }
    };
    let series = |f: &dyn Fn(&device::Reading, &[cgroup::ChildResult]) -> f64| -> Vec<f64> {
        rounds
            .iter()
            .map(|(reading, sides)| f(reading, sides))
            .collect()
    };
    let per_round = |f: &dyn Fn(&device::Reading, &[cgroup::ChildResult]) -> f64| med(&series(f));
    let side_rows: Vec<Value> = Side::ALL
        .iter()
        .enumerate()
        .map(|(i, side)| {
            json!({
                "side": side.name(),
                "seconds_per_pass": number(per_round(&|_, s| s[i].seconds_per_pass)),
                "read_bytes_per_pass": number(per_round(&|_, s| s[i].read_bytes_per_pass)),
            })
        })
        .collect();
    let ours_s = per_round(&|_, s| s[0].seconds_per_pass);
    let ours_b = per_round(&|_, s| s[0].read_bytes_per_pass);
    // The faster loop is the one with the smaller median; each round's ratio
    // is ours against that loop in the same round. (The faster of the two in
    // each round would be the minimum of two noisy draws: a reference biased
    // low by the noise alone. That stricter figure is kept in the JSON.)
    let faster =
        if per_round(&|_, s| s[1].seconds_per_pass) <= per_round(&|_, s| s[2].seconds_per_pass) {
            1
        } else {
            2
        };
    let best_plain = per_round(&|_, s| s[faster].seconds_per_pass);
    let vs_plain = series(&|_, s| s[0].seconds_per_pass / s[faster].seconds_per_pass);
    let vs_round_min = med(&series(&|_, s| {
        s[0].seconds_per_pass / s[1].seconds_per_pass.min(s[2].seconds_per_pass)
    }));
    let io_time = per_round(&|r, s| s[0].read_bytes_per_pass / r.bandwidth);
    let vs_io = series(&|r, s| s[0].seconds_per_pass / (s[0].read_bytes_per_pass / r.bandwidth));
    let minimum = model_bytes.saturating_sub(budget) as f64;
    let vs_minimum = series(&|_, s| s[0].read_bytes_per_pass / minimum);
    let charged = series(&|_, s| s[0].peak_charged as f64 / budget as f64);
    let peak_charged = rounds
        .iter()
        .map(|(_, s)| s[0].peak_charged)
        .max()
        .unwrap_or(0);
    let peak_resident = rounds
        .iter()
        .map(|(_, s)| s[0].peak_resident)
        .max()
        .unwrap_or(0);
    let resident_limit = budget + 16 * MIB;
    doc.insert(
        "cgroup_streaming".into(),
        json!({
            "limit": plan.cg_limit,
            "model_bytes": model_bytes,
            "layer_bytes": CG_LAYER,
            "budget": budget,
            "passes": plan.cg_passes,
            "rounds": rounds.len(),
            "device_bandwidth": number(per_round(&|r, _| r.bandwidth)),
            "sides": side_rows,
            "faster_loop": Side::ALL[faster].name(),
            "ratio_vs_faster_of_each_round": number(vs_round_min),
            "peak_charged_bytes": peak_charged,
            "peak_resident_bytes": peak_resident,
            "skipped": skipped,
        }),
    );
    let skip = skipped.as_deref();
    let list = [
        Check {
            measure: &format!(
                "{label}: seconds per pass vs the faster of plain mmap and plain pread (by median)"
            ),
            ours: ours_s,
            reference: best_plain,
            unit: "s",
            ratio: med(&vs_plain),
            op: "<=",
            goal: 0.8,
            per_round: vs_plain,
        },
        Check {
            measure: &format!("{label}: seconds per pass vs its bytes read / device bandwidth"),
            ours: ours_s,
            reference: io_time,
            unit: "s",
            ratio: med(&vs_io),
            op: "<=",
            goal: 1.1,
            per_round: vs_io,
        },
        Check {
            measure: &format!("{label}: bytes read per pass vs model − budget"),
            ours: ours_b,
            reference: minimum,
            unit: "B",
            ratio: med(&vs_minimum),
            op: "<=",
            goal: 1.05,
            per_round: vs_minimum,
        },
        Check {
            measure: &format!(
                "{label}: peak charged memory (memory_usage, after every layer; max of all rounds) vs budget"
            ),
            ours: peak_charged as f64,
            reference: budget as f64,
            unit: "B",
            ratio: peak_charged as f64 / budget as f64,
            op: "<=",
            goal: 1.0,
            per_round: charged,
        },
        Check {
            measure: &format!(
                "{label}: peak mincore-resident (resident_bytes, after every layer of an extra untimed pass; max of all rounds) vs budget + 16 MiB"
            ),
            ours: peak_resident as f64,
            reference: resident_limit as f64,
            unit: "B",
            ratio: peak_resident as f64 / resident_limit as f64,
            op: "<=",
            goal: 1.0,
            per_round: series(&|_, s| s[0].peak_resident as f64 / resident_limit as f64),
        },
    ];
    checks.extend(list.iter().map(|check| check.json(skip)));
}
