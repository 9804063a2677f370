//! The store's side-by-side benchmarks, run by `cargo xtask bench store`.
//!
//! Every figure is measured beside its baseline in the same run, interleaving the
//! two sides (A B A B …) and quoting medians, because storage bandwidth on shared
//! machines swings from minute to minute. Writes one JSON document to `--out`.
//!
//! Usage: bench_report --out FILE [--quick] [--data DIR]
//!        bench_report --child-stream MODEL --budget BYTES --passes N --compute-us N [--naive] [--cgroup DIR]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tinyai_cache::{AccessKind, Decision, Engine, EngineConfig, LayerId, PolicyKind};
use tinyai_format::fixtures;
use tinyai_store::{Backend, MappedModel, StoreConfig, evict_file_from_page_cache};

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

fn progress(message: &str) {
    eprintln!("[bench store] {message}");
}

fn spin(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

fn storage_read_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("read_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn ensure_fixture(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(format!("{name}-{}MiB.tmai", size / MIB));
    if !path.exists() {
        progress(&format!("writing fixture {}", path.display()));
        fixtures::write_fixture_file(&fixtures::large(size), &path).unwrap();
    }
    path
}

/// Plain sequential `read` of the whole file, cold. Returns seconds.
fn plain_read(path: &Path) -> f64 {
    evict_file_from_page_cache(path).unwrap();
    let start = Instant::now();
    let mut file = File::open(path).unwrap();
    let mut buffer = vec![0u8; 8 << 20];
    let mut sum = 0u64;
    loop {
        let n = file.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        sum = sum.wrapping_add(u64::from(buffer[n - 1]));
    }
    std::hint::black_box(sum);
    start.elapsed().as_secs_f64()
}

/// Block size and requests in flight of the device-limit reader (the
/// parameters issue 13 gives for `fio`: sequential, O_DIRECT, 1 MiB, iodepth 16).
const DEVICE_BLOCK: u64 = 1 << 20;
const DEVICE_DEPTH: u64 = 16;

/// The device's limit on `path`, cold: the whole file in 1 MiB O_DIRECT reads,
/// 16 outstanding at once (16 threads, thread `t` reading blocks `t`, `t + 16`,
/// ...), into aligned buffers, bypassing the page cache. Returns seconds, or
/// `None` where O_DIRECT is refused (then the report says so).
fn device_read(path: &Path) -> Option<f64> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    evict_file_from_page_cache(path).unwrap();
    let length = std::fs::metadata(path).unwrap().len();
    let blocks = length.div_ceil(DEVICE_BLOCK);
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
    };
    open()?;
    let start = Instant::now();
    let ok = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..DEVICE_DEPTH)
            .map(|first| {
                scope.spawn(move || {
                    let Some(file) = open() else { return false };
                    // An aligned 1 MiB window inside an over-allocated buffer.
                    let mut storage = vec![0u8; (DEVICE_BLOCK + 4096) as usize];
                    let skip = storage.as_ptr().align_offset(4096);
                    let buffer = &mut storage[skip..skip + DEVICE_BLOCK as usize];
                    let mut block = first;
                    while block < blocks {
                        if file.read_at(buffer, block * DEVICE_BLOCK).is_err() {
                            return false;
                        }
                        block += DEVICE_DEPTH;
                    }
                    std::hint::black_box(buffer[0]);
                    true
                })
            })
            .collect();
        workers
            .into_iter()
            .all(|worker| worker.join().unwrap_or(false))
    });
    ok.then(|| start.elapsed().as_secs_f64())
}

