//! Fuzz target: the safetensors readers over arbitrary bytes never panic.
//! The input is read as a whole safetensors file (its header parsed against
//! the input's length), as a sharded set's index JSON, and through content
//! detection; a header that parses is grouped into layers, and every
//! tensor's range must lie inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinyai_format::grouping::Grouping;
use tinyai_format::safetensors::header_bytes_needed;
use tinyai_format::{ForeignModel, SafetensorsHeader, ShardIndex, detect, group_layers};

fuzz_target!(|data: &[u8]| {
    let length = data.len() as u64;
    let _ = detect(data, length);
    let _ = header_bytes_needed(data, length);
    if let Ok(header) = SafetensorsHeader::parse(data, length) {
        for tensor in &header.tensors {
            assert!(
                tensor.start <= tensor.end && tensor.end <= length,
                "tensor {} runs past the file",
                tensor.name
            );
        }
        let _ = group_layers(&header.tensors, &Grouping::Default);
        if let Ok(index) = ShardIndex::parse(br#"{"weight_map": {}}"#) {
            let _ = index.check_shards(std::slice::from_ref(&header));
        }
        // The direct view the store opens: every layer inside the file and
        // every tensor inside its layer.
        let direct = ForeignModel::from_safetensors(header, &Grouping::Default)
            .expect("a parsed header's tensors lie in the file");
        let model = direct.model();
        for layer in model.layers() {
            assert!(layer.offset + layer.length <= length, "layer past the file");
            for tensor in model.layer_tensors(layer.index).unwrap() {
                assert!(tensor.offset_in_layer + tensor.length <= layer.length);
            }
        }
    }
    if let Ok(index) = ShardIndex::parse(data) {
        let _ = index.check_shards(&[]);
    }
});
