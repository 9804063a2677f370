//! Streaming a safetensors file opened as it is against streaming its `.tmai`
//! conversion (issue 15: when is `tmai convert` worth it?). Same tensors, same
//! layers, same budget (a third of the model), the default backend; each round
//! drops both files from the page cache, opens, and gets every layer in order,
//! touching one byte per page. The two sides alternate (A B, then B A) in one
//! run; medians. Run by `cargo xtask bench format`.
//!
//! Usage: bench_direct [--quick] [--out FILE]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Instant;

use tinyai_format::{DType, ForeignModel, Grouping, SafetensorsHeader, TensorSpec, Writer};
use tinyai_store::{MappedModel, StoreConfig, evict_file_from_page_cache};

/// (name, safetensors dtype, dtype, shape) of the model's tensors, in file order.
fn tensors(blocks: u64) -> Vec<(String, &'static str, DType, Vec<u64>)> {
    let mut out = vec![(
        "embeddings.weight".to_owned(),
        "F16",
        DType::F16,
        vec![8192, 1024],
    )];
    for block in 0..blocks {
        // Sorted by name within the block, as safetensors writers order them;
        // the odd-sized norm puts every later tensor off the page grid.
        out.push((
            format!("layers.{block:03}.attn.weight"),
            "F16",
            DType::F16,
            vec![1024, 1024],
        ));
        out.push((
            format!("layers.{block:03}.mlp.weight"),
            "F16",
            DType::F16,
            vec![1536, 1024],
        ));
        out.push((
            format!("layers.{block:03}.norm.weight"),
            "F32",
            DType::F32,
            vec![1031],
        ));
    }
    out.push((
        "lm_head.weight".to_owned(),
        "F16",
        DType::F16,
        vec![8192, 1024],
    ));
    out
}

fn byte_length(dtype: DType, shape: &[u64]) -> usize {
    (shape.iter().product::<u64>() * u64::from(dtype.bits().unwrap()) / 8) as usize
}

/// Writes the safetensors file; returns its bytes' length.
fn write_safetensors(path: &Path, tensors: &[(String, &'static str, DType, Vec<u64>)]) -> u64 {
    use std::io::Write;
    let mut entries = Vec::new();
    let mut offset = 0;
    for (name, st_dtype, dtype, shape) in tensors {
        let end = offset + byte_length(*dtype, shape);
        entries.push(format!(
            "{name:?}:{{\"dtype\":\"{st_dtype}\",\"shape\":{shape:?},\"data_offsets\":[{offset},{end}]}}"
        ));
        offset = end;
    }
    let header = format!("{{{}}}", entries.join(","));
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(&(header.len() as u64).to_le_bytes())
        .unwrap();
    file.write_all(header.as_bytes()).unwrap();
    let mut seed = 1u64;
    for (_, _, dtype, shape) in tensors {
        let mut data = vec![0u8; byte_length(*dtype, shape)];
        for chunk in data.chunks_mut(8) {
            seed = tinyai_format::fixtures::splitmix64(seed);
            let word = seed.to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        file.write_all(&data).unwrap();
    }
    file.into_inner().unwrap().sync_all().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// Writes the `.tmai` conversion of `source` (the grouping `tmai convert` uses).
fn convert(source: &Path, out: &Path) {
    let bytes = std::fs::read(source).unwrap();
    let header = SafetensorsHeader::parse(&bytes, bytes.len() as u64).unwrap();
    let foreign = ForeignModel::from_safetensors(header, &Grouping::Default).unwrap();
    let model = foreign.model();
    let file = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    let mut writer = Writer::new(file, Default::default()).unwrap();
    for layer in model.layers() {
        let tensors: Vec<_> = model.layer_tensors(layer.index).unwrap().collect();
        let parts: Vec<(TensorSpec<'_>, &[u8])> = tensors
            .iter()
            .map(|t| {
                let start = (layer.offset + t.offset_in_layer) as usize;
                (
                    TensorSpec::new(t.name, t.dtype, t.shape()),
                    &bytes[start..start + t.length as usize],
                )
            })
            .collect();
        writer.add_layer(layer.name.unwrap(), &parts).unwrap();
    }
    let file = writer.finish().unwrap();
    file.into_inner().unwrap().sync_all().unwrap();
}

/// Seconds to open `path` cold and stream every layer once under `budget`.
fn stream(path: &Path, budget: u64) -> f64 {
    evict_file_from_page_cache(path).unwrap();
    let started = Instant::now();
    let model = MappedModel::open(
        path,
        StoreConfig {
            max_cache_size: budget,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let mut sum = 0u8;
    for index in 0..model.layer_count() {
        let guard = model.get(index).unwrap();
        for at in (0..guard.len()).step_by(4096) {
            sum = sum.wrapping_add(guard[at]);
        }
    }
    std::hint::black_box(sum);
    started.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "target/bench/format_direct.json".to_owned());
    let (blocks, rounds) = if quick { (8, 3) } else { (40, 7) };
    std::fs::create_dir_all("target").unwrap();
    let dir = tempfile::tempdir_in("target").unwrap();
    let direct = dir.path().join("model.safetensors");
    let converted = dir.path().join("model.tmai");
    let model_bytes = write_safetensors(&direct, &tensors(blocks));
    convert(&direct, &converted);
    let budget = model_bytes / 3;
    eprintln!(
        "[bench format] streaming a {:.0} MiB safetensors file directly vs converted, budget a third, {rounds} interleaved rounds",
        model_bytes as f64 / 1048576.0
    );
    let (mut ours_direct, mut ours_converted) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            ours_direct.push(stream(&direct, budget));
            ours_converted.push(stream(&converted, budget));
        } else {
            ours_converted.push(stream(&converted, budget));
            ours_direct.push(stream(&direct, budget));
        }
    }
    let direct_seconds = median(&mut ours_direct);
    let converted_seconds = median(&mut ours_converted);
    let document = format!(
        "{{\n  \"direct_stream\": {{\"model_bytes\": {model_bytes}, \"budget\": {budget}, \"rounds\": {rounds}, \"direct_seconds\": {direct_seconds:.6}, \"converted_seconds\": {converted_seconds:.6}, \"direct_over_converted\": {:.3}}}\n}}\n",
        direct_seconds / converted_seconds
    );
    if let Some(parent) = Path::new(&out).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&out, &document).unwrap();
    print!("{document}");
}
