//! Bytes of a layer without loading it: `read_tensor_bytes` (gathering rows
//! of a table larger than the budget) and `verify_layer_from_file`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tinyai_format::FormatError;
use tinyai_format::fixtures;
use tinyai_store::{MappedModel, StoreConfig, StoreError};

/// Layer 1 (2 MiB, two tensors) is larger than the 1 MiB budget.
fn big_layer_fixture() -> Fixture {
    fixture(11, &[300_000, 2 << 20, 200_000], 2)
}

#[test]
fn reads_tensor_bytes_of_a_layer_larger_than_the_budget_without_charging() {
    let fixture = big_layer_fixture();
    let expected = fixtures::expected_layer_bytes(&fixture.spec, 1)
        .unwrap()
        .unwrap();
    for backend in BACKENDS {
        let model = MappedModel::open(&fixture.path, config(MIB, backend)).unwrap();
        let descriptor = model.descriptor(1).unwrap();
        assert!(descriptor.charge > MIB);
        let names: Vec<String> = model
            .format()
            .layer_tensors(1)
            .unwrap()
            .map(|t| t.name.to_owned())
            .collect();
        let before = model.stats();
        let mut read = 0u64;
        for name in &names {
            let range = model.tensor_range(1, name).unwrap();
            // "Rows": 1000-byte pieces at scattered places, and the tensor's last byte.
            for start in [0usize, 4096, 123_457, range.len() - 1000] {
                let mut buf = vec![0u8; 1000];
                model
                    .read_tensor_bytes(1, name, start as u64, &mut buf)
                    .unwrap();
                let at = range.start + start;
                assert_eq!(
                    buf[..],
                    expected[at..at + 1000],
                    "{backend:?} {name} @{start}"
                );
                read += 1000;
            }
        }
        let after = model.stats();
        assert_eq!(model.memory_usage(), 0, "{backend:?}: nothing charged");
        assert_eq!(after.misses, before.misses, "{backend:?}: nothing loaded");
        assert_eq!(after.bytes_read - before.bytes_read, read);
        // The layer still loads normally afterwards.
        assert_layer_matches(&model, &fixture, 1);
    }
}

#[test]
fn partial_reads_outside_the_tensor_are_typed_errors() {
    let fixture = big_layer_fixture();
    let model = MappedModel::open(&fixture.path, config(MIB, BACKENDS[0])).unwrap();
    let name = model
        .format()
        .layer_tensors(0)
        .unwrap()
        .next()
        .unwrap()
        .name
        .to_owned();
    let len = model.tensor_range(0, &name).unwrap().len() as u64;
    let mut buf = [0u8; 16];
    for start in [len - 15, len, u64::MAX - 4] {
        assert!(
            matches!(
                model.read_tensor_bytes(0, &name, start, &mut buf),
                Err(StoreError::View { layer: 0, .. })
            ),
            "start {start}"
        );
    }
    assert!(
        model
            .read_tensor_bytes(0, &name, len - 16, &mut buf)
            .is_ok()
    );
    assert!(matches!(
        model.read_tensor_bytes(0, "no.such.tensor", 0, &mut buf),
        Err(StoreError::NoSuchTensor { layer: 0, .. })
    ));
    assert!(matches!(
        model.read_tensor_bytes(3, &name, 0, &mut buf),
        Err(StoreError::LayerOutOfRange { index: 3, .. })
    ));
    assert!(matches!(
        model.verify_layer_from_file(3),
        Err(StoreError::LayerOutOfRange { index: 3, .. })
    ));
}

#[test]
fn verify_layer_from_file_checks_a_layer_larger_than_the_budget_and_counts() {
    let fixture = big_layer_fixture();
    for backend in BACKENDS {
        let model = MappedModel::open(&fixture.path, config(MIB, backend)).unwrap();
        for index in 0..3 {
            model.verify_layer_from_file(index).unwrap();
        }
        let stats = model.stats();
        assert_eq!((stats.checksums_verified, stats.checksum_failures), (3, 0));
        assert_eq!(model.memory_usage(), 0, "{backend:?}");
    }
    flip_byte_in_layer(&fixture, 1, (1 << 20) + 17);
    for backend in BACKENDS {
        let model = MappedModel::open(&fixture.path, config(MIB, backend)).unwrap();
        assert!(matches!(
            model.verify_layer_from_file(1),
            Err(StoreError::Format {
                source: FormatError::ChecksumMismatch { layer: 1, .. },
                ..
            })
        ));
        model.verify_layer_from_file(0).unwrap();
        let stats = model.stats();
        assert_eq!((stats.checksums_verified, stats.checksum_failures), (1, 1));
    }
}

#[test]
fn loads_with_verify_checksums_count_each_verification() {
    let fixture = fixture(12, &[50_000, 60_000, 70_000], 2);
    for backend in BACKENDS {
        let verifying = StoreConfig {
            verify_checksums: true,
            ..config(MIB, backend)
        };
        let model = MappedModel::open(&fixture.path, verifying).unwrap();
        for index in [0, 1, 2, 1, 0] {
            drop(model.get(index).unwrap());
        }
        // Three loads, three verifications; hits verify nothing again.
        assert_eq!(model.stats().checksums_verified, 3, "{backend:?}");
    }
}
