//! Criterion benches of the store: hot get of a resident layer, and a cold
//! whole-model load beside a plain sequential read of the same file.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tinyai_format::fixtures;
use tinyai_store::{Backend, MappedModel, StoreConfig, evict_file_from_page_cache};

fn fixture(size: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("bench.tmai");
    fixtures::write_fixture_file(&fixtures::large(size), &path).unwrap();
    (dir, path)
}

fn plain_read(path: &Path) {
    let mut file = std::fs::File::open(path).unwrap();
    let mut buffer = vec![0u8; 8 << 20];
    while file.read(&mut buffer).unwrap() > 0 {}
}

fn store_load(path: &Path, backend: Backend) {
    let config = StoreConfig {
        max_cache_size: 1 << 30,
        backend,
        ..StoreConfig::default()
    };
    let model = MappedModel::open(path, config).unwrap();
    for guard in model.forward_pass(0..model.layer_count()).unwrap() {
        std::hint::black_box(guard.unwrap().len());
    }
}

fn cold(path: &Path, f: impl Fn(&Path), iterations: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iterations {
        evict_file_from_page_cache(path).unwrap();
        let start = Instant::now();
        f(path);
        total += start.elapsed();
    }
    total
}

fn benches(c: &mut Criterion) {
    let (_dir, path) = fixture(64 << 20);
    let model = MappedModel::open(&path, StoreConfig::default()).unwrap();
    drop(model.get(0).unwrap());
    c.bench_function("hot_get_resident_layer", |b| {
        b.iter(|| std::hint::black_box(model.get(0).unwrap().as_ptr()))
    });
    drop(model);
    let mut group = c.benchmark_group("cold_load_64MiB");
    group.sample_size(10);
    group.bench_function("plain_sequential_read", |b| {
        b.iter_custom(|n| cold(&path, plain_read, n))
    });
    group.bench_function("store_mapped", |b| {
        b.iter_custom(|n| cold(&path, |p| store_load(p, Backend::Mapped), n))
    });
    group.bench_function("store_owned", |b| {
        b.iter_custom(|n| {
            cold(
                &path,
                |p| store_load(p, Backend::Owned { direct_io: false }),
                n,
            )
        })
    });
    group.finish();
}

criterion_group!(store, benches);
criterion_main!(store);
