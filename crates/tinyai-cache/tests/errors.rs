//! Data-driven error cases.
#![allow(clippy::unwrap_used, missing_docs)]

use tinyai_cache::{AccessKind, CacheError, Engine, EngineConfig, LayerId, PolicyKind};

fn config(budget_bytes: u64, page_size: u64) -> EngineConfig {
    EngineConfig {
        budget_bytes,
        min_layer_charge: 4096,
        page_size,
        policy: PolicyKind::Adaptive,
    }
}

#[test]
fn invalid_configs() {
    let cases: &[(u64, u64, CacheError)] = &[
        (0, 4096, CacheError::ZeroBudget),
        (1 << 20, 0, CacheError::InvalidPageSize { page_size: 0 }),
        (
            1 << 20,
            3000,
            CacheError::InvalidPageSize { page_size: 3000 },
        ),
        (
            1 << 20,
            4097,
            CacheError::InvalidPageSize { page_size: 4097 },
        ),
    ];
    for (budget, page, expected) in cases {
        let err = Engine::new(config(*budget, *page), &[1, 2, 3]).unwrap_err();
        assert_eq!(&err, expected, "budget {budget} page {page}");
    }
}

#[test]
fn unknown_ids() {
    let mut e = Engine::new(config(1 << 20, 4096), &[10, 20]).unwrap();
    let bad = LayerId(2);
    let expected = CacheError::UnknownLayer {
        id: bad,
        layer_count: 2,
    };
    let results: Vec<(&str, Result<(), CacheError>)> = vec![
        ("charge", e.charge(bad).map(drop)),
        ("request", e.request(bad, AccessKind::Demand, 0).map(drop)),
        ("remove", e.remove(bad).map(drop)),
        ("pin", e.pin(bad).map(drop)),
        ("unpin", e.unpin(bad)),
        ("set_priority", e.set_priority(bad, 0.3)),
        ("set_priority NaN", e.set_priority(bad, f32::NAN)),
        ("priority", e.priority(bad).map(drop)),
        ("pin_count", e.pin_count(bad).map(drop)),
    ];
    for (what, result) in results {
        assert_eq!(result, Err(expected.clone()), "{what}");
    }
    assert!(!e.is_resident(bad));
}

#[test]
fn pin_and_priority_errors() {
    let mut e = Engine::new(config(1 << 20, 4096), &[10, 20]).unwrap();
    assert_eq!(
        e.unpin(LayerId(0)),
        Err(CacheError::NotPinned { id: LayerId(0) })
    );
    assert_eq!(e.pin(LayerId(0)), Ok(false), "not resident: nothing to pin");
    assert_eq!(
        e.set_priority(LayerId(1), f32::NAN),
        Err(CacheError::NanPriority { id: LayerId(1) })
    );
    let clamps: &[(f32, f32)] = &[
        (f32::INFINITY, 1.0),
        (f32::NEG_INFINITY, 0.0),
        (7.0, 1.0),
        (-0.5, 0.0),
        (0.25, 0.25),
    ];
    for &(given, stored) in clamps {
        e.set_priority(LayerId(1), given).unwrap();
        assert_eq!(e.priority(LayerId(1)).unwrap(), stored, "{given}");
    }
}

#[test]
fn charges() {
    let e = Engine::new(config(1 << 20, 4096), &[0, 1, 4096, 4097, u64::MAX]).unwrap();
    let expected = [4096, 4096, 4096, 8192, u64::MAX];
    for (i, want) in expected.into_iter().enumerate() {
        assert_eq!(e.charge(LayerId(i as u32)).unwrap(), want, "layer {i}");
    }
}
