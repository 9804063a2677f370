//! Fuzz target: like `parse`, but a v2 input gets its table and header CRC-32Cs
//! recomputed first, so the fuzzer explores the validation behind the checksums
//! (layers, tensors, strings) instead of stopping at a checksum mismatch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinyai_format::Model;
use tinyai_format::checksum::{crc32c, crc32c_append};
use tinyai_format::raw::MAGIC_V2;

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn reseal(bytes: &mut [u8]) {
    if bytes.len() < 128 || bytes[..8] != MAGIC_V2 {
        return;
    }
    let start = u64_at(bytes, 40);
    let end = u64_at(bytes, 80).checked_add(u64_at(bytes, 88));
    if let Some(end) = end
        && start <= end
        && end <= bytes.len() as u64
    {
        let crc = crc32c(&bytes[start as usize..end as usize]);
        bytes[120..124].copy_from_slice(&crc.to_le_bytes());
    }
    let mut size = [0u8; 4];
    size.copy_from_slice(&bytes[12..16]);
    let header_size = (u32::from_le_bytes(size) as usize).clamp(128, bytes.len().min(4096));
    let crc = crc32c_append(crc32c(&bytes[..124]), &bytes[128..header_size]);
    bytes[124..128].copy_from_slice(&crc.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    reseal(&mut bytes);
    if let Ok(model) = Model::parse(&bytes) {
        for info in model.layers() {
            if let Ok(tensors) = model.layer_tensors(info.index) {
                for tensor in tensors {
                    let _ = (
                        tensor.shape(),
                        tensor.element_count(),
                        tensor.range_in_layer(),
                    );
                }
            }
            let _ = model.layer_bytes(info.index);
        }
        for index in 0..model.tensor_count().min(100_000) {
            let _ = model.tensor(index);
        }
        let _ = model.metadata().count();
        let _ = model.verify_all();
    }
});