/// Cold whole-model load through the store. Returns seconds.
fn store_load(path: &Path, backend: Backend, threads: usize) -> f64 {
    evict_file_from_page_cache(path).unwrap();
    let size = std::fs::metadata(path).unwrap().len();
    let start = Instant::now();
    let config = StoreConfig {
        max_cache_size: size * 2,
        backend,
        prefetch_threads: threads,
        prefetch_enabled: threads > 0,
        ..StoreConfig::default()
    };
    let model = MappedModel::open(path, config).unwrap();
    let mut sum = 0u64;
    for guard in model.forward_pass(0..model.layer_count()).unwrap() {
        let guard = guard.unwrap();
        sum = sum.wrapping_add(u64::from(guard.last().copied().unwrap_or(0)));
    }
    std::hint::black_box(sum);
    start.elapsed().as_secs_f64()
}

fn layer_sizes(path: &Path) -> Vec<u64> {
    let model = MappedModel::open(path, StoreConfig::default()).unwrap();
    model.format().layers().map(|l| l.length).collect()
}

/// Bytes Belady misses per steady-state pass of a cyclic forward pass.
fn belady_missed_bytes_per_pass(sizes: &[u64], budget: u64, passes: usize) -> u64 {
    let config = EngineConfig {
        budget_bytes: budget,
        min_layer_charge: 4096,
        page_size: 4096,
        policy: PolicyKind::Belady,
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

#[derive(Clone, Copy, Debug)]
struct StreamSettings {
    budget: u64,
    compute: Duration,
    passes: usize,
    prefetch: bool,
    policy: PolicyKind,
    backend: Backend,
}

/// Forward passes through the store; returns per-pass seconds and bytes read from storage.
fn stream_store(path: &Path, settings: StreamSettings) -> (Vec<f64>, Vec<u64>, u64) {
    evict_file_from_page_cache(path).unwrap();
    let config = StoreConfig {
        max_cache_size: settings.budget,
        prefetch_enabled: settings.prefetch,
        policy: Some(settings.policy),
        backend: settings.backend,
        ..StoreConfig::default()
    };
    let rss_before = rss_bytes();
    let model = MappedModel::open(path, config).unwrap();
    let mut times = Vec::new();
    let mut reads = Vec::new();
    let mut peak_rss = 0;
    let mut sum = 0u64;
    for _ in 0..settings.passes {
        let io = storage_read_bytes();
        let start = Instant::now();
        let layers: Box<dyn Iterator<Item = _>> = if settings.prefetch {
            Box::new(model.forward_pass(0..model.layer_count()).unwrap())
        } else {
            Box::new((0..model.layer_count()).map(|i| model.get(i)))
        };
        for guard in layers {
            let guard = guard.unwrap();
            sum = sum.wrapping_add(
                guard
                    .iter()
                    .step_by(4096)
                    .map(|&b| u64::from(b))
                    .sum::<u64>(),
            );
            spin(settings.compute);
            peak_rss = peak_rss.max(rss_bytes().saturating_sub(rss_before));
        }
        times.push(start.elapsed().as_secs_f64());
        reads.push(storage_read_bytes() - io);
    }
    std::hint::black_box(sum);
    (times, reads, peak_rss)
}

/// The naive baseline: map the file, touch every page of each layer, no management.
fn stream_naive(path: &Path, compute: Duration, passes: usize) -> (Vec<f64>, Vec<u64>, u64) {
    evict_file_from_page_cache(path).unwrap();
    let sizes_and_offsets: Vec<(u64, u64)> = {
        let model = MappedModel::open(path, StoreConfig::default()).unwrap();
        model
            .format()
            .layers()
            .map(|l| (l.offset, l.length))
            .collect()
    };
    let rss_before = rss_bytes();
    let file = File::open(path).unwrap();
    // SAFETY: read-only mapping of a file nobody modifies during the benchmark.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let mut times = Vec::new();
    let mut reads = Vec::new();
    let mut peak_rss = 0;
    let mut sum = 0u64;
    for _ in 0..passes {
        let io = storage_read_bytes();
        let start = Instant::now();
        for &(offset, length) in &sizes_and_offsets {
            let bytes = &map[offset as usize..(offset + length) as usize];
            sum = sum.wrapping_add(
                bytes
                    .iter()
                    .step_by(4096)
                    .map(|&b| u64::from(b))
                    .sum::<u64>(),
            );
            spin(compute);
            peak_rss = peak_rss.max(rss_bytes().saturating_sub(rss_before));
        }
        times.push(start.elapsed().as_secs_f64());
        reads.push(storage_read_bytes() - io);
    }
    std::hint::black_box(sum);
    (times, reads, peak_rss)
}

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

/// The cgroup (v1 memory or v2) directory we may create children in, if any.
fn cgroup_parent() -> Option<(PathBuf, bool)> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            let dir = PathBuf::from("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
            if dir.join("memory.limit_in_bytes").exists() {
                return Some((dir, true));
            }
        }
        if controllers.is_empty() {
            let dir = PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/'));
            if dir.join("memory.max").exists() || dir.join("cgroup.subtree_control").exists() {
                return Some((dir, false));
            }
        }
    }
    None
}

