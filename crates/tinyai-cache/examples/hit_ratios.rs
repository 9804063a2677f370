//! Hit ratios of every policy (and two real peers) on the standard traces.
//!
//! ```text
//! cargo run --release -p tinyai-cache --example hit_ratios -- [--quick] [--seed N] [--peer-seed N] [--bound [--bound-segment N]] --out target/bench/cache.json
//! ```
//!
//! Prints a table and writes a JSON list of
//! `{"trace", "policy", "budget_fraction", "hit_ratio", "byte_hit_ratio"}`,
//! then the acceptance goals of the cache issue: on every trace and budget,
//! adaptive ≥ best of (lru, moka, quick_cache) − 0.02 in hit ratio and in
//! byte hit ratio, and on `forward_passes` at 0.5 adaptive's byte hit ratio
//! ≥ 0.9 × Belady's. A third goal is the store-core issue's: feeding hits to
//! adaptive through lossy read buffers as the store does, with the lock busy
//! for 90% of the drain attempts (`adaptive_lossy`), moves neither ratio by
//! more than 0.01 on any cell. `--check` exits with status 1 when a goal is
//! missed. (The `belady` of that goal is the engine's size-oblivious
//! furthest-next-use rule, not an optimum; the goal is kept unchanged.)
//!
//! Size-aware references (issue 18, see `tinyai_cache::offline`), with
//! `--bound` only (they take minutes even with `--quick`, so `cargo xtask
//! bench` leaves them out): the `upper_bound` column is an upper bound on the byte hit ratio of any policy
//! (the exact LP optimum on traces up to `offline::EXACT_REQUESTS` requests,
//! the segmented relaxation, higher but still valid, beyond, in segments of
//! `--bound-segment N` requests, default `offline::SEGMENT_REQUESTS`: longer
//! is tighter and slower); `flow_schedule`
//! is a feasible offline schedule replayed as a real cache under the budget.
//! The report prints the lowest adaptive / upper bound over all cells (not a
//! goal yet) and the cells where the size-oblivious Belady beats the
//! feasible size-aware schedule. JSON rows of `upper_bound` have a null
//! `hit_ratio`.
//! Peers: `moka` (sync cache, W-TinyLFU, weigher = charge) and `quick_cache`
//! (unsync cache, weighter = charge), fed the same traces and budgets. Both
//! get a hasher with a fixed seed ([`PeerHasher`], `--peer-seed N`, default
//! 0): with their default randomly seeded hashers their hit ratios move by up
//! to ±0.02 from run to run (moka's frequency sketch and quick_cache's ghost
//! set depend on the hash), which would make the report unrepeatable. Run
//! several `--peer-seed`s to see the peers' spread. `arc` and `s3_fifo` are
//! the engine's byte-sized ARC and S3-FIFO peers ([`PolicyKind::Arc`],
//! [`PolicyKind::S3Fifo`]), reported beside the others (the goals above
//! predate them and leave them out; the `workloads` example's goals include
//! them).

use std::path::PathBuf;
use std::process::ExitCode;

use tinyai_cache::offline::{self, OfflineBound};
#[path = "common/peers.rs"]
mod peers;

use peers::PeerHasher;
use tinyai_cache::sim::{self, CacheModel, SimResult, Trace};
use tinyai_cache::{LayerId, PolicyKind};

/// The policies replayed on every cell. `furthest_next_use` is the engine's
/// [`PolicyKind::FurthestNextUse`]: Belady's rule, size-oblivious (not an
/// optimum when sizes differ; it was called `belady` before).
/// `flow_schedule` is the feasible size-aware offline schedule of
/// [`offline`] (a real cache under the budget); the `upper_bound` column
/// (byte hit ratio only) is the bound no policy can exceed.
const POLICIES: [&str; 10] = [
    "lru",
    "tinyai_classic",
    "adaptive",
    "furthest_next_use",
    "arc",
    "s3_fifo",
    "moka",
    "quick_cache",
    "adaptive_lossy",
    "flow_schedule",
];

/// Entries of one read buffer stripe in the store (`tinyai-store`'s `hits::RING`).
const RING: usize = 64;

/// Adaptive fed the way the store feeds it (`tinyai-store`'s read buffers): a
/// hit of a resident layer is appended to a ring of [`RING`] entries (the
/// oldest is overwritten when it is full); once half a ring waits, each hit
/// tries to take the lock and drain, which here fails `busy_percent` % of the
/// time (another thread holds the lock: a load, a decision); a miss always
/// drains before its decision.
struct LossyAdaptive {
    engine: tinyai_cache::Engine,
    pending: std::collections::VecDeque<u32>,
    busy_percent: u64,
    random: sim::SplitMix64,
}

