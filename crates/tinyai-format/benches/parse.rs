//! Parse benchmarks: a 100,000-layer file, and open time against layer data size.
//!
//! `cargo bench -p tinyai-format --bench parse -- --warm-up-time 1 --measurement-time 2`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::io::Cursor;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tinyai_format::fixtures::{self, FixtureSpec};
use tinyai_format::{DType, Model, TensorSpec, Writer, WriterOptions};

/// A file of `layers` layers of 64 bytes (one `u8` tensor each), alignment 64:
/// the tables dominate.
fn many_layers(layers: u64) -> Vec<u8> {
    let mut writer = Writer::new(Cursor::new(Vec::new()), WriterOptions { alignment: 64 }).unwrap();
    writer.add_metadata("general.name", "many layers").unwrap();
    let data = [7u8; 64];
    for index in 0..layers {
        writer
            .add_layer(
                &format!("blk.{index}"),
                &[(TensorSpec::new("weight", DType::U8, &[64]), &data[..])],
            )
            .unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn parse_100k_layers(c: &mut Criterion) {
    let bytes = many_layers(100_000);
    let mut group = c.benchmark_group("parse_100k_layers");
    group.sample_size(20);
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("Model::parse", |b| {
        b.iter(|| {
            let model = Model::parse(black_box(&bytes)).unwrap();
            black_box(model.layer_count())
        })
    });
    group.finish();
}

/// Open (parse) time for the same number of layers with 4 KiB, 1 MiB and 16 MiB
/// layers: parsing reads the header and tables only, so it must not grow.
/// Files are written to a temporary directory and read back into memory one at
/// a time (at most 32 × 16 MiB = 512 MiB resident).
fn open_time_vs_layer_size(c: &mut Criterion) {
    const LAYERS: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("open_vs_layer_size");
    group.sample_size(20);
    for (label, layer_size) in [("4KiB", 4u64 << 10), ("1MiB", 1 << 20), ("16MiB", 16 << 20)] {
        let spec = FixtureSpec::uniform(11, 4096, &[layer_size; LAYERS], 2);
        let path = dir.path().join(format!("layers-{label}.tmai"));
        fixtures::write_fixture_file(&spec, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        group.bench_with_input(
            BenchmarkId::new("Model::parse", format!("{LAYERS}x{label}")),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    let model = Model::parse(black_box(bytes)).unwrap();
                    black_box(model.layer_count())
                })
            },
        );
        drop(bytes);
        std::fs::remove_file(&path).unwrap();
    }
    group.finish();
}

criterion_group!(benches, parse_100k_layers, open_time_vs_layer_size);
criterion_main!(benches);
