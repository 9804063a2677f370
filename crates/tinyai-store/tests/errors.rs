//! Bad input gives typed errors, never a panic or a crash.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use common::*;
use tinyai_format::FormatError;
use tinyai_store::{Backend, MappedModel, StoreConfig, StoreError};

#[test]
fn bad_paths_and_files_are_typed_errors() {
    let dir = tempdir();
    let missing = dir.path().join("missing.tmai");
    assert!(matches!(
        MappedModel::open(&missing, StoreConfig::default()),
        Err(StoreError::Io { action: "open", .. })
    ));
    assert!(matches!(
        MappedModel::open(dir.path(), StoreConfig::default()),
        Err(StoreError::NotAFile { .. }) | Err(StoreError::Io { .. })
    ));
    let empty = dir.path().join("empty.tmai");
    std::fs::write(&empty, b"").unwrap();
    for backend in BACKENDS {
        assert!(matches!(
            MappedModel::open(&empty, config(MIB, backend)),
            Err(StoreError::Format {
                source: FormatError::Truncated { .. },
                ..
            })
        ));
    }
    let garbage = dir.path().join("garbage.tmai");
    std::fs::write(&garbage, vec![0xAB; 10_000]).unwrap();
    assert!(matches!(
        MappedModel::open(&garbage, StoreConfig::default()),
        Err(StoreError::Format {
            source: FormatError::BadMagic { .. },
            ..
        })
    ));
    // Models in other formats are recognised by content (names do not
    // matter): a safetensors file opens as it is; a GGUF file that ends
    // inside its header is a typed error naming the format.
    let mut safetensors = 59u64.to_le_bytes().to_vec();
    safetensors
        .extend_from_slice(br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}     "#);
    safetensors.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let path = dir.path().join("model.tmai");
    std::fs::write(&path, &safetensors).unwrap();
    for backend in BACKENDS {
        let model = MappedModel::open(&path, config(MIB, backend)).unwrap();
        assert_eq!(model.format().kind(), tinyai_format::FileKind::Safetensors);
        assert_eq!(&model.get(0).unwrap()[..], &[1, 2, 3, 4, 5, 6, 7, 8]);
    }
    let mut gguf = b"GGUF\x03\0\0\0".to_vec();
    gguf.extend_from_slice(&5u64.to_le_bytes()); // five tensors, none there
    let path = dir.path().join("model.bin");
    std::fs::write(&path, &gguf).unwrap();
    match MappedModel::open(&path, StoreConfig::default()) {
        Err(
            error @ StoreError::Format {
                source: FormatError::Source(_),
                ..
            },
        ) => assert!(error.to_string().contains("GGUF"), "{error}"),
        other => panic!("{other:?}"),
    }
    let fixture = fixture(1, &[10_000, 20_000], 1);
    let bytes = file_bytes(&fixture.path);
    for cut in [10, 100, 4096, bytes.len() / 2, bytes.len() - 1] {
        let truncated = dir.path().join(format!("truncated-{cut}.tmai"));
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        for backend in BACKENDS {
            let result = MappedModel::open(&truncated, config(MIB, backend));
            assert!(
                matches!(result, Err(StoreError::Format { .. })),
                "cut {cut}: {result:?}"
            );
        }
    }
}

#[test]
fn out_of_range_indices_are_typed_errors() {
    let fixture = fixture(2, &[1000, 2000], 1);
    let model = MappedModel::open(&fixture.path, StoreConfig::default()).unwrap();
    for index in [2, 3, u64::from(u32::MAX), u64::MAX] {
        assert!(matches!(
            model.get(index),
            Err(StoreError::LayerOutOfRange { .. })
        ));
        assert!(matches!(
            model.prefetch(index),
            Err(StoreError::LayerOutOfRange { .. })
        ));
        assert!(matches!(
            model.release(index),
            Err(StoreError::LayerOutOfRange { .. })
        ));
        assert!(matches!(
            model.descriptor(index),
            Err(StoreError::LayerOutOfRange { .. })
        ));
        assert!(matches!(
            model.set_priority(index, 1.0),
            Err(StoreError::LayerOutOfRange { .. })
        ));
    }
    assert!(matches!(
        model.set_access_order(Some(vec![0, 5])),
        Err(StoreError::LayerOutOfRange { index: 5, .. })
    ));
}

