//! Helpers shared by the integration tests: little-endian field patching of
//! `.tmai` files, re-sealing (recomputing the table and header CRCs after a
//! patch so that later validation steps are reached), and exercising every
//! accessor of a parsed model.
#![allow(dead_code)]

use tinyai_format::checksum::{crc32c, crc32c_append};
use tinyai_format::{FormatError, Model};

/// Byte offsets of the v2 header fields.
pub mod header {
    pub const MAJOR: usize = 8;
    pub const HEADER_SIZE: usize = 12;
    pub const FILE_LENGTH: usize = 16;
    pub const ALIGNMENT: usize = 24;
    pub const LAYER_COUNT: usize = 32;
    pub const LAYER_TABLE_OFFSET: usize = 40;
    pub const TENSOR_COUNT: usize = 48;
    pub const TENSOR_TABLE_OFFSET: usize = 56;
    pub const METADATA_COUNT: usize = 64;
    pub const METADATA_TABLE_OFFSET: usize = 72;
    pub const STRING_TABLE_OFFSET: usize = 80;
    pub const STRING_TABLE_LENGTH: usize = 88;
    pub const TABLES_CRC: usize = 120;
    pub const HEADER_CRC: usize = 124;
}

/// Byte offsets within a 64-byte v2 layer entry.
pub mod layer {
    pub const SIZE: usize = 64;
    pub const OFFSET: usize = 0;
    pub const LENGTH: usize = 8;
    pub const NAME_OFFSET: usize = 16;
    pub const NAME_LENGTH: usize = 24;
    pub const CHECKSUM: usize = 28;
    pub const FIRST_TENSOR: usize = 32;
    pub const TENSOR_COUNT: usize = 40;
    pub const DTYPE: usize = 48;
    pub const PRECISION: usize = 50;
    pub const FLAGS: usize = 52;
}

/// Byte offsets within a 104-byte v2 tensor entry.
pub mod tensor {
    pub const SIZE: usize = 104;
    pub const NAME_OFFSET: usize = 0;
    pub const NAME_LENGTH: usize = 8;
    pub const DTYPE: usize = 12;
    pub const RANK: usize = 14;
    pub const OFFSET: usize = 16;
    pub const LENGTH: usize = 24;
    pub const SHAPE: usize = 32;
    pub const SOURCE_TYPE: usize = 96;
}

/// Byte offsets within a 24-byte v2 metadata entry.
pub mod metadata {
    pub const SIZE: usize = 24;
    pub const KEY_OFFSET: usize = 0;
    pub const VALUE_OFFSET: usize = 8;
    pub const KEY_LENGTH: usize = 16;
    pub const VALUE_LENGTH: usize = 20;
}

/// Byte offsets of the legacy v1 header and table entries.
pub mod v1 {
    pub const VERSION: usize = 4;
    pub const LAYER_COUNT: usize = 8;
    pub const NAME: usize = 16;
    pub const TABLE: usize = 256;
    pub const ENTRY_SIZE: usize = 32;
    pub const OFFSET: usize = 0;
    pub const SIZE: usize = 4;
    pub const PRECISION: usize = 8;
}

pub fn get_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}
pub fn get_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}
pub fn get_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}
pub fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}
pub fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}
pub fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Absolute offset of field `field` of layer entry `index` of a v2 file.
pub fn layer_field(bytes: &[u8], index: usize, field: usize) -> usize {
    get_u64(bytes, header::LAYER_TABLE_OFFSET) as usize + index * layer::SIZE + field
}
/// Absolute offset of field `field` of tensor entry `index` of a v2 file.
pub fn tensor_field(bytes: &[u8], index: usize, field: usize) -> usize {
    get_u64(bytes, header::TENSOR_TABLE_OFFSET) as usize + index * tensor::SIZE + field
}
/// Absolute offset of field `field` of metadata entry `index` of a v2 file.
pub fn metadata_field(bytes: &[u8], index: usize, field: usize) -> usize {
    get_u64(bytes, header::METADATA_TABLE_OFFSET) as usize + index * metadata::SIZE + field
}
/// Absolute offset of field `field` of legacy v1 layer entry `index`.
pub fn v1_field(index: usize, field: usize) -> usize {
    v1::TABLE + index * v1::ENTRY_SIZE + field
}

