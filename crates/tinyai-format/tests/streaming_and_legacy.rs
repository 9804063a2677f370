//! The writer streams large layers from a reader; the legacy C test file opens.
#![allow(clippy::unwrap_used)]

use std::io::Read;

use tinyai_format::fixtures::{
    self, FixtureReader, FixtureSpec, check_layer_bytes, fixture_byte, legacy_c_test_model,
};
use tinyai_format::{DType, FileWriter, FormatError, Model, TensorSpec, WriterOptions};

/// A reader that hands out at most `chunk` bytes per call (short reads).
struct Trickle<R> {
    inner: R,
    chunk: usize,
}

impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let limit = buffer.len().min(self.chunk);
        self.inner.read(&mut buffer[..limit])
    }
}

#[test]
#[cfg_attr(miri, ignore = "writes and reads files (Miri runs with isolation)")]
fn a_64_mib_layer_streams_from_a_lazy_reader() {
    const SIZE: u64 = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tmai");
    let mut file = FileWriter::create(&path, WriterOptions::default()).unwrap();
    let writer = file.writer();
    writer.add_metadata("general.name", "streamed").unwrap();
    {
        let mut layer = writer.begin_layer("big").unwrap();
        // Layer positions 0..SIZE hold fixture bytes of seed 42, layer 0.
        let mut source = FixtureReader::new(42, 0, 0, SIZE);
        layer
            .add_tensor_from_reader(
                &TensorSpec::new("weight", DType::U8, &[SIZE]),
                &mut source,
                SIZE,
            )
            .unwrap();
        layer.finish().unwrap();
    }
    {
        let mut layer = writer.begin_layer("trickled").unwrap();
        let mut source = Trickle {
            inner: FixtureReader::new(42, 1, 0, 4000),
            chunk: 7,
        };
        layer
            .add_tensor_from_reader(
                &TensorSpec::new("weight", DType::F32, &[1000]),
                &mut source,
                4000,
            )
            .unwrap();
        layer.finish().unwrap();
    }
    // Nothing is visible at the destination before commit.
    assert!(!path.exists());
    file.commit().unwrap();

    let bytes = std::fs::read(&path).unwrap();
    let model = Model::parse(&bytes).unwrap();
    model.verify_all().unwrap();
    let big = model.layer(0).unwrap();
    assert_eq!(big.length, SIZE);
    assert_eq!(big.offset % 4096, 0);
    let data = model.layer_bytes(0).unwrap();
    assert_eq!(check_layer_bytes(42, &model, 0, data).unwrap(), None);
    assert_eq!(data[12_345_678], fixture_byte(42, 0, 12_345_678));
    assert_eq!(
        check_layer_bytes(42, &model, 1, model.layer_bytes(1).unwrap()).unwrap(),
        None
    );
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
#[cfg_attr(miri, ignore = "writes and reads files (Miri runs with isolation)")]
fn an_abandoned_file_writer_leaves_the_destination_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.tmai");
    fixtures::write_fixture_file(&fixtures::tiny(), &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    {
        let mut file = FileWriter::create(&path, WriterOptions::default()).unwrap();
        file.writer()
            .add_metadata("general.name", "never committed")
            .unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
#[cfg_attr(miri, ignore = "writes and reads files (Miri runs with isolation)")]
fn large_fixture_spec_is_varied_and_streams() {
    let spec = fixtures::large(40 << 20);
    assert_eq!(spec.data_bytes().unwrap(), 40 << 20);
    assert!(spec.layers.len() > 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.tmai");
    fixtures::write_fixture_file(&spec, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let model = Model::parse(&bytes).unwrap();
    model.verify_all().unwrap();
    assert_eq!(model.layer_count(), spec.layers.len() as u64);
    for layer in 0..model.layer_count() {
        let data = model.layer_bytes(layer).unwrap();
        assert_eq!(
            check_layer_bytes(spec.seed, &model, layer, data).unwrap(),
            None
        );
    }
    let uniform = FixtureSpec::uniform(1, 64, &[10, 0, 7], 3);
    let model_bytes = fixtures::fixture_bytes(&uniform).unwrap();
    let model = Model::parse(&model_bytes).unwrap();
    assert_eq!(model.tensor_count(), 9);
    assert_eq!(model.layer(0).unwrap().length, 64 * 2 + 4);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "builds and checks 10 MiB of layer data: too slow under Miri"
)]
fn the_c_test_generators_file_opens() {
    let spec = legacy_c_test_model();
    let bytes = fixtures::legacy_bytes(&spec).unwrap();
    assert_eq!(bytes.len(), 256 + 10 * 32 + 10 * (1 << 20));
    let model = Model::parse(&bytes).unwrap();
    assert!(model.is_legacy());
    assert_eq!(model.version().major, 1);
    assert_eq!(model.layer_count(), 10);
    assert_eq!(model.tensor_count(), 0);
    assert_eq!(model.alignment(), 1);
    assert_eq!(model.metadata_value("general.name"), Some("Test Model"));
    assert_eq!(
        model.metadata().collect::<Vec<_>>(),
        vec![("general.name", "Test Model")]
    );
    for index in 0..10u64 {
        let info = model.layer(index).unwrap();
        assert_eq!(info.offset, 256 + 10 * 32 + index * (1 << 20));
        assert_eq!(info.length, 1 << 20);
        assert_eq!(info.precision_bits, 4);
        assert_eq!(info.name, None);
        assert_eq!(info.checksum, None);
        assert_eq!(info.dtype, DType::Opaque);
        assert_eq!(model.layer_tensors(index).unwrap().count(), 0);
        let data = model.layer_bytes(index).unwrap();
        assert!(data.iter().all(|&b| b == index as u8), "layer {index}");
        assert!(matches!(
            model.verify_layer(index),
            Err(FormatError::NoChecksum { layer }) if layer == index
        ));
    }
    assert!(matches!(
        model.verify_all(),
        Err(FormatError::NoChecksum { layer: 0 })
    ));
    assert!(matches!(
        model.layer(10),
        Err(FormatError::LayerIndexOutOfRange {
            index: 10,
            count: 10
        })
    ));
    // The header and table alone locate and parse the same way.
    let location = tinyai_format::locate_tables(&bytes[..4096], bytes.len() as u64).unwrap();
    assert_eq!(location.tables, 256..256 + 320);
    let parts =
        Model::parse_parts(&bytes[..256], &bytes[256..576], 256, bytes.len() as u64).unwrap();
    assert_eq!(
        parts.layers().collect::<Vec<_>>(),
        model.layers().collect::<Vec<_>>()
    );
}

#[test]
fn legacy_files_with_layers_out_of_order_and_empty_layers_open() {
    // The C layout allows any order; empty layers may sit right after the table.
    let mut bytes =
        fixtures::write_legacy_v1(Vec::new(), "x", &[4, 0, 8], |layer, _| layer as u8 + 1).unwrap();
    // Swap the table entries of layers 0 and 2.
    let (first, last) = (256..288, 320..352);
    let entry0: Vec<u8> = bytes[first.clone()].to_vec();
    let entry2: Vec<u8> = bytes[last.clone()].to_vec();
    bytes[first].copy_from_slice(&entry2);
    bytes[last].copy_from_slice(&entry0);
    let model = Model::parse(&bytes).unwrap();
    assert_eq!(model.layer_bytes(0).unwrap(), &[3; 8]);
    assert_eq!(model.layer_bytes(1).unwrap(), &[] as &[u8]);
    assert_eq!(model.layer_bytes(2).unwrap(), &[1; 4]);
}