#[test]
fn absurd_configs_are_rejected() {
    let fixture = fixture(3, &[1000], 1);
    for config in [
        StoreConfig {
            max_cache_size: 0,
            ..StoreConfig::default()
        },
        StoreConfig {
            prefetch_threads: 10_000,
            ..StoreConfig::default()
        },
        StoreConfig {
            lookahead: 1 << 20,
            ..StoreConfig::default()
        },
        StoreConfig {
            min_layer_cache_size: u64::MAX,
            ..StoreConfig::default()
        },
        StoreConfig {
            policy: Some(tinyai_store::PolicyKind::FurthestNextUse),
            ..StoreConfig::default()
        },
    ] {
        assert!(matches!(
            MappedModel::open(&fixture.path, config),
            Err(StoreError::InvalidConfig(_))
        ));
    }
}

#[test]
fn a_flipped_byte_is_reported_by_checksum_verification() {
    let fixture = fixture(4, &[50_000, 60_000, 70_000], 2);
    flip_byte_in_layer(&fixture, 1, 12_345);
    for backend in BACKENDS {
        // Explicit verification.
        let model = MappedModel::open(&fixture.path, config(MIB, backend)).unwrap();
        model.verify_layer(0).unwrap();
        assert!(matches!(
            model.verify_layer(1),
            Err(StoreError::Format {
                source: FormatError::ChecksumMismatch { layer: 1, .. },
                ..
            })
        ));
        // Without verify_checksums the corrupt layer is served as is.
        assert!(model.get(1).is_ok());
        // With verify_checksums it is refused on first load, and stays refused.
        let verifying = StoreConfig {
            verify_checksums: true,
            ..config(MIB, backend)
        };
        let model = MappedModel::open(&fixture.path, verifying).unwrap();
        assert!(model.get(0).is_ok());
        for _ in 0..2 {
            assert!(matches!(
                model.get(1),
                Err(StoreError::Format {
                    source: FormatError::ChecksumMismatch { .. },
                    ..
                })
            ));
        }
        assert!(model.get(2).is_ok());
        assert_eq!(model.stats().checksum_failures, 2);
        assert_eq!(
            model.cached_bytes(),
            model.descriptor(0).unwrap().charge + model.descriptor(2).unwrap().charge
        );
    }
}

#[test]
fn owned_backend_survives_the_file_being_truncated_underneath() {
    let fixture = fixture(5, &[100_000; 8], 1);
    for direct_io in [false, true] {
        let model =
            MappedModel::open(&fixture.path, config(MIB, Backend::Owned { direct_io })).unwrap();
        let held = model.get(0).unwrap();
        let copy = held.to_vec();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&fixture.path)
            .unwrap();
        file.set_len(50_000).unwrap();
        let result = model.get(5);
        assert!(
            matches!(
                result,
                Err(StoreError::FileChanged { .. }) | Err(StoreError::ShortRead { .. })
            ),
            "{result:?}"
        );
        // Memory already served stays valid and unchanged.
        assert_eq!(&held[..], &copy[..]);
        drop(held);
        // Restore for the next round.
        tinyai_format::fixtures::write_fixture_file(&fixture.spec, &fixture.path).unwrap();
    }
}

#[test]
fn mapped_backend_refuses_to_load_from_a_truncated_file() {
    let fixture = fixture(6, &[100_000; 8], 1);
    let model = MappedModel::open(&fixture.path, config(MIB, Backend::Mapped)).unwrap();
    drop(model.get(0).unwrap());
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&fixture.path)
        .unwrap();
    file.write_all(b"appended").unwrap();
    assert!(matches!(model.get(6), Err(StoreError::FileChanged { .. })));
}

#[test]
fn a_file_replaced_by_rename_does_not_affect_the_open_model() {
    let fixture = fixture(7, &[100_000; 4], 1);
    let model = MappedModel::open(&fixture.path, config(MIB, Backend::Mapped)).unwrap();
    // Writers replace files atomically (temp file + rename): the open model keeps
    // its own inode and goes on serving the old bytes.
    let other = tinyai_format::fixtures::FixtureSpec::uniform(99, 4096, &[5; 2], 1);
    tinyai_format::fixtures::write_fixture_file(&other, &fixture.path).unwrap();
    for index in 0..4 {
        assert_layer_matches(&model, &fixture, index);
    }
}
