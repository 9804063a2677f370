//! Safetensors files, sharded safetensors sets and GGUF files opened as they
//! are (issue 15): every tensor's bytes, dtype and shape as written, in every
//! backend; layers that share pages; budgets; malformed and mutated headers.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{BACKENDS, MIB, config, tempdir, wait_for};
use tinyai_format::fixtures::{GgufWriter, splitmix64};
use tinyai_format::{DType, FileKind, FormatError};
use tinyai_store::{Backend, MappedModel, StoreConfig, StoreError};

/// One tensor to write: name, safetensors dtype, shape, bytes.
struct Tensor {
    name: String,
    dtype: &'static str,
    shape: Vec<u64>,
    data: Vec<u8>,
}

fn pattern(length: usize, seed: u64) -> Vec<u8> {
    (0..length as u64)
        .map(|i| splitmix64(seed ^ (i << 8)) as u8)
        .collect()
}

fn tensor(name: &str, dtype: &'static str, shape: &[u64], seed: u64) -> Tensor {
    let size = match dtype {
        "F32" => 4,
        "F16" | "BF16" => 2,
        _ => 1,
    };
    let length = shape.iter().product::<u64>() as usize * size;
    Tensor {
        name: name.to_owned(),
        dtype,
        shape: shape.to_vec(),
        data: pattern(length, seed),
    }
}

/// A safetensors file holding `tensors` back to back in the given order.
fn safetensors_bytes(tensors: &[Tensor]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut offset = 0;
    for t in tensors {
        let end = offset + t.data.len();
        entries.push(format!(
            "{:?}:{{\"dtype\":\"{}\",\"shape\":{:?},\"data_offsets\":[{offset},{end}]}}",
            t.name, t.dtype, t.shape
        ));
        offset = end;
    }
    let header = format!(
        "{{\"__metadata__\":{{\"format\":\"pt\"}},{}}}",
        entries.join(",")
    );
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for t in tensors {
        out.extend_from_slice(&t.data);
    }
    out
}

/// A small transformer-shaped model with odd tensor sizes: no layer starts
/// or ends on a page, and neighbouring layers share pages.
fn model_tensors(blocks: u64) -> Vec<Tensor> {
    let mut tensors = vec![tensor("embeddings.weight", "F32", &[37, 29], 1)];
    for block in 0..blocks {
        let seed = 100 + block * 10;
        tensors.push(tensor(
            &format!("layers.{block}.attn.weight"),
            "F16",
            &[61, 53],
            seed,
        ));
        tensors.push(tensor(
            &format!("layers.{block}.mlp.weight"),
            "U8",
            &[3001],
            seed + 1,
        ));
        tensors.push(tensor(
            &format!("layers.{block}.norm.weight"),
            "F32",
            &[13],
            seed + 2,
        ));
    }
    tensors.push(tensor("lm_head.weight", "F32", &[29, 41], 2));
    tensors
}

fn dtype_of(name: &str) -> DType {
    match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "U8" => DType::U8,
        other => panic!("{other}"),
    }
}

/// Every tensor served by `model` equals `tensors` (bytes, dtype, shape).
fn assert_tensors(model: &MappedModel, tensors: &[Tensor]) {
    let mut seen = 0;
    for index in 0..model.layer_count() {
        let guard = model.get(index).unwrap();
        for info in model.format().layer_tensors(index).unwrap() {
            let expected = tensors
                .iter()
                .find(|t| t.name == info.name)
                .unwrap_or_else(|| panic!("unexpected tensor {}", info.name));
            let view = guard.tensor(info.name).unwrap();
            assert!(view.bytes == &expected.data[..], "{} bytes", info.name);
            assert_eq!(info.dtype, dtype_of(expected.dtype), "{}", info.name);
            assert_eq!(info.shape(), expected.shape, "{}", info.name);
            seen += 1;
        }
    }
    assert_eq!(seen, tensors.len());
}

/// Writes a file and syncs it (dirty pages would stay in the page cache
/// whatever the store advises, hiding what it drops).
fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
    path
}

