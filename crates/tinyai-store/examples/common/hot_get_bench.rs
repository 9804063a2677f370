//! The hot-get benchmark's harness, written once and included with `#[path]` by
//! `tinyai-store`'s `hot_get` example (the Rust API) and `tinyai-ffi`'s
//! `bench_ffi` example (the C API), so both measure the same way and beside the
//! same floors.
//!
//! Setup (the store-core issue's): a fixture of [`LAYERS`] × [`LAYER_BYTES`]
//! opened with the default config (automatic lookahead on) except a
//! [`BUDGET_BYTES`] budget, every layer made resident before timing; a
//! pseudo-random layer order fixed by a seed, which each thread walks from its
//! own offset. A measurement spawns N threads that wait on a barrier with the
//! main thread; once released, each thread reads the clock, does `iterations`
//! gets and reads it again (after a spinning rendezvous, so all start
//! together). The span is the first start to the last end, so spawning is not
//! timed.
//!
//! Floors, measured the same way in the same run: indexing a `Vec<Arc<[u8]>>`,
//! the same plus an `Arc` clone (what a refcounted guard costs at least), a
//! `moka::sync::Cache` get (which clones the `Arc` value) and an
//! `RwLock<HashMap>` read + get + clone.
//!
//! Rounds interleave every subject and thread count (A 1t, A 2t, B 1t, … then
//! again) because the CPU is shared; medians are reported.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, RwLock};
use std::time::{Duration, Instant};

use tinyai_format::fixtures::{FixtureSpec, write_fixture_file};

/// Layers in the fixture.
pub const LAYERS: u32 = 60;
/// Bytes per layer.
pub const LAYER_BYTES: u64 = 4 << 20;
/// The store's budget: every layer fits.
pub const BUDGET_BYTES: u64 = 2 << 30;
/// Thread counts measured; scaling is aggregate(2) / aggregate(1).
pub const THREAD_COUNTS: [usize; 2] = [1, 2];
/// The floors every run measures beside its API.
pub const FLOOR_SUBJECTS: [&str; 4] = [
    "vec_index",
    "vec_index_arc_clone",
    "moka_get",
    "rwlock_hashmap_get",
];

const ORDER_LEN: usize = 1 << 16;
const ORDER_MASK: usize = ORDER_LEN - 1;
const ORDER_SEED: u64 = 0xD1CE_5EED;
/// Bytes of each floor's value: the floors measure the lookup, not the data.
const FLOOR_VALUE_BYTES: usize = 4096;

/// Command line, sizes and the layer order of one run.
pub struct Harness {
    /// Where the JSON document goes (`--out`).
    pub out: PathBuf,
    rounds: usize,
    iterations: usize,
    order: Box<[u32; ORDER_LEN]>,
}

/// The median measurement of one subject at one thread count.
pub struct Row {
    subject: &'static str,
    threads: usize,
    elapsed: Duration,
}

impl Row {
    fn ns_per_get(&self, iterations: usize) -> f64 {
        self.elapsed.as_nanos() as f64 / iterations as f64
    }

    fn mgets_per_s(&self, iterations: usize) -> f64 {
        (self.threads * iterations) as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// Writes the fixture into `dir` and returns its path.
pub fn write_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("hot_get.tmai");
    let sizes = vec![LAYER_BYTES; LAYERS as usize];
    write_fixture_file(&FixtureSpec::uniform(1, 4096, &sizes, 1), &path).unwrap();
    path
}

/// SplitMix64: a fixed, dependency-free pseudo-random sequence.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Harness {
    /// Parses `[--quick] [--out FILE]`.
    pub fn from_args(default_out: &str) -> Harness {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let out = args
            .iter()
            .position(|a| a == "--out")
            .and_then(|i| args.get(i + 1))
            .map_or_else(|| PathBuf::from(default_out), PathBuf::from);
        let mut state = ORDER_SEED;
        let order: Vec<u32> = (0..ORDER_LEN)
            .map(|_| (splitmix64(&mut state) % u64::from(LAYERS)) as u32)
            .collect();
        Harness {
            out,
            rounds: if quick { 3 } else { 5 },
            iterations: if quick { 200_000 } else { 2_000_000 },
            order: order.into_boxed_slice().try_into().unwrap(),
        }
    }