impl LossyAdaptive {
    fn drain(&mut self, position: u64) {
        for hit in self.pending.drain(..) {
            self.engine.record_hit(LayerId(hit), position);
        }
    }
}

impl CacheModel for LossyAdaptive {
    fn access(&mut self, id: LayerId, position: u64) -> bool {
        if self.engine.is_resident(id) {
            if self.pending.len() == RING {
                self.pending.pop_front();
            }
            self.pending.push_back(id.0);
            if self.pending.len() >= RING / 2 && self.random.below(100) >= self.busy_percent {
                self.drain(position);
            }
            return true;
        }
        self.drain(position);
        let _ = self
            .engine
            .request(id, tinyai_cache::AccessKind::Demand, position);
        false
    }
}

fn run(
    trace: &Trace,
    policy: &str,
    fraction: f64,
    hasher: PeerHasher,
    bound: Option<&OfflineBound>,
) -> Result<SimResult, String> {
    if policy == "flow_schedule" {
        let bound = bound.ok_or("flow_schedule needs --bound")?;
        let config = trace.config(PolicyKind::Lru, fraction);
        let mut schedule = bound.schedule(trace, &config);
        let result = sim::simulate(trace, &mut schedule);
        if schedule.overflows() > 0 {
            return Err(format!(
                "{}@{fraction}: the offline schedule exceeded the budget",
                trace.name
            ));
        }
        return Ok(result);
    }
    let kind = match policy {
        "lru" => Some(PolicyKind::Lru),
        "tinyai_classic" => Some(PolicyKind::TinyAiClassic),
        "adaptive" => Some(PolicyKind::Adaptive),
        "furthest_next_use" => Some(PolicyKind::FurthestNextUse),
        "arc" => Some(PolicyKind::Arc),
        "s3_fifo" => Some(PolicyKind::S3Fifo),
        _ => None,
    };
    if let Some(kind) = kind {
        return sim::simulate_policy(trace, kind, fraction).map_err(|e| e.to_string());
    }
    if policy == "adaptive_lossy" {
        let engine = trace
            .engine(PolicyKind::Adaptive, fraction)
            .map_err(|e| e.to_string())?;
        let mut model = LossyAdaptive {
            engine,
            pending: std::collections::VecDeque::with_capacity(RING),
            busy_percent: 90,
            random: sim::SplitMix64::new(fraction.to_bits()),
        };
        return Ok(sim::simulate(trace, &mut model));
    }
    peers::run_peer(trace, policy, fraction, hasher).ok_or(format!("unknown policy {policy}"))
}