#[test]
fn a_safetensors_file_serves_every_tensor_in_every_backend() {
    let dir = tempdir();
    let tensors = model_tensors(6);
    // Named like a .tmai file on purpose: the content decides.
    let path = write(dir.path(), "model.tmai", &safetensors_bytes(&tensors));
    for backend in BACKENDS {
        for budget in [64 * MIB, 40_000] {
            let model = MappedModel::open(&path, config(budget, backend)).unwrap();
            assert_eq!(model.format().kind(), FileKind::Safetensors);
            let names: Vec<&str> = model
                .format()
                .layers()
                .map(|layer| layer.name.unwrap())
                .collect();
            assert_eq!(
                names,
                [
                    "embeddings",
                    "layer.0",
                    "layer.1",
                    "layer.2",
                    "layer.3",
                    "layer.4",
                    "layer.5",
                    "lm_head"
                ]
            );
            assert_eq!(model.format().metadata_value("format"), Some("pt"));
            assert_tensors(&model, &tensors);
            assert!(model.memory_usage() <= budget.max(16_384), "{backend:?}");
            // No checksums: said by the descriptor, the stats and verify_layer.
            assert_eq!(model.descriptor(1).unwrap().checksum, None);
            assert_eq!(model.stats().layers_without_checksum, 8);
            assert!(matches!(
                model.verify_layer(1),
                Err(StoreError::Format {
                    source: FormatError::NoChecksum { layer: 1 },
                    ..
                })
            ));
        }
    }
}

#[test]
fn unaligned_layers_are_charged_for_the_pages_that_cover_them() {
    let dir = tempdir();
    let tensors = model_tensors(3);
    let path = write(
        dir.path(),
        "model.safetensors",
        &safetensors_bytes(&tensors),
    );
    let model = MappedModel::open(&path, StoreConfig::default()).unwrap();
    for index in 0..model.layer_count() {
        let descriptor = model.descriptor(index).unwrap();
        let page = 4096;
        let covering = (descriptor.offset + descriptor.size).next_multiple_of(page)
            - descriptor.offset / page * page;
        assert_eq!(descriptor.charge, covering.max(page), "layer {index}");
    }
}

#[test]
fn tensor_as_says_when_a_tensor_is_misaligned_for_its_type() {
    let dir = tempdir();
    // An odd-length u8 tensor first: the f32 tensor after it starts at an odd offset.
    let tensors = vec![
        tensor("layers.0.a", "U8", &[3], 5),
        tensor("layers.0.b", "F32", &[8], 6),
    ];
    let path = write(dir.path(), "odd.safetensors", &safetensors_bytes(&tensors));
    for backend in BACKENDS {
        let model = MappedModel::open(&path, config(MIB, backend)).unwrap();
        let guard = model.get(0).unwrap();
        assert!(guard.tensor("layers.0.b").unwrap().bytes == &tensors[1].data[..]);
        match guard.tensor_as::<f32>("layers.0.b") {
            Err(StoreError::View { reason, .. }) => {
                assert!(reason.contains("misaligned"), "{reason}");
            }
            other => panic!("{backend:?}: {other:?}"),
        }
    }
}

