//! Streaming in a memory cgroup: each side runs in its own child process that
//! joins a cgroup whose limit is smaller than the model, and reports seconds
//! and `/proc/self/io` bytes per steady-state pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tinyai_store::{Backend, MappedModel, StoreConfig, evict_file_from_page_cache};

use crate::baselines::{Passes, mmap_touch, pread_loop, rss_bytes, storage_read_bytes};
use crate::{layer_spans, spin, steady, steady_u64};

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

/// A memory cgroup with `limit` bytes, removed on drop.
pub struct Cgroup {
    pub dir: PathBuf,
}

impl Cgroup {
    pub fn create(limit: u64) -> Result<Cgroup, String> {
        let (parent, v1) = cgroup_parent().ok_or("no memory cgroup found")?;
        let dir = parent.join(format!("tinyai-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let file = if v1 {
            "memory.limit_in_bytes"
        } else {
            "memory.max"
        };
        if let Err(e) = std::fs::write(dir.join(file), limit.to_string()) {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!("cannot set {file}: {e}"));
        }
        Ok(Cgroup { dir })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The three sides of the cgroup streaming comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `MappedModel`, default config but the budget, `forward_pass`.
    Ours,
    /// The same with the owned backend, buffered reads.
    OursOwned,
    /// The same with the owned backend, `O_DIRECT`.
    OursDirect,
    /// A plain mmap-and-touch loop.
    Mmap,
    /// A plain 4 MiB `pread` loop.
    Pread,
}

impl Side {
    pub const ALL: [Side; 3] = [Side::Ours, Side::Mmap, Side::Pread];

    pub fn name(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::OursOwned => "ours-owned",
            Side::OursDirect => "ours-direct",
            Side::Mmap => "mmap",
            Side::Pread => "pread",
        }
    }

    fn parse(name: &str) -> Option<Side> {
        [Side::OursOwned, Side::OursDirect]
            .into_iter()
            .chain(Side::ALL)
            .find(|s| s.name() == name)
    }
}

/// What a child reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChildResult {
    /// Median of the passes after the first.
    pub seconds_per_pass: f64,
    /// Median of the passes after the first.
    pub read_bytes_per_pass: f64,
    /// Ours only: peak `memory_usage()` (charged), sampled after every layer.
    pub peak_charged: u64,
    /// Ours only: peak `resident_bytes()` (mincore), sampled after every layer
    /// of one extra, untimed pass.
    pub peak_resident: u64,
}

/// Runs one side in a child process inside `cgroup`, the page cache of
/// `model` dropped first.
pub fn run_child(
    side: Side,
    model: &Path,
    budget: u64,
    passes: usize,
    cgroup: &Path,
) -> Result<ChildResult, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    evict_file_from_page_cache(model).map_err(|e| e.to_string())?;
    let output = Command::new(exe)
        .arg("--child-stream")
        .arg(model)
        .args(["--side", side.name()])
        .args(["--budget", &budget.to_string()])
        .args(["--passes", &passes.to_string()])
        .arg("--cgroup")
        .arg(cgroup)
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "{} child failed ({}): {}",
            side.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut result = ChildResult::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let value = value.trim();
        match key {
            "seconds_per_pass" => result.seconds_per_pass = value.parse().unwrap_or(f64::NAN),
            "read_bytes_per_pass" => {
                result.read_bytes_per_pass = value.parse().unwrap_or(f64::NAN);
            }
            "peak_charged" => result.peak_charged = value.parse().unwrap_or(0),
            "peak_resident" => result.peak_resident = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    if !result.seconds_per_pass.is_finite() || result.seconds_per_pass <= 0.0 {
        return Err(format!("{} child reported no pass time", side.name()));
    }
    Ok(result)
}

