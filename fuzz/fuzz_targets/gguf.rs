//! Fuzz target: the GGUF v2/v3 header reader over arbitrary bytes never
//! panics; a header that parses is grouped into layers, and every tensor's
//! range must lie inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinyai_format::grouping::Grouping;
use tinyai_format::{ForeignModel, GgufHeader, detect, group_layers};

fuzz_target!(|data: &[u8]| {
    let length = data.len() as u64;
    let _ = detect(data, length);
    if let Ok(header) = GgufHeader::parse(data, length) {
        for tensor in &header.tensors {
            assert!(
                tensor.start <= tensor.end && tensor.end <= length,
                "tensor {} runs past the file",
                tensor.name
            );
        }
        for entry in &header.metadata {
            let _ = header.metadata_value(&entry.key);
        }
        let _ = group_layers(&header.tensors, &Grouping::Default);
        // The direct view the store opens: every layer inside the file and
        // every tensor inside its layer.
        let direct = ForeignModel::from_gguf(header, data, &Grouping::Default)
            .expect("a parsed header's tensors lie in the file");
        let model = direct.model();
        for layer in model.layers() {
            assert!(layer.offset + layer.length <= length, "layer past the file");
            for tensor in model.layer_tensors(layer.index).unwrap() {
                assert!(tensor.offset_in_layer + tensor.length <= layer.length);
            }
        }
        let _ = model.metadata().count();
    }
});
