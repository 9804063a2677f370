//! Open + validate a `.tmai` file vs the `safetensors` crate parsing the header of an
//! equivalent file, and our direct safetensors reader vs the `safetensors` crate on
//! the same safetensors file; interleaved (A B A B …), medians. Run by
//! `cargo xtask bench format`.
//!
//! The direct reader is timed as `MappedModel::open` uses it,
//! `ForeignModel::parse_safetensors` (parse + validate + group into layers +
//! the model's layer table), and through the public header types
//! (`SafetensorsHeader::parse` + `group_layers`, an owned name and shape per
//! tensor), and parsing alone (`SafetensorsHeader::parse`).
//!
//! Usage: bench_open [--quick] [--out FILE]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Cursor;
use std::time::Instant;

use tinyai_format::{
    DType, ForeignModel, Grouping, Model, SafetensorsHeader, TensorSpec, Writer, WriterOptions,
    group_layers,
};

const TENSORS_PER_LAYER: usize = 4;
const ELEMENTS: u64 = 16;

fn tmai_bytes(tensors: usize) -> Vec<u8> {
    let mut writer = Writer::new(Cursor::new(Vec::new()), WriterOptions { alignment: 64 }).unwrap();
    writer.add_metadata("general.name", "bench").unwrap();
    let data = vec![0u8; (ELEMENTS * 4) as usize];
    let shape = [ELEMENTS];
    for layer in 0..tensors.div_ceil(TENSORS_PER_LAYER) {
        let names: Vec<String> = (0..TENSORS_PER_LAYER)
            .filter(|t| layer * TENSORS_PER_LAYER + t < tensors)
            .map(|t| format!("model.layers.{layer}.tensor_{t}.weight"))
            .collect();
        let specs: Vec<(TensorSpec<'_>, &[u8])> = names
            .iter()
            .map(|name| (TensorSpec::new(name, DType::F32, &shape), &data[..]))
            .collect();
        writer
            .add_layer(&format!("layers.{layer}"), &specs)
            .unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn safetensors_bytes(tensors: usize) -> Vec<u8> {
    let data = vec![0u8; (ELEMENTS * 4) as usize];
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = (0..tensors)
        .map(|i| {
            let layer = i / TENSORS_PER_LAYER;
            let t = i % TENSORS_PER_LAYER;
            (
                format!("model.layers.{layer}.tensor_{t}.weight"),
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    vec![ELEMENTS as usize],
                    &data,
                )
                .unwrap(),
            )
        })
        .collect();
    let metadata: Option<HashMap<String, String>> =
        Some([("general.name".to_owned(), "bench".to_owned())].into());
    safetensors::serialize(views, metadata).unwrap()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Seconds per call of `f`, timed over batches that take about `batch_seconds`.
fn time_batch(mut f: impl FnMut(), iterations: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() / f64::from(iterations)
}

/// Seconds per `safetensors::SafeTensors::read_metadata` of `bytes` (the peer).
fn time_crate_parse(bytes: &[u8], iterations: u32) -> f64 {
    time_batch(
        || {
            std::hint::black_box(
                safetensors::SafeTensors::read_metadata(std::hint::black_box(bytes)).unwrap(),
            );
        },
        iterations,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "target/bench/format.json".to_owned());
    // --quick is CI's smoke run in the dev profile (the safetensors crate's
    // serde unoptimised): fewer rounds and shorter batches, 18 s in all
    // instead of 75 in a cold CI run.
    let rounds = if quick { 3 } else { 21 };
    let batch = if quick { 10_000 } else { 200_000 };
    let mut rows = Vec::new();
    let mut safetensors_rows = Vec::new();
    for tensors in [10usize, 1_000, 100_000] {
        eprintln!(
            "[bench format] open {tensors} tensors: tmai vs safetensors, {rounds} interleaved rounds"
        );
        let ours_bytes = tmai_bytes(tensors);
        let theirs_bytes = safetensors_bytes(tensors);
        // Both must accept their file.
        assert_eq!(
            Model::parse(&ours_bytes).unwrap().tensor_count(),
            tensors as u64
        );
        assert_eq!(
            safetensors::SafeTensors::read_metadata(&theirs_bytes)
                .unwrap()
                .1
                .tensors()
                .len(),
            tensors
        );
        let iterations = (batch / tensors).clamp(3, 20_000) as u32;
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..rounds {
            ours.push(time_batch(
                || {
                    std::hint::black_box(Model::parse(std::hint::black_box(&ours_bytes)).unwrap());
                },
                iterations,
            ));
            theirs.push(time_crate_parse(&theirs_bytes, iterations));
        }
        let ours = median(&mut ours);
        let theirs = median(&mut theirs);
        rows.push(format!(
            "{{\"tensors\": {tensors}, \"tmai_open_seconds\": {ours:.9}, \"safetensors_header_seconds\": {theirs:.9}, \"speedup\": {:.3}}}",
            theirs / ours
        ));

        // The same safetensors file: our direct reader (parse + validate + layer
        // grouping) vs the safetensors crate's header parse.
        eprintln!(
            "[bench format] safetensors open {tensors} tensors: ForeignModel::parse_safetensors, SafetensorsHeader::parse + group_layers vs safetensors, {rounds} interleaved rounds"
        );
        let length = theirs_bytes.len() as u64;
        let direct = || {
            let header = SafetensorsHeader::parse(&theirs_bytes, length).unwrap();
            let layers = group_layers(&header.tensors, &Grouping::Default);
            (header, layers)
        };
        let (header, layers) = direct();
        assert_eq!(header.tensors.len(), tensors);
        assert_eq!(layers.len(), tensors.div_ceil(TENSORS_PER_LAYER));
        let open = || {
            ForeignModel::parse_safetensors(
                std::hint::black_box(&theirs_bytes),
                length,
                &Grouping::Default,
            )
            .unwrap()
        };
        let model = open();
        assert_eq!(model.model().tensor_count(), tensors as u64);
        assert_eq!(model.model().layer_count(), layers.len() as u64);
        let mut opened = Vec::new();
        let mut ours = Vec::new();
        let mut parse_only = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..rounds {
            opened.push(time_batch(
                || {
                    std::hint::black_box(open());
                },
                iterations,
            ));
            ours.push(time_batch(
                || {
                    let header =
                        SafetensorsHeader::parse(std::hint::black_box(&theirs_bytes), length)
                            .unwrap();
                    std::hint::black_box(group_layers(&header.tensors, &Grouping::Default));
                    std::hint::black_box(header);
                },
                iterations,
            ));
            // The parse alone (no grouping), to show where the time goes.
            parse_only.push(time_batch(
                || {
                    std::hint::black_box(
                        SafetensorsHeader::parse(std::hint::black_box(&theirs_bytes), length)
                            .unwrap(),
                    );
                },
                iterations,
            ));
            theirs.push(time_crate_parse(&theirs_bytes, iterations));
        }
        let opened = median(&mut opened);
        let ours = median(&mut ours);
        let parse_only = median(&mut parse_only);
        let theirs = median(&mut theirs);
        safetensors_rows.push(format!(
            "{{\"tensors\": {tensors}, \"ours_seconds\": {opened:.9}, \"safetensors_crate_seconds\": {theirs:.9}, \"speedup\": {:.3}, \"header_and_group_layers_seconds\": {ours:.9}, \"header_and_group_layers_speedup\": {:.3}, \"ours_parse_only_seconds\": {parse_only:.9}, \"parse_only_speedup\": {:.3}}}",
            theirs / opened,
            theirs / ours,
            theirs / parse_only
        ));
    }
    let document = format!(
        "{{\n  \"open\": [\n    {}\n  ],\n  \"safetensors_open\": [\n    {}\n  ]\n}}\n",
        rows.join(",\n    "),
        safetensors_rows.join(",\n    ")
    );
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&out, &document).unwrap();
    print!("{document}");
}