#[test]
fn a_gguf_file_serves_every_tensor_in_every_backend() {
    let dir = tempdir();
    let mut writer = GgufWriter::new();
    writer
        .string("general.architecture", "llama")
        .u32("llama.block_count", 2);
    let mut expected: Vec<(String, Vec<u64>, DType, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, shape: &[u64], ggml: u32, dtype: DType, length: usize, seed| {
        let data = pattern(length, seed);
        writer.tensor(name, shape, ggml, data.clone());
        expected.push((name.to_owned(), shape.to_vec(), dtype, data));
    };
    add(
        "token_embd.weight",
        &[50, 64],
        0,
        DType::F32,
        50 * 64 * 4,
        1,
    );
    for block in 0..2u64 {
        // Q4_0 (type 2): blocks of 32 elements in 18 bytes.
        add(
            &format!("blk.{block}.attn_q.weight"),
            &[64, 64],
            2,
            DType::Ggml,
            64 * 2 * 18,
            10 + block,
        );
        add(
            &format!("blk.{block}.attn_norm.weight"),
            &[64],
            0,
            DType::F32,
            256,
            20 + block,
        );
    }
    add("output.weight", &[50, 64], 1, DType::F16, 50 * 64 * 2, 3);
    let path = write(dir.path(), "model.gguf", &writer.build());
    for backend in BACKENDS {
        let model = MappedModel::open(&path, config(MIB, backend)).unwrap();
        assert_eq!(model.format().kind(), FileKind::Gguf);
        assert_eq!(
            model.format().metadata_value("general.architecture"),
            Some("llama")
        );
        assert_eq!(
            model.format().metadata_value("llama.block_count"),
            Some("2")
        );
        let mut seen = 0;
        for index in 0..model.layer_count() {
            let guard = model.get(index).unwrap();
            for info in model.format().layer_tensors(index).unwrap() {
                let (_, shape, dtype, data) = expected.iter().find(|e| e.0 == info.name).unwrap();
                assert_eq!(info.shape(), &shape[..], "{}", info.name);
                assert_eq!(info.dtype, *dtype, "{}", info.name);
                assert!(guard.tensor(info.name).unwrap().bytes == &data[..]);
                seen += 1;
            }
        }
        assert_eq!(seen, expected.len());
    }
}

/// Two shards and their index; layer 1's tensors lie in both shards.
fn sharded_set(dir: &Path) -> (PathBuf, Vec<Tensor>) {
    let first = vec![
        tensor("embeddings.weight", "F32", &[37, 29], 1),
        tensor("layers.0.w", "F16", &[500], 2),
        tensor("layers.1.a", "U8", &[777], 3),
    ];
    let second = vec![
        tensor("layers.1.b", "U8", &[901], 4),
        tensor("layers.2.w", "F32", &[300], 5),
        tensor("lm_head.weight", "F32", &[29, 41], 6),
    ];
    write(
        dir,
        "model-00001-of-00002.safetensors",
        &safetensors_bytes(&first),
    );
    write(
        dir,
        "model-00002-of-00002.safetensors",
        &safetensors_bytes(&second),
    );
    let mut map = Vec::new();
    for (shard, tensors) in [(1, &first), (2, &second)] {
        for t in tensors.iter() {
            map.push(format!(
                "{:?}: \"model-0000{shard}-of-00002.safetensors\"",
                t.name
            ));
        }
    }
    let index = format!(
        "{{\"metadata\": {{\"total_size\": 1}}, \"weight_map\": {{{}}}}}",
        map.join(", ")
    );
    let path = write(dir, "model.safetensors.index.json", index.as_bytes());
    (path, first.into_iter().chain(second).collect())
}

#[test]
fn a_sharded_set_serves_every_tensor_including_a_layer_across_shards() {
    let dir = tempdir();
    let (index, tensors) = sharded_set(dir.path());
    for backend in BACKENDS {
        let model = MappedModel::open(&index, config(MIB, backend)).unwrap();
        assert_eq!(model.format().kind(), FileKind::SafetensorsIndex);
        // A set of files is mapped (into one range) like a single file.
        assert_eq!(model.backend(), backend);
        assert_eq!(model.layer_count(), 5);
        assert_tensors(&model, &tensors);
        // Partial reads across the gap between the shards' placements.
        let mut buf = vec![0u8; 901];
        model
            .read_tensor_bytes(2, "layers.1.b", 0, &mut buf)
            .unwrap();
        assert!(buf == tensors[3].data);
    }
    // A missing shard: a typed I/O error naming it.
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    match MappedModel::open(&index, StoreConfig::default()) {
        Err(StoreError::Io { path, .. }) => {
            assert!(path.ends_with("model-00002-of-00002.safetensors"));
        }
        other => panic!("{other:?}"),
    }
}

/// Whether the page holding byte `at` of `bytes` (part of a mapping) is
/// mapped in this process (`/proc/self/pagemap`'s present bit): what
/// `MADV_DONTNEED` takes away. (`mincore` reports the page cache instead,
/// whose large folios may span two layers' pages.)
fn page_resident(bytes: &[u8], at: usize) -> bool {
    use std::os::unix::fs::FileExt;
    let page = 4096;
    let address = bytes.as_ptr() as usize + at;
    let pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
    let mut entry = [0u8; 8];
    pagemap
        .read_exact_at(&mut entry, (address / page * 8) as u64)
        .unwrap();
    u64::from_le_bytes(entry) >> 63 == 1
}

#[test]
fn a_page_shared_by_two_layers_is_dropped_only_when_neither_is_resident() {
    let dir = tempdir();
    // Layer 0: bytes 8 + header .. ~6000; layer 1 starts on the same page as layer 0 ends.
    let tensors = vec![
        tensor("layers.0.w", "U8", &[6000], 1),
        tensor("layers.1.w", "U8", &[9000], 2),
    ];
    let path = write(dir.path(), "pair.safetensors", &safetensors_bytes(&tensors));
    let model = MappedModel::open(&path, config(MIB, Backend::Mapped)).unwrap();
    let (first, second) = (model.descriptor(0).unwrap(), model.descriptor(1).unwrap());
    assert_eq!(first.offset + first.size, second.offset);
    assert!(
        !second.offset.is_multiple_of(4096),
        "the layers share a page"
    );
    let whole = model.mapped_bytes(0).unwrap();
    let whole = {
        // The mapping from the file's start: layer 0's slice extended back to offset 0.
        // SAFETY: the mapping starts `first.offset` bytes before layer 0's slice
        // and holds the whole file; it lives as long as `model`.
        unsafe {
            std::slice::from_raw_parts(
                whole.as_ptr().sub(first.offset as usize),
                (second.offset + second.size) as usize,
            )
        }
    };
    let shared_page = second.offset as usize;
    let pinned = model.get(1).unwrap();
    let before = model.get(0).unwrap();
    drop(before);
    assert!(pinned.tensor("layers.1.w").unwrap().bytes == &tensors[1].data[..]);
    // Evict layer 0 while layer 1 is pinned: layer 0's own pages go, the shared one stays.
    model.release(0).unwrap();
    assert!(wait_for(|| model.stats().reclaim_pending_bytes == 0));
    assert!(
        wait_for(|| !page_resident(whole, first.offset as usize)),
        "layer 0's own first page was dropped"
    );
    assert!(page_resident(whole, shared_page), "the shared page stays");
    for at in (second.offset as usize..whole.len()).step_by(4096) {
        assert!(page_resident(whole, at), "layer 1's page at {at} stays");
    }
    assert!(pinned.tensor("layers.1.w").unwrap().bytes == &tensors[1].data[..]);
    // Now layer 1 goes too: nothing of either layer stays, the shared page included.
    drop(pinned);
    model.release(1).unwrap();
    assert!(wait_for(|| model.stats().reclaim_pending_bytes == 0));
    assert!(
        wait_for(|| !page_resident(whole, shared_page)),
        "the shared page is dropped once neither layer is resident"
    );
}

#[test]
fn streaming_under_a_third_keeps_charges_within_the_budget() {
    let dir = tempdir();
    let tensors = model_tensors(24);
    let bytes = safetensors_bytes(&tensors);
    let path = write(dir.path(), "stream.safetensors", &bytes);
    let budget = bytes.len() as u64 / 3;
    for backend in BACKENDS {
        let model = MappedModel::open(&path, config(budget, backend)).unwrap();
        for _pass in 0..2 {
            for index in 0..model.layer_count() {
                let guard = model.get(index).unwrap();
                assert!(!guard.is_empty());
                assert!(model.memory_usage() <= budget, "{backend:?}");
                if backend == Backend::Mapped {
                    let resident = model.resident_bytes();
                    assert!(resident <= budget + MIB, "{resident} > {budget} + 1 MiB");
                }
            }
        }
        assert_tensors(&model, &tensors);
    }
}

/// Random truncations and byte flips of valid safetensors and GGUF files:
/// every open either succeeds (and serves every layer) or is a typed error.
#[test]
fn mutated_headers_never_panic() {
    let dir = tempdir();
    let safetensors = safetensors_bytes(&model_tensors(2));
    let mut gguf = GgufWriter::new();
    gguf.string("general.name", "m")
        .tensor("blk.0.w", &[8, 8], 0, pattern(256, 1))
        .tensor("blk.1.w", &[64], 2, pattern(36, 2))
        .tensor("output.weight", &[4], 0, pattern(16, 3));
    let gguf = gguf.build();
    let path = dir.path().join("mutant");
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = splitmix64(state);
        state
    };
    let (mut opened, mut refused) = (0, 0);
    for original in [&safetensors, &gguf] {
        let header_end = if original[..4] == *b"GGUF" {
            original.len().min(400)
        } else {
            8 + u64::from_le_bytes(original[..8].try_into().unwrap()) as usize
        };
        for round in 0..1500 {
            let mut bytes = original.to_vec();
            if round % 3 == 0 {
                bytes.truncate(next() as usize % bytes.len());
            } else {
                for _ in 0..1 + next() % 4 {
                    let at = next() as usize % header_end;
                    bytes[at] ^= 1 << (next() % 8);
                }
            }
            std::fs::write(&path, &bytes).unwrap();
            let backend = BACKENDS[round % BACKENDS.len()];
            match MappedModel::open(&path, config(MIB, backend)) {
                Ok(model) => {
                    opened += 1;
                    for index in 0..model.layer_count() {
                        // A layer larger than the budget is a typed error too.
                        let _ = model.get(index).map(|guard| guard.len());
                    }
                }
                Err(
                    StoreError::Format { .. }
                    | StoreError::Io { .. }
                    | StoreError::FileChanged { .. }
                    | StoreError::InvalidConfig(_),
                ) => refused += 1,
                Err(other) => panic!("unexpected error kind: {other:?}"),
            }
        }
    }
    assert!(
        opened > 0 && refused > 0,
        "{opened} opened, {refused} refused"
    );
}

