//! `Engine::request_claiming`: victims are claimed from the caller, refused
//! claims act as pins, and a bypass hands every claim back.
#![allow(clippy::unwrap_used)]

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

#[test]
fn evict_claiming_frees_in_policy_order_around_refusals() {
    for policy in [
        PolicyKind::Lru,
        PolicyKind::TinyAiClassic,
        PolicyKind::Adaptive,
    ] {
        let mut engine = engine(policy, 6, 4);
        for (now, id) in [0, 1, 2, 3].into_iter().enumerate() {
            let decision = engine.request(LayerId(id), AccessKind::Demand, now as u64);
            assert!(matches!(decision, Ok(Decision::Admit { .. })));
        }
        // Two layers' worth, with the least recently used one refused: the
        // next two in order go, the refused one stays and is not pinned after.
        let mut claims = Recorder {
            refuse: BTreeSet::from([0]),
            ..Recorder::default()
        };
        let victims = engine.evict_claiming(2 * 4096, 10, &[], &mut claims);
        assert_eq!(victims.len(), 2, "{policy:?}: {victims:?}");
        assert!(!victims.contains(&LayerId(0)), "{policy:?}");
        for victim in &victims {
            assert!(!engine.is_resident(*victim), "{policy:?}");
        }
        assert_eq!(engine.usage(), 2 * 4096, "{policy:?}");
        assert!(engine.is_resident(LayerId(0)), "{policy:?}");
        assert!(!engine.is_pinned(LayerId(0)), "{policy:?}");
        assert!(claims.released.is_empty(), "{policy:?}");

        // More than can be freed: everything claimable goes, no more.
        let victims = engine.evict_claiming(u64::MAX, 11, &[], &mut claims);
        assert_eq!(victims.len(), 1, "{policy:?}: {victims:?}");
        assert_eq!(engine.usage(), 4096, "{policy:?}");
        assert!(engine.is_resident(LayerId(0)), "{policy:?}");
        assert!(engine.evict_claiming(4096, 12, &[], &mut claims).is_empty());
    }
}

#[test]
fn evict_claiming_reaches_past_a_refused_newcomer() {
    for policy in [
        PolicyKind::Lru,
        PolicyKind::TinyAiClassic,
        PolicyKind::Adaptive,
    ] {
        let mut engine = engine(policy, 6, 4);
        for (now, id) in [0, 1, 2, 3].into_iter().enumerate() {
            let decision = engine.request(LayerId(id), AccessKind::Demand, now as u64);
            assert!(matches!(decision, Ok(Decision::Admit { .. })));
        }
        let victims = engine.evict_claiming(4096, 9, &[], &mut Recorder::default());
        assert_eq!(victims.len(), 1, "{policy:?}");
        let decision = engine.request(LayerId(4), AccessKind::Demand, 10);
        assert!(matches!(decision, Ok(Decision::Admit { .. })), "{policy:?}");
        // The newcomer is still loading: its claim fails; older entries go.
        let mut claims = Recorder {
            refuse: BTreeSet::from([4]),
            ..Recorder::default()
        };
        let victims = engine.evict_claiming(4096, 11, &[], &mut claims);
        assert_eq!(victims.len(), 1, "{policy:?}: {victims:?}");
        assert_ne!(victims[0], LayerId(4), "{policy:?}");
        // A refused entry stays a candidate for later plans: once nothing
        // refuses, everything resident can go.
        let victims = engine.evict_claiming(u64::MAX, 12, &[], &mut Recorder::default());
        assert!(victims.contains(&LayerId(4)), "{policy:?}: {victims:?}");
        assert_eq!(engine.usage(), 0, "{policy:?}: {victims:?}");
    }
}

#[test]
fn a_refused_claim_leaves_the_entry_evictable_later() {
    for policy in [
        PolicyKind::Lru,
        PolicyKind::TinyAiClassic,
        PolicyKind::Adaptive,
    ] {
        let mut engine = engine(policy, 8, 3);
        for (now, id) in [0, 1, 2].into_iter().enumerate() {
            let decision = engine.request(LayerId(id), AccessKind::Demand, now as u64);
            assert!(matches!(decision, Ok(Decision::Admit { .. })));
        }
        // Every resident refuses once (pinned): the request bypasses.
        let mut refusing = Recorder {
            refuse: BTreeSet::from([0, 1, 2]),
            ..Recorder::default()
        };
        let decision = engine.request_claiming(LayerId(3), AccessKind::Demand, 10, &mut refusing);
        assert!(matches!(decision, Ok(Decision::Bypass)), "{policy:?}");
        // Unpinned again: all three can be evicted.
        let victims = engine.evict_claiming(u64::MAX, 30, &[], &mut Recorder::default());
        assert_eq!(victims.len(), 3, "{policy:?}: {victims:?}");
        for id in [0, 1, 2] {
            assert!(
                !engine.is_resident(LayerId(id)),
                "{policy:?}: layer {id} stuck"
            );
        }
    }
}

#[test]
fn refusals_never_make_an_entry_unevictable() {
    // Random demand requests with random claim refusals (layers a caller has
    // pinned); after each, with nothing refused, the policy must be able to
    // evict every resident entry: a refused claim may not lose track of one.
    for policy in [
        PolicyKind::Lru,
        PolicyKind::TinyAiClassic,
        PolicyKind::Adaptive,
    ] {
        let mut seed = 0x5eed_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..40 {
            let config = EngineConfig {
                budget_bytes: 6 * 4096,
                min_layer_charge: 4096,
                page_size: 4096,
                policy,
            };
            let sizes: Vec<u64> = (0..12).map(|i| 4096 * (1 + i % 3)).collect();
            let mut engine = Engine::new(config, &sizes).unwrap();
            for step in 0..60u64 {
                let id = LayerId((next() % 12) as u32);
                let refuse: BTreeSet<u32> = (0..12).filter(|_| next() % 3 == 0).collect();
                let mut claims = Recorder {
                    refuse,
                    ..Recorder::default()
                };
                match next() % 6 {
                    5 => {
                        let _ = engine.remove(id);
                    }
                    4 => {
                        let _ = engine.record_hit(id, step);
                    }
                    0 => {
                        let _ = engine.evict_claiming(4096 * (next() % 3), step, &[], &mut claims);
                    }
                    1 => {
                        let _ = engine
                            .request_claiming(id, AccessKind::Prefetch, step, &mut claims)
                            .unwrap();
                    }
                    _ => {
                        let _ = engine
                            .request_claiming(id, AccessKind::Demand, step, &mut claims)
                            .unwrap();
                    }
                }
            }
            let resident = (0..12).filter(|&i| engine.is_resident(LayerId(i))).count();
            let victims = engine.evict_claiming(u64::MAX, 100, &[], &mut Recorder::default());
            assert_eq!(
                victims.len(),
                resident,
                "{policy:?} round {round}: evicted {victims:?}, usage left {}",
                engine.usage()
            );
        }
    }
}
