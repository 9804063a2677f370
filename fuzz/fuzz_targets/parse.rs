//! Fuzz target: `Model::parse` over arbitrary bytes must never panic, and a
//! model that parses must answer every accessor without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinyai_format::{Model, locate_tables};

fuzz_target!(|data: &[u8]| {
    let Ok(model) = Model::parse(data) else {
        return;
    };
    exercise(&model);
    // The header-and-tables path must accept what `parse` accepts.
    let location = match locate_tables(data, data.len() as u64) {
        Ok(location) => location,
        Err(error) => panic!("parse succeeded but locate_tables failed: {error}"),
    };
    let tables = &data[location.tables.start as usize..location.tables.end as usize];
    match Model::parse_parts(data, tables, location.tables.start, data.len() as u64) {
        Ok(parts) => exercise(&parts),
        Err(error) => panic!("parse succeeded but parse_parts failed: {error}"),
    }
});

fn exercise(model: &Model<'_>) {
    let _ = (
        model.version(),
        model.is_legacy(),
        model.file_length(),
        model.alignment(),
    );
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
    }
    for index in 0..model.tensor_count().min(100_000) {
        let _ = model.tensor(index).map(|t| t.element_count());
    }
    let _ = model.layer(u64::MAX);
    let _ = model.tensor(u64::MAX);
    for (key, _) in model.metadata() {
        let _ = model.metadata_value(key);
    }
    let _ = model.verify_all();
}