/// A layer whose tensors are not adjacent covers another layer's bytes:
/// evicting it must not drop the pages of that other layer while it is
/// pinned (a C caller's writes into its private pages would be lost).
#[test]
fn evicting_an_interleaved_layer_keeps_the_pinned_layer_inside_it() {
    let dir = tempdir();
    let tensors = vec![
        tensor("layers.0.a", "U8", &[10_000], 1),
        tensor("layers.1.a", "U8", &[20_000], 2),
        tensor("layers.0.b", "U8", &[100], 3),
    ];
    let path = write(
        dir.path(),
        "interleaved.safetensors",
        &safetensors_bytes(&tensors),
    );
    let model = MappedModel::open(&path, config(MIB, Backend::Mapped)).unwrap();
    let (outer, inner) = (model.descriptor(0).unwrap(), model.descriptor(1).unwrap());
    assert!(outer.offset < inner.offset && inner.offset + inner.size < outer.offset + outer.size);
    drop(model.get(0).unwrap());
    let pinned = model.get(1).unwrap();
    let pointer = model.mapped_ptr_mut(1).unwrap();
    let middle = inner.size as usize / 2;
    // SAFETY: layer 1 is pinned by `pinned`; the pointer is into the private
    // mapping (copy-on-write), as a C caller would write.
    unsafe { pointer.add(middle).write(!tensors[1].data[middle]) };
    model.release(0).unwrap();
    assert!(wait_for(|| model.stats().reclaim_pending_bytes == 0));
    assert_eq!(
        pinned[middle], !tensors[1].data[middle],
        "the write survives"
    );
    drop(pinned);
    // Once neither is held, both go and the file's bytes come back.
    model.release(1).unwrap();
    assert!(wait_for(|| model.stats().reclaim_pending_bytes == 0));
    assert!(model.get(1).unwrap().tensor("layers.1.a").unwrap().bytes == &tensors[1].data[..]);
}
