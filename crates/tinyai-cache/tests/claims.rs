//! `Engine::request_claiming`: victims are claimed from the caller, refused
//! claims act as pins, and a bypass hands every claim back.

use std::collections::BTreeSet;

use tinyai_cache::{AccessKind, Claims, Decision, Engine, EngineConfig, LayerId, PolicyKind};

#[derive(Default)]
struct Recorder {
    refuse: BTreeSet<u32>,
    claimed: Vec<u32>,
    released: Vec<u32>,
}

impl Claims for Recorder {
    fn claim(&mut self, id: LayerId) -> bool {
        if self.refuse.contains(&id.0) {
            return false;
        }
        self.claimed.push(id.0);
        true
    }

    fn release(&mut self, id: LayerId) {
        self.released.push(id.0);
    }
}

fn engine(policy: PolicyKind, layers: usize, budget_layers: u64) -> Engine {
    let config = EngineConfig {
        budget_bytes: budget_layers * 4096,
        min_layer_charge: 4096,
        page_size: 4096,
        policy,
    };
    Engine::new(config, &vec![4096; layers]).expect("valid config")
}

#[test]
fn refused_claims_are_skipped_like_pins() {
    for policy in [
        PolicyKind::Lru,
        PolicyKind::TinyAiClassic,
        PolicyKind::Adaptive,
    ] {
        let mut engine = engine(policy, 4, 2);
        for (now, id) in [0, 1].into_iter().enumerate() {
            let decision = engine.request(LayerId(id), AccessKind::Demand, now as u64);
            assert!(matches!(decision, Ok(Decision::Admit { .. })));
        }
        // Layer 0 is the least recently used; the caller says it is in use.
        let mut claims = Recorder {
            refuse: BTreeSet::from([0]),
            ..Recorder::default()
        };
        let decision = engine
            .request_claiming(LayerId(2), AccessKind::Demand, 10, &mut claims)
            .expect("known layer");
        if let Decision::Admit { victims } = &decision {
            assert_eq!(victims, &vec![LayerId(1)], "{policy:?}");
            assert_eq!(claims.claimed, vec![1], "{policy:?}");
            assert!(claims.released.is_empty(), "{policy:?}");
            assert!(engine.is_resident(LayerId(0)), "{policy:?}");
        } else {
            // A policy may decline; then nothing stays claimed.
            assert_eq!(claims.released, claims.claimed, "{policy:?}");
        }
        assert!(engine.usage() <= engine.budget());
        assert_eq!(
            engine.pin_count(LayerId(0)),
            Ok(0),
            "temporary pins are undone"
        );
        assert_eq!(engine.pin_count(LayerId(1)), Ok(0));
    }
}

#[test]
fn everything_refused_bypasses_and_releases() {
    // Needs two victims: layer 0 is claimed, layer 1 refused → bypass, 0 handed back.
    let mut big = Engine::new(
        EngineConfig {
            budget_bytes: 2 * 4096,
            min_layer_charge: 4096,
            page_size: 4096,
            policy: PolicyKind::Lru,
        },
        &[4096, 4096, 8192],
    )
    .expect("valid config");
    big.request(LayerId(0), AccessKind::Demand, 0)
        .expect("known layer");
    big.request(LayerId(1), AccessKind::Demand, 1)
        .expect("known layer");
    let mut claims = Recorder {
        refuse: BTreeSet::from([1]),
        ..Recorder::default()
    };
    let decision = big
        .request_claiming(LayerId(2), AccessKind::Demand, 2, &mut claims)
        .expect("known layer");
    assert_eq!(decision, Decision::Bypass);
    assert_eq!(claims.claimed, vec![0]);
    assert_eq!(claims.released, vec![0]);
    assert!(big.is_resident(LayerId(0)) && big.is_resident(LayerId(1)));
    assert_eq!(big.usage(), 2 * 4096);
    // The plain request, with no outside pins, would have evicted both.
    assert_eq!(
        big.request(LayerId(2), AccessKind::Demand, 3),
        Ok(Decision::Admit {
            victims: vec![LayerId(0), LayerId(1)]
        })
    );
}

#[test]
fn record_hit_ignores_layers_that_left() {
    let mut engine = engine(PolicyKind::Lru, 3, 1);
    engine
        .request(LayerId(0), AccessKind::Demand, 0)
        .expect("known layer");
    assert!(engine.record_hit(LayerId(0), 1));
    assert!(
        !engine.record_hit(LayerId(1), 2),
        "not resident: not admitted by a hit"
    );
    assert!(!engine.is_resident(LayerId(1)));
    assert!(!engine.record_hit(LayerId(9), 3), "unknown ids are ignored");
}