/// The child's side of [`run_child`]: joins the cgroup, runs, prints.
pub fn child_main(args: &[String]) -> Result<(), String> {
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .ok_or(format!("missing {name}"))
    };
    let path = PathBuf::from(value("--child-stream")?);
    let side = Side::parse(&value("--side")?).ok_or("unknown --side")?;
    let budget: u64 = value("--budget")?.parse().map_err(|_| "bad --budget")?;
    let passes: usize = value("--passes")?.parse().map_err(|_| "bad --passes")?;
    if let Ok(cgroup) = value("--cgroup") {
        let pid = std::process::id().to_string();
        std::fs::write(Path::new(&cgroup).join("cgroup.procs"), &pid)
            .or_else(|_| std::fs::write(Path::new(&cgroup).join("tasks"), &pid))
            .map_err(|e| format!("joining the cgroup {cgroup}: {e}"))?;
    }
    let result = match side {
        Side::Ours | Side::OursOwned | Side::OursDirect => {
            let backend = match side {
                Side::OursOwned => Backend::Owned { direct_io: false },
                Side::OursDirect => Backend::Owned { direct_io: true },
                _ => Backend::default(),
            };
            let mut config = StoreConfig {
                max_cache_size: budget,
                backend,
                ..StoreConfig::default()
            };
            // Knobs for studying one side by hand (the bench sets none).
            if let Ok(threads) = value("--prefetch-threads") {
                config.prefetch_threads = threads.parse().map_err(|_| "bad --prefetch-threads")?;
            }
            if let Ok(window) = value("--streaming-window") {
                config.streaming_window =
                    Some(window.parse().map_err(|_| "bad --streaming-window")?);
            }
            if let Ok(lookahead) = value("--lookahead") {
                config.lookahead = lookahead.parse().map_err(|_| "bad --lookahead")?;
            }
            stream_store(&path, config, true, &[], passes, true)?.0
        }
        Side::Mmap | Side::Pread => {
            let spans = layer_spans(&path)?;
            let run = if side == Side::Mmap {
                mmap_touch(&path, &spans, &[], passes)
            } else {
                pread_loop(&path, &spans, &[], passes)
            };
            let Passes {
                seconds,
                read_bytes,
                ..
            } = run.map_err(|e| e.to_string())?;
            ChildResult {
                seconds_per_pass: steady(&seconds),
                read_bytes_per_pass: steady_u64(&read_bytes),
                ..ChildResult::default()
            }
        }
    };
    println!("seconds_per_pass {}", result.seconds_per_pass);
    println!("read_bytes_per_pass {}", result.read_bytes_per_pass);
    println!("peak_charged {}", result.peak_charged);
    println!("peak_resident {}", result.peak_resident);
    Ok(())
}

/// The store streaming `passes` timed forward passes over `path` with
/// `config` (through `forward_pass`, or plain `get`s when `prefetch` is
/// false), one byte of every page touched, `compute[layer]` (if any) after
/// each layer. After every layer (guard still held) it samples
/// `memory_usage()` and VmRSS (cheap; inside the timed pass, as the baselines
/// sample VmRSS inside theirs). With `resident_pass`, one more forward pass
/// follows, untimed and uncounted, that also samples `resident_bytes()`
/// (`mincore` over the whole mapping: too slow to sit inside a timed pass,
/// and taking its time out of the pass would credit us with the I/O the
/// prefetch threads do meanwhile).
pub fn stream_store(
    path: &Path,
    config: StoreConfig,
    prefetch: bool,
    compute: &[Duration],
    passes: usize,
    resident_pass: bool,
) -> Result<(ChildResult, Passes), String> {
    let rss_before = rss_bytes();
    let model = MappedModel::open(path, config).map_err(|e| e.to_string())?;
    let mut out = Passes::default();
    let mut result = ChildResult::default();
    let mut sum = 0u64;
    for pass in 0..passes + usize::from(resident_pass) {
        let timed = pass < passes;
        let io = storage_read_bytes();
        let start = Instant::now();
        let layers: Box<dyn Iterator<Item = _>> = if prefetch {
            Box::new(
                model
                    .forward_pass(0..model.layer_count())
                    .map_err(|e| e.to_string())?,
            )
        } else {
            Box::new((0..model.layer_count()).map(|i| model.get(i)))
        };
        for (layer, guard) in layers.enumerate() {
            let guard = guard.map_err(|e| e.to_string())?;
            sum = sum.wrapping_add(
                guard
                    .iter()
                    .step_by(4096)
                    .map(|&b| u64::from(b))
                    .sum::<u64>(),
            );
            spin(compute.get(layer).copied().unwrap_or_default());
            result.peak_charged = result.peak_charged.max(model.memory_usage());
            out.peak_rss = out.peak_rss.max(rss_bytes().saturating_sub(rss_before));
            if !timed {
                result.peak_resident = result.peak_resident.max(model.resident_bytes());
            }
        }
        if timed {
            out.seconds.push(start.elapsed().as_secs_f64());
            out.read_bytes.push(storage_read_bytes() - io);
        }
    }
    std::hint::black_box(sum);
    result.seconds_per_pass = steady(&out.seconds);
    result.read_bytes_per_pass = steady_u64(&out.read_bytes);
    Ok((result, out))
}