struct Args {
    quick: bool,
    /// Compute the size-aware bound and the offline schedule (slow).
    bound: bool,
    seed: u64,
    peer_seed: u64,
    check: bool,
    out: Option<PathBuf>,
    /// Segment length of the upper bound on traces longer than
    /// `offline::EXACT_REQUESTS` (longer: tighter and slower).
    bound_segment: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        bound: false,
        seed: 42,
        peer_seed: 0,
        check: false,
        out: None,
        bound_segment: offline::SEGMENT_REQUESTS,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--bound" => args.bound = true,
            "--check" => args.check = true,
            "--out" => args.out = Some(it.next().ok_or("--out needs a path")?.into()),
            "--seed" => {
                args.seed = it
                    .next()
                    .ok_or("--seed needs a number")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?;
            }
            "--peer-seed" => {
                args.peer_seed = it
                    .next()
                    .ok_or("--peer-seed needs a number")?
                    .parse()
                    .map_err(|e| format!("--peer-seed: {e}"))?;
            }
            "--bound-segment" => {
                args.bound_segment = it
                    .next()
                    .ok_or("--bound-segment needs a number")?
                    .parse()
                    .map_err(|e| format!("--bound-segment: {e}"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hit_ratios: {message}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<(), String> {
    let args = parse_args()?;
    let traces = sim::standard_traces(args.seed, args.quick);
    let mut rows = Vec::new();
    println!(
        "{:<17} {:>6}  {}{:>15}",
        "trace",
        "budget",
        POLICIES
            .iter()
            .map(|p| format!("{p:>15}"))
            .collect::<String>(),
        "upper_bound"
    );
    println!(
        "{:<17} {:>6}  (each cell: hit ratio / byte hit ratio)",
        "", ""
    );
    let mut goals = Goals::default();
    for trace in &traces {
        for &fraction in &sim::BUDGET_FRACTIONS {
            let mut line = format!("{:<17} {:>6.2}  ", trace.name, fraction);
            let mut cell = Cell::default();
            let config = trace.config(PolicyKind::Lru, fraction);
            let bound = if !args.bound {
                None
            } else if trace.accesses.len() <= offline::EXACT_REQUESTS {
                Some(offline::solve(trace, &config))
            } else {
                Some(offline::solve_in_segments(
                    trace,
                    &config,
                    args.bound_segment,
                ))
            };
            for policy in POLICIES {
                if policy == "flow_schedule" && bound.is_none() {
                    line.push_str(&format!("    {:>11}", "-"));
                    continue;
                }
                let hasher = PeerHasher {
                    seed: args.peer_seed,
                };
                let result = run(trace, policy, fraction, hasher, bound.as_ref())?;
                cell.record(policy, &result);
                line.push_str(&format!(
                    "    {:.3}/{:.3}",
                    result.hit_ratio(),
                    result.byte_hit_ratio()
                ));
                rows.push(serde_json::json!({
                    "trace": trace.name,
                    "policy": policy,
                    "budget_fraction": fraction,
                    "hit_ratio": result.hit_ratio(),
                    "byte_hit_ratio": result.byte_hit_ratio(),
                }));
            }
            if let Some(bound) = &bound {
                cell.upper_bound = bound.byte_hit_ratio();
                line.push_str(&format!("        -/{:.3}", cell.upper_bound));
                rows.push(serde_json::json!({
                    "trace": trace.name,
                    "policy": "upper_bound",
                    "budget_fraction": fraction,
                    "hit_ratio": null,
                    "byte_hit_ratio": cell.upper_bound,
                }));
            }
            println!("{line}");
            goals.check(&trace.name, fraction, &cell);
        }
    }
    if let Some(out) = args.out {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let json = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
        std::fs::write(&out, json + "\n").map_err(|e| format!("writing {}: {e}", out.display()))?;
        println!("wrote {} rows to {}", rows.len(), out.display());
    }
    goals.print();
    if args.check && !goals.failures.is_empty() {
        return Err(format!(
            "{} acceptance goal(s) missed",
            goals.failures.len()
        ));
    }
    Ok(())
}

/// Allowed shortfall of adaptive against the best peer.
const PEER_MARGIN: f64 = 0.02;

/// The results of one (trace, budget) cell that the goals need.
#[derive(Default)]
struct Cell {
    adaptive: (f64, f64),
    /// Largest |lossy − exact| of adaptive over both lossy feeds and metrics.
    lossy_shift: f64,
    belady: (f64, f64),
    /// Byte hit ratio of the size-aware offline schedule.
    flow_schedule: f64,
    /// Upper bound on any policy's byte hit ratio.
    upper_bound: f64,
    /// Best (hit ratio, byte hit ratio) over lru, moka and quick_cache.
    best_peer: (f64, f64),
}

impl Cell {
    fn record(&mut self, policy: &str, result: &SimResult) {
        let ratios = (result.hit_ratio(), result.byte_hit_ratio());
        match policy {
            "adaptive" => self.adaptive = ratios,
            "adaptive_lossy" => {
                // `adaptive` is recorded first (POLICIES order).
                let shift = (ratios.0 - self.adaptive.0)
                    .abs()
                    .max((ratios.1 - self.adaptive.1).abs());
                self.lossy_shift = self.lossy_shift.max(shift);
            }
            "furthest_next_use" => self.belady = ratios,
            "flow_schedule" => self.flow_schedule = ratios.1,
            "lru" | "moka" | "quick_cache" => {
                self.best_peer.0 = self.best_peer.0.max(ratios.0);
                self.best_peer.1 = self.best_peer.1.max(ratios.1);
            }
            _ => {}
        }
    }
}

/// The issue's acceptance goals, checked cell by cell.
#[derive(Default)]
struct Goals {
    cells: usize,
    /// Smallest `adaptive − (best peer − margin)`, and where.
    worst: Option<(f64, String)>,
    belady_ratio: Option<f64>,
    /// Smallest adaptive / upper bound (byte hit ratio), and where; a report,
    /// not a goal yet (issue 18 states its goals on workload families the
    /// generators do not have yet).
    worst_to_bound: Option<(f64, String)>,
    /// Cells where the size-oblivious Belady exceeds the feasible size-aware
    /// schedule, and the largest excess.
    belady_over_schedule: (usize, f64),
    /// Largest move of adaptive's ratios when fed through lossy read buffers.
    lossy_shift: Option<(f64, String)>,
    failures: Vec<String>,
}

/// How far lossy hit recording may move adaptive's hit ratios.
const LOSSY_MARGIN: f64 = 0.01;

impl Goals {
    fn check(&mut self, trace: &str, fraction: f64, cell: &Cell) {
        self.cells += 1;
        // The size-aware references exist only with `--bound` (a bound of 0
        // means not computed: a real bound is positive on these traces).
        let bounded = cell.upper_bound > 0.0;
        let to_bound = if bounded {
            cell.adaptive.1 / cell.upper_bound
        } else {
            1.0
        };
        if bounded
            && self
                .worst_to_bound
                .as_ref()
                .is_none_or(|(r, _)| to_bound < *r)
        {
            self.worst_to_bound = Some((to_bound, format!("{trace}@{fraction}")));
        }
        if bounded && cell.belady.1 > cell.flow_schedule + 1e-12 {
            self.belady_over_schedule.0 += 1;
            self.belady_over_schedule.1 = self
                .belady_over_schedule
                .1
                .max(cell.belady.1 - cell.flow_schedule);
        }
        if self
            .lossy_shift
            .as_ref()
            .is_none_or(|(shift, _)| cell.lossy_shift > *shift)
        {
            self.lossy_shift = Some((cell.lossy_shift, format!("{trace}@{fraction}")));
        }
        if cell.lossy_shift > LOSSY_MARGIN {
            self.failures.push(format!(
                "{trace}@{fraction}: lossy hit recording moves adaptive by {:.4}",
                cell.lossy_shift
            ));
        }
        for (metric, adaptive, peer) in [
            ("hit ratio", cell.adaptive.0, cell.best_peer.0),
            ("byte hit ratio", cell.adaptive.1, cell.best_peer.1),
        ] {
            let slack = adaptive - (peer - PEER_MARGIN);
            let place =
                format!("{trace}@{fraction} {metric}: adaptive {adaptive:.4}, best peer {peer:.4}");
            if self.worst.as_ref().is_none_or(|(s, _)| slack < *s) {
                self.worst = Some((slack, place.clone()));
            }
            if slack < 0.0 {
                self.failures.push(place);
            }
        }
        if trace == "forward_passes" && (fraction - 0.5).abs() < 1e-9 {
            let ratio = if cell.belady.1 > 0.0 {
                cell.adaptive.1 / cell.belady.1
            } else {
                1.0
            };
            self.belady_ratio = Some(ratio);
            if ratio < 0.9 {
                self.failures.push(format!(
                    "forward_passes@0.5: adaptive/belady byte hit {ratio:.3} < 0.9"
                ));
            }
        }
    }

    fn print(&self) {
        println!(
            "goal: adaptive >= best(lru, moka, quick_cache) - {PEER_MARGIN} (hit and byte hit) on {} cells: {}",
            self.cells,
            if self.failures.is_empty() {
                "met"
            } else {
                "MISSED"
            }
        );
        if let Some((slack, place)) = &self.worst {
            println!("  closest: {place} (slack {slack:+.4})");
        }
        if let Some(ratio) = self.belady_ratio {
            println!("goal: forward_passes@0.5 byte hit >= 0.9 x belady: {ratio:.3}");
        }
        if let Some((ratio, place)) = &self.worst_to_bound {
            println!(
                "report: adaptive byte hit / size-aware upper bound >= {ratio:.3} on every cell (lowest at {place})"
            );
        }
        if self.worst_to_bound.is_some() {
            println!(
                "report: size-oblivious belady above the feasible size-aware schedule on {} cell(s) (by up to {:.4})",
                self.belady_over_schedule.0, self.belady_over_schedule.1
            );
        } else {
            println!(
                "report: size-aware bound and offline schedule not computed (run with --bound)"
            );
        }
        if let Some((shift, place)) = &self.lossy_shift {
            println!(
                "goal: lossy read buffers move adaptive's ratios by <= {LOSSY_MARGIN}: largest move {shift:.4} ({place})"
            );
        }
        for failure in &self.failures {
            println!("  missed: {failure}");
        }
    }
}