fn make_cgroup(limit: u64) -> Result<PathBuf, String> {
    let (parent, v1) = cgroup_parent().ok_or("no memory cgroup found")?;
    let dir = parent.join(format!("tinyai-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = if v1 {
        "memory.limit_in_bytes"
    } else {
        "memory.max"
    };
    std::fs::write(dir.join(file), limit.to_string())
        .map_err(|e| format!("cannot set {file}: {e}"))?;
    Ok(dir)
}

#[derive(Debug, Default, Clone)]
struct ChildResult {
    seconds_per_pass: f64,
    read_bytes_per_pass: f64,
}

fn run_child(
    model: &Path,
    budget: u64,
    passes: usize,
    compute_us: u64,
    naive: bool,
    cgroup: &Path,
) -> Result<ChildResult, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    evict_file_from_page_cache(model).map_err(|e| e.to_string())?;
    let mut command = Command::new(exe);
    command
        .arg("--child-stream")
        .arg(model)
        .args([
            "--budget",
            &budget.to_string(),
            "--passes",
            &passes.to_string(),
        ])
        .args(["--compute-us", &compute_us.to_string(), "--cgroup"])
        .arg(cgroup);
    if naive {
        command.arg("--naive");
    }
    let output = command.output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "child failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut result = ChildResult::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("seconds_per_pass ") {
            result.seconds_per_pass = v.trim().parse().unwrap_or(f64::NAN);
        }
        if let Some(v) = line.strip_prefix("read_bytes_per_pass ") {
            result.read_bytes_per_pass = v.trim().parse().unwrap_or(f64::NAN);
        }
    }
    Ok(result)
}

fn child_main(args: &[String]) {
    let mut model = None;
    let mut budget = 64 * MIB;
    let mut passes = 3;
    let mut compute_us = 0;
    let mut naive = false;
    let mut cgroup = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--child-stream" => model = it.next().cloned(),
            "--budget" => budget = it.next().unwrap().parse().unwrap(),
            "--passes" => passes = it.next().unwrap().parse().unwrap(),
            "--compute-us" => compute_us = it.next().unwrap().parse().unwrap(),
            "--naive" => naive = true,
            "--cgroup" => cgroup = it.next().cloned(),
            _ => {}
        }
    }
    if let Some(cgroup) = cgroup {
        std::fs::write(
            Path::new(&cgroup).join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .or_else(|_| {
            std::fs::write(
                Path::new(&cgroup).join("tasks"),
                std::process::id().to_string(),
            )
        })
        .unwrap();
    }
    let path = PathBuf::from(model.unwrap());
    let compute = Duration::from_micros(compute_us);
    let (times, reads, _) = if naive {
        stream_naive(&path, compute, passes)
    } else {
        stream_store(
            &path,
            StreamSettings {
                budget,
                compute,
                passes,
                prefetch: true,
                policy: PolicyKind::Adaptive,
                backend: Backend::Mapped,
            },
        )
    };
    println!("seconds_per_pass {}", steady(&times));
    println!("read_bytes_per_pass {}", steady_u64(&reads));
}

fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.6}")
    } else {
        "null".to_owned()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--child-stream") {
        child_main(&args);
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
    let (model_size, budget, reps, passes) = if quick {
        (128 * MIB, 64 * MIB, 3, 3)
    } else {
        (1024 * MIB, 256 * MIB, 5, 4)
    };
    let mut json = Vec::<String>::new();

    // 1. Cold load: ours vs a plain sequential read, interleaved.
    let cold_path = ensure_fixture(&data, "cold", model_size);
    let variants: [(&str, Backend, usize); 5] = [
        ("mapped_prefetch1", Backend::Mapped, 1),
        ("mapped_prefetch2", Backend::Mapped, 2),
        ("mapped_noprefetch", Backend::Mapped, 0),
        ("owned_prefetch1", Backend::Owned { direct_io: false }, 1),
        (
            "owned_direct_prefetch1",
            Backend::Owned { direct_io: true },
            1,
        ),
    ];
    let mut plain = Vec::new();
    let mut device = Vec::new();
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for rep in 0..reps {
        progress(&format!("cold load, round {}/{reps}", rep + 1));
        plain.push(plain_read(&cold_path));
        if let Some(seconds) = device_read(&cold_path) {
            device.push(seconds);
        }
        for (i, &(_, backend, threads)) in variants.iter().enumerate() {
            ours[i].push(store_load(&cold_path, backend, threads));
        }
    }
    let plain_median = median(&mut plain);
    let bandwidth = model_size as f64 / plain_median;
    json.push(format!("\"model_bytes\": {model_size}"));
    json.push(format!(
        "\"plain_read_seconds\": {}",
        json_number(plain_median)
    ));
    json.push(format!(
        "\"plain_read_bandwidth\": {}",
        json_number(bandwidth)
    ));
    // NaN (null in the JSON) where O_DIRECT was refused.
    let device_median = median(&mut device);
    json.push(format!(
        "\"device_read_seconds\": {}",
        json_number(device_median)
    ));
    json.push(format!(
        "\"device_bandwidth\": {}",
        json_number(model_size as f64 / device_median)
    ));
    let mut cold_rows = Vec::new();
    let mut cold_load_ratio = f64::NAN;
    for (i, &(name, _, _)) in variants.iter().enumerate() {
        let seconds = median(&mut ours[i]);
        let ratio = plain_median / seconds;
        if name == "mapped_prefetch1" {
            cold_load_ratio = ratio;
        }
        cold_rows.push(format!(
            "{{\"variant\": \"{name}\", \"seconds\": {}, \"ratio_vs_plain\": {}, \"ratio_vs_device\": {}}}",
            json_number(seconds),
            json_number(ratio),
            json_number(device_median / seconds)
        ));
    }
    json.push(format!(
        "\"cold_load_ratio\": {}",
        json_number(cold_load_ratio)
    ));
    json.push(format!("\"cold_load\": [{}]", cold_rows.join(", ")));

    // 2. Streaming: model 2x the budget, fixed compute per layer.
    let stream_path = ensure_fixture(&data, "stream", 2 * budget);
    let sizes = layer_sizes(&stream_path);
    let layer_count = sizes.len() as u64;
    let missed = belady_missed_bytes_per_pass(&sizes, budget, 4);
    // Pick the compute so that compute and the optimal I/O are of the same order.
    let compute_total = missed as f64 / bandwidth;
    let compute = Duration::from_secs_f64(compute_total / layer_count as f64);
    let bound = compute_total.max(missed as f64 / bandwidth);
    json.push(format!("\"stream_budget\": {budget}"));
    json.push(format!("\"stream_model_bytes\": {}", 2 * budget));
    json.push(format!("\"belady_missed_bytes_per_pass\": {missed}"));
    json.push(format!(
        "\"compute_seconds_per_pass\": {}",
        json_number(compute_total)
    ));
    json.push(format!(
        "\"stream_lower_bound_seconds\": {}",
        json_number(bound)
    ));
    let stream_variants: Vec<(String, StreamSettings)> = [
        (true, PolicyKind::Adaptive),
        (false, PolicyKind::Adaptive),
        (true, PolicyKind::Lru),
        (true, PolicyKind::TinyAiClassic),
    ]
    .into_iter()
    .map(|(prefetch, policy)| {
        (
            format!(
                "{}_{}",
                policy.name(),
                if prefetch { "prefetch" } else { "noprefetch" }
            ),
            StreamSettings {
                budget,
                compute,
                passes,
                prefetch,
                policy,
                backend: Backend::Mapped,
            },
        )
    })
    .collect();
    let stream_reps = if quick { 1 } else { 2 };
    let mut stream_times: Vec<Vec<f64>> = vec![Vec::new(); stream_variants.len() + 1];
    let mut stream_reads: Vec<Vec<f64>> = vec![Vec::new(); stream_variants.len() + 1];
    let mut stream_rss: Vec<u64> = vec![0; stream_variants.len() + 1];
    for rep in 0..stream_reps {
        for (i, (name, settings)) in stream_variants.iter().enumerate() {
            progress(&format!(
                "streaming {name}, round {}/{stream_reps}",
                rep + 1
            ));
            let (times, reads, rss) = stream_store(&stream_path, *settings);
            stream_times[i].push(steady(&times));
            stream_reads[i].push(steady_u64(&reads));
            stream_rss[i] = stream_rss[i].max(rss);
        }
        progress(&format!(
            "streaming naive mmap baseline, round {}/{stream_reps}",
            rep + 1
        ));
        let (times, reads, rss) = stream_naive(&stream_path, compute, passes);
        let last = stream_variants.len();
        stream_times[last].push(steady(&times));
        stream_reads[last].push(steady_u64(&reads));
        stream_rss[last] = stream_rss[last].max(rss);
    }
    let mut stream_rows = Vec::new();
    let mut stream_vs_bound = f64::NAN;
    for (i, name) in stream_variants
        .iter()
        .map(|(n, _)| n.as_str())
        .chain(["naive_mmap"])
        .enumerate()
    {
        let seconds = median(&mut stream_times[i]);
        if name == "adaptive_prefetch" {
            stream_vs_bound = seconds / bound;
        }
        stream_rows.push(format!(
            "{{\"variant\": \"{name}\", \"seconds_per_pass\": {}, \"vs_bound\": {}, \"read_bytes_per_pass\": {}, \"peak_rss_bytes\": {}}}",
            json_number(seconds),
            json_number(seconds / bound),
            json_number(median(&mut stream_reads[i])),
            stream_rss[i]
        ));
    }
    json.push(format!(
        "\"stream_vs_bound\": {}",
        json_number(stream_vs_bound)
    ));
    json.push(format!("\"streaming\": [{}]", stream_rows.join(", ")));

    // Pass time vs budget (for the plot), adaptive with prefetch.
    let mut budget_rows = Vec::new();
    for fraction in [0.25, 0.5, 0.75, 1.0] {
        let b = ((2 * budget) as f64 * fraction) as u64;
        progress(&format!("pass time at budget fraction {fraction}"));
        let missed = belady_missed_bytes_per_pass(&sizes, b, 4);
        let bound_b = compute_total.max(missed as f64 / bandwidth);
        let (times, _, _) = stream_store(
            &stream_path,
            StreamSettings {
                budget: b,
                compute,
                passes: passes.min(3),
                prefetch: true,
                policy: PolicyKind::Adaptive,
                backend: Backend::Mapped,
            },
        );
        budget_rows.push(format!(
            "{{\"budget_fraction\": {fraction}, \"seconds_per_pass\": {}, \"lower_bound_seconds\": {}}}",
            json_number(steady(&times)),
            json_number(bound_b)
        ));
    }
    json.push(format!(
        "\"pass_time_vs_budget\": [{}]",
        budget_rows.join(", ")
    ));

    // 3. Memory: peak RSS while streaming a model 4x the budget.
    let memory_budget = budget / 2;
    progress("peak RSS while streaming a model 4x the budget");
    let (_, _, rss) = stream_store(
        &stream_path,
        StreamSettings {
            budget: memory_budget,
            compute: Duration::ZERO,
            passes: 2,
            prefetch: true,
            policy: PolicyKind::Adaptive,
            backend: Backend::Mapped,
        },
    );
    let (_, _, naive_rss) = stream_naive(&stream_path, Duration::ZERO, 2);
    json.push(format!(
        "\"memory\": {{\"budget\": {memory_budget}, \"model_bytes\": {}, \"peak_rss_bytes\": {rss}, \"naive_peak_rss_bytes\": {naive_rss}}}",
        2 * budget
    ));

    // 4. Constrained memory: a cgroup whose limit is smaller than the model.
    let (cg_model, cg_limit, cg_budget) = if quick {
        (256 * MIB, 160 * MIB, 64 * MIB)
    } else {
        (1024 * MIB, 600 * MIB, 256 * MIB)
    };
    let constrained = match make_cgroup(cg_limit) {
        Err(reason) => {
            progress(&format!("constrained-memory run skipped: {reason}"));
            format!("{{\"skipped\": \"{}\"}}", reason.replace('"', "'"))
        }
        Ok(cgroup) => {
            let path = ensure_fixture(&data, "constrained", cg_model);
            let sizes = layer_sizes(&path);
            let missed = belady_missed_bytes_per_pass(&sizes, cg_budget, 4);
            let compute_us = 200;
            let mut ours = Vec::new();
            let mut naive = Vec::new();
            for rep in 0..if quick { 1 } else { 2 } {
                progress(&format!("constrained-memory run, round {}", rep + 1));
                ours.push(run_child(
                    &path, cg_budget, passes, compute_us, false, &cgroup,
                ));
                naive.push(run_child(
                    &path, cg_budget, passes, compute_us, true, &cgroup,
                ));
            }
            let _ = std::fs::remove_dir(&cgroup);
            let pick = |runs: Vec<Result<ChildResult, String>>| -> Result<(f64, f64), String> {
                let mut secs = Vec::new();
                let mut bytes = Vec::new();
                for run in runs {
                    let run = run?;
                    secs.push(run.seconds_per_pass);
                    bytes.push(run.read_bytes_per_pass);
                }
                Ok((median(&mut secs), median(&mut bytes)))
            };
            match (pick(ours), pick(naive)) {
                (Ok((our_s, our_b)), Ok((naive_s, naive_b))) => format!(
                    "{{\"limit\": {cg_limit}, \"budget\": {cg_budget}, \"model_bytes\": {cg_model}, \"belady_missed_bytes_per_pass\": {missed}, \"seconds_per_pass\": {}, \"read_bytes_per_pass\": {}, \"naive_seconds_per_pass\": {}, \"naive_read_bytes_per_pass\": {}, \"read_vs_belady\": {}}}",
                    json_number(our_s),
                    json_number(our_b),
                    json_number(naive_s),
                    json_number(naive_b),
                    json_number(our_b / missed as f64)
                ),
                (Err(e), _) | (_, Err(e)) => {
                    progress(&format!("constrained-memory run failed: {e}"));
                    format!(
                        "{{\"skipped\": \"{}\"}}",
                        e.replace('"', "'").replace('\n', " ")
                    )
                }
            }
        }
    };
    json.push(format!("\"constrained\": {constrained}"));

    let document = format!("{{\n  {}\n}}\n", json.join(",\n  "));
    let mut file = File::create(&out).unwrap();
    file.write_all(document.as_bytes()).unwrap();
    progress(&format!("wrote {}", out.display()));
    print!("{document}");
}
