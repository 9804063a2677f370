//! TinyAI's unbounded priority scale maps onto the engine's `0..=1`
//! monotonically, with TinyAI's default (1.0) on the engine's default (0.5).

use tinyai_cache::engine::{
    DEFAULT_PRIORITY, TINYAI_DEFAULT_PRIORITY, engine_priority, tinyai_priority,
};

#[test]
fn the_mapping_is_increasing_and_keeps_the_defaults() {
    assert_eq!(engine_priority(TINYAI_DEFAULT_PRIORITY), DEFAULT_PRIORITY);
    let samples = [
        -1e30f32, -100.0, -3.5, -1.0, 0.0, 0.5, 0.9, 1.0, 1.1, 2.0, 3.0, 100.0, 1e30,
    ];
    for pair in samples.windows(2) {
        let (low, high) = (engine_priority(pair[0]), engine_priority(pair[1]));
        assert!(
            low <= high,
            "{} -> {low} but {} -> {high}",
            pair[0],
            pair[1]
        );
        assert!((0.0..=1.0).contains(&low) && (0.0..=1.0).contains(&high));
    }
    // Strictly increasing where it has not saturated.
    assert!(engine_priority(0.9) < engine_priority(1.0));
    assert!(engine_priority(1.0) < engine_priority(1.1));
    assert!(engine_priority(f32::NAN).is_nan());
}

#[test]
fn the_inverse_round_trips_engine_priorities() {
    for weight in [0.05f32, 0.1, 0.5, 0.9, 0.95] {
        let back = engine_priority(tinyai_priority(weight));
        assert!((back - weight).abs() < 1e-5, "{weight} -> {back}");
    }
    // The ends map to finite priorities whose images round to them.
    assert!(tinyai_priority(0.0).is_finite() && tinyai_priority(1.0).is_finite());
    assert!(engine_priority(tinyai_priority(1.0)) > 0.999);
    assert!(engine_priority(tinyai_priority(0.0)) < 0.001);
}