    /// Wall time of `threads` threads each calling `get` `iterations` times on
    /// the layer order: from the first thread's start to the last one's end.
    /// The threads take their own clock readings after the barrier releases
    /// them, so neither spawning nor the main thread's wake-up (which, with as
    /// many workers as cores, may come only after a worker has finished) is in
    /// the span; and they meet once more spinning, so that one thread's
    /// wake-up latency does not leave the other running alone.
    pub fn time<G: Fn(u32) + Sync>(&self, threads: usize, get: G) -> Duration {
        let barrier = Barrier::new(threads + 1);
        let awake = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|thread| {
                    let (barrier, awake, get, order) = (&barrier, &awake, &get, &*self.order);
                    let iterations = self.iterations;
                    scope.spawn(move || {
                        let first = thread * ORDER_LEN / threads;
                        barrier.wait();
                        awake.fetch_add(1, Ordering::AcqRel);
                        while awake.load(Ordering::Acquire) < threads {
                            std::hint::spin_loop();
                        }
                        let start = Instant::now();
                        for position in first..first + iterations {
                            get(order[position & ORDER_MASK]);
                        }
                        (start, Instant::now())
                    })
                })
                .collect();
            barrier.wait();
            let spans: Vec<(Instant, Instant)> = workers
                .into_iter()
                .map(|worker| worker.join().unwrap())
                .collect();
            let start = spans.iter().map(|span| span.0).min().unwrap();
            let end = spans.iter().map(|span| span.1).max().unwrap();
            end - start
        })
    }

    /// Runs `rounds` interleaved rounds of `time(subject, threads)` over every
    /// subject and thread count; returns the medians, in `subjects` order.
    pub fn run(
        &self,
        label: &str,
        subjects: &[&'static str],
        mut time: impl FnMut(&str, usize) -> Duration,
    ) -> Vec<Row> {
        let mut samples = vec![Vec::new(); subjects.len() * THREAD_COUNTS.len()];
        for round in 0..self.rounds {
            eprintln!(
                "[bench {label}] hot get, round {} of {}",
                round + 1,
                self.rounds
            );
            for (s, subject) in subjects.iter().enumerate() {
                for (t, &threads) in THREAD_COUNTS.iter().enumerate() {
                    samples[s * THREAD_COUNTS.len() + t].push(time(subject, threads));
                }
            }
        }
        let mut rows = Vec::new();
        for (s, subject) in subjects.iter().enumerate() {
            for (t, &threads) in THREAD_COUNTS.iter().enumerate() {
                let elapsed = &mut samples[s * THREAD_COUNTS.len() + t];
                elapsed.sort_unstable();
                rows.push(Row {
                    subject,
                    threads,
                    elapsed: elapsed[elapsed.len() / 2],
                });
            }
        }
        for row in &rows {
            eprintln!(
                "[bench {label}] {:<22} {} thread(s): {:>8.1} ns/get, {:>7.2} M gets/s",
                row.subject,
                row.threads,
                row.ns_per_get(self.iterations),
                row.mgets_per_s(self.iterations)
            );
        }
        rows
    }

    /// Writes `{"hot_get_setup": …, "hot_get": [rows], "hot_get_scaling": […]}`
    /// to `--out` and stdout. `resident_bytes` is what the model reported as
    /// cached after the warm-up (every layer resident means
    /// `LAYERS × LAYER_BYTES`).
    pub fn write_json(&self, rows: &[Row], resident_bytes: u64) {
        let row_json: Vec<String> = rows
            .iter()
            .map(|row| {
                format!(
                    "{{\"subject\": \"{}\", \"threads\": {}, \"ns_per_get\": {:.2}, \"mgets_per_s\": {:.3}}}",
                    row.subject,
                    row.threads,
                    row.ns_per_get(self.iterations),
                    row.mgets_per_s(self.iterations)
                )
            })
            .collect();
        let scaling_json: Vec<String> = rows
            .chunks(THREAD_COUNTS.len())
            .map(|pair| {
                format!(
                    "{{\"subject\": \"{}\", \"scaling_2t\": {:.3}}}",
                    pair[0].subject,
                    pair[1].mgets_per_s(self.iterations) / pair[0].mgets_per_s(self.iterations)
                )
            })
            .collect();
        let document = format!(
            "{{\n  \"hot_get_setup\": {{\"layers\": {LAYERS}, \"layer_bytes\": {LAYER_BYTES}, \
             \"budget_bytes\": {BUDGET_BYTES}, \"resident_bytes\": {resident_bytes}, \
             \"iterations_per_thread\": {}, \"rounds\": {}, \"order_len\": {ORDER_LEN}, \
             \"cores\": {}}},\n  \"hot_get\": [\n    {}\n  ],\n  \"hot_get_scaling\": [\n    {}\n  ]\n}}\n",
            self.iterations,
            self.rounds,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            row_json.join(",\n    "),
            scaling_json.join(",\n    ")
        );
        if let Some(parent) = self.out.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&self.out, &document).unwrap();
        print!("{document}");
    }
}

/// The floors' data: the same [`LAYERS`] values in each structure.
pub struct Floors {
    vec: Vec<Arc<[u8]>>,
    moka: moka::sync::Cache<u32, Arc<[u8]>>,
    rwlock: RwLock<HashMap<u32, Arc<[u8]>>>,
}

impl Floors {
    /// Builds the structures.
    pub fn new() -> Floors {
        let vec: Vec<Arc<[u8]>> = (0..LAYERS)
            .map(|i| Arc::from(vec![i as u8; FLOOR_VALUE_BYTES]))
            .collect();
        let moka = moka::sync::Cache::new(u64::from(LAYERS) * 2);
        for (i, value) in (0..LAYERS).zip(&vec) {
            moka.insert(i, Arc::clone(value));
        }
        moka.run_pending_tasks();
        let rwlock = RwLock::new((0..LAYERS).zip(vec.iter().cloned()).collect());
        Floors { vec, moka, rwlock }
    }

    /// Times floor `subject` (one of [`FLOOR_SUBJECTS`]) with `harness`.
    pub fn time(&self, harness: &Harness, subject: &str, threads: usize) -> Duration {
        match subject {
            "vec_index" => harness.time(threads, |i| {
                black_box(self.vec[i as usize].as_ptr());
            }),
            "vec_index_arc_clone" => harness.time(threads, |i| {
                let value = Arc::clone(&self.vec[i as usize]);
                black_box(value.as_ptr());
            }),
            "moka_get" => harness.time(threads, |i| {
                let value = self.moka.get(&i).unwrap();
                black_box(value.as_ptr());
            }),
            "rwlock_hashmap_get" => harness.time(threads, |i| {
                let value = self.rwlock.read().unwrap().get(&i).cloned().unwrap();
                black_box(value.as_ptr());
            }),
            other => panic!("unknown floor {other:?}"),
        }
    }
}
