//! Hot-get latency through the C API (`tinyaiGetLayerWeights` on a resident layer),
//! 1 and 2 threads. Run by `cargo xtask bench ffi`.
//!
//! Usage: bench_ffi [--quick] [--out FILE]
#![allow(clippy::unwrap_used)]

use std::ffi::CString;
use std::time::Instant;

use tinyai::{
    tinyaiCloseMappedModel, tinyaiCreateDefaultMmapConfig, tinyaiGetLayerWeights,
    tinyaiOpenMappedModel,
};

struct Model(*mut tinyai::TinyAIMappedModel);
// SAFETY: the C API documents every function as callable concurrently on one model.
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "target/bench/ffi.json".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hot.tmai");
    tinyai_format::fixtures::write_fixture_file(
        &tinyai_format::fixtures::FixtureSpec::uniform(1, 4096, &[1 << 20; 4], 1),
        &path,
    )
    .unwrap();
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    let config = tinyaiCreateDefaultMmapConfig();
    // SAFETY: valid NUL-terminated path and config pointer.
    let model = Model(unsafe { tinyaiOpenMappedModel(c_path.as_ptr(), &config) });
    assert!(!model.0.is_null());
    let iterations: u64 = if quick { 100_000 } else { 1_000_000 };
    let mut rows = Vec::new();
    for threads in [1usize, 2] {
        eprintln!("[bench ffi] hot get through the C API, {threads} thread(s)");
        let mut samples = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    let model = &model;
                    scope.spawn(move || {
                        for _ in 0..iterations {
                            // SAFETY: the model is open for the whole scope.
                            let weights = unsafe { tinyaiGetLayerWeights(model.0, 0) };
                            std::hint::black_box(weights);
                        }
                    });
                }
            });
            samples.push(start.elapsed().as_nanos() as f64 / iterations as f64);
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        rows.push(format!(
            "{{\"threads\": {threads}, \"ns_per_get\": {:.1}}}",
            samples[samples.len() / 2]
        ));
    }
    // SAFETY: opened above, closed once.
    unsafe { tinyaiCloseMappedModel(model.0) };
    let document = format!("{{\n  \"hot_get\": [{}]\n}}\n", rows.join(", "));
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&out, &document).unwrap();
    print!("{document}");
}