/// Recomputes the header CRC (bytes 0..124 then 128..header_size) of a v2 file.
pub fn reseal_header(bytes: &mut [u8]) {
    if bytes.len() < 128 {
        return;
    }
    let header_size =
        (get_u32(bytes, header::HEADER_SIZE) as usize).clamp(128, bytes.len().min(4096));
    let crc = crc32c_append(crc32c(&bytes[..124]), &bytes[128..header_size]);
    put_u32(bytes, header::HEADER_CRC, crc);
}

/// Recomputes the tables CRC (when the table region lies inside the file), then the header CRC.
pub fn reseal(bytes: &mut [u8]) {
    if bytes.len() < 128 {
        return;
    }
    let start = get_u64(bytes, header::LAYER_TABLE_OFFSET);
    let end = get_u64(bytes, header::STRING_TABLE_OFFSET)
        .checked_add(get_u64(bytes, header::STRING_TABLE_LENGTH));
    if let Some(end) = end
        && start <= end
        && end <= bytes.len() as u64
    {
        let crc = crc32c(&bytes[start as usize..end as usize]);
        put_u32(bytes, header::TABLES_CRC, crc);
    }
    reseal_header(bytes);
}

/// Parses `bytes`; on success calls every accessor of the model (none may panic),
/// and checks that `locate_tables` + `parse_parts` agree with `parse`.
pub fn parse_and_exercise(bytes: &[u8]) -> Result<(), FormatError> {
    let model = match Model::parse(bytes) {
        Ok(model) => model,
        Err(error) => {
            // Display must work for every error.
            assert!(!error.to_string().is_empty());
            return Err(error);
        }
    };
    exercise(&model);
    let location = tinyai_format::locate_tables(bytes, bytes.len() as u64)?;
    let tables = &bytes[location.tables.start as usize..location.tables.end as usize];
    let parts = Model::parse_parts(bytes, tables, location.tables.start, bytes.len() as u64)?;
    assert_eq!(
        parts.layers().collect::<Vec<_>>(),
        model.layers().collect::<Vec<_>>()
    );
    assert_eq!(
        parts.metadata().collect::<Vec<_>>(),
        model.metadata().collect::<Vec<_>>()
    );
    assert!(matches!(
        parts.layer_bytes(0),
        Err(FormatError::NoLayerData | FormatError::LayerIndexOutOfRange { .. })
    ));
    exercise(&parts);
    Ok(())
}

/// Calls every accessor of `model`; returns nothing, must not panic.
pub fn exercise(model: &Model<'_>) {
    let _ = (
        model.version(),
        model.is_legacy(),
        model.file_length(),
        model.alignment(),
    );
    let layer_count = model.layer_count();
    let tensor_count = model.tensor_count();
    for info in model.layers() {
        let _ = info.byte_range();
        if let Some(name) = info.name {
            let _ = model.layer_by_name(name);
        }
        if let Ok(tensors) = model.layer_tensors(info.index) {
            for tensor in tensors {
                let _ = (
                    tensor.shape(),
                    tensor.element_count(),
                    tensor.range_in_layer(),
                );
                let _ = model.find_tensor(info.index, tensor.name);
            }
        }
        let _ = model.layer_bytes(info.index);
        let _ = model.verify_layer(info.index);
        let _ = model.verify_layer_bytes(info.index, &[]);
    }
    for index in 0..tensor_count.min(10_000) {
        if let Some(tensor) = model.tensor(index) {
            let _ = (
                tensor.shape(),
                tensor.element_count(),
                tensor.range_in_layer(),
            );
        }
    }
    let _ = model.tensor(tensor_count);
    let _ = model.tensor(u64::MAX);
    let _ = model.layer(layer_count);
    let _ = model.layer(u64::MAX);
    let _ = model.layer_bytes(u64::MAX);
    let _ = model.layer_tensors(u64::MAX).map(|tensors| tensors.count());
    for (key, _) in model.metadata() {
        let _ = model.metadata_value(key);
    }
    let _ = model.metadata_value("general.name");
    let _ = model.verify_all();
}
