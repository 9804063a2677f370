//! Mutation test: thousands of random truncations, byte flips and extreme field
//! values applied to valid v2 and v1 files. Parsing must never panic, and when
//! it succeeds no accessor may panic either.
#![allow(clippy::unwrap_used)]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::*;
use tinyai_format::fixtures::{self, splitmix64};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = splitmix64(self.0);
        self.0
    }
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

fn extreme(rng: &mut Rng, file_length: u64) -> u64 {
    const VALUES: [u64; 12] = [
        0,
        1,
        7,
        8,
        64,
        128,
        u32::MAX as u64,
        1 << 32,
        1 << 63,
        u64::MAX,
        u64::MAX - 63,
        u64::MAX / 64,
    ];
    match rng.below(4) {
        0 => file_length.wrapping_add(rng.next() % 3).wrapping_sub(1),
        1 => rng.next(),
        _ => VALUES[rng.below(VALUES.len())],
    }
}

/// One random mutation of `base`; returns a description for failure reports.
fn mutate(rng: &mut Rng, base: &[u8], legacy: bool) -> (Vec<u8>, String) {
    let mut bytes = base.to_vec();
    let length = bytes.len();
    let table_start = if legacy {
        256
    } else {
        get_u64(base, header::LAYER_TABLE_OFFSET) as usize
    };
    let description = match rng.below(6) {
        0 => {
            let at = rng.below(length);
            bytes.truncate(at);
            format!("truncate to {at}")
        }
        1 => {
            let flips = 1 + rng.below(4);
            let mut at = Vec::new();
            for _ in 0..flips {
                let position = rng.below(length);
                bytes[position] ^= 1 << rng.below(8);
                at.push(position);
            }
            format!("flip bits at {at:?}")
        }
        2 | 3 => {
            // A flip in the header or tables, re-sealed so the CRCs pass.
            let position = if rng.below(4) == 0 {
                rng.below(table_start.min(length).max(1))
            } else {
                table_start + rng.below(length - table_start)
            };
            bytes[position] = rng.next() as u8;
            if !legacy {
                reseal(&mut bytes);
            }
            format!("set byte {position} and reseal")
        }
        _ => {
            // An extreme value over an aligned field of the header or tables.
            let width = if legacy { 4 } else { 8 };
            let header_or_tables = if rng.below(3) == 0 {
                rng.below(if legacy { 256 } else { 120 })
            } else {
                table_start + rng.below(length - table_start)
            };
            let at = (header_or_tables / width * width).min(length - width);
            let value = extreme(rng, length as u64);
            if legacy {
                put_u32(&mut bytes, at, value as u32);
            } else {
                put_u64(&mut bytes, at, value);
                reseal(&mut bytes);
            }
            format!("write {value:#x} at {at}")
        }
    };
    (bytes, description)
}

fn run(name: &str, base: &[u8], legacy: bool, iterations: usize, seed: u64) -> (usize, usize) {
    let mut rng = Rng(seed);
    let mut parsed = 0;
    let mut failures = Vec::new();
    for iteration in 0..iterations {
        let (bytes, description) = mutate(&mut rng, base, legacy);
        let outcome = catch_unwind(AssertUnwindSafe(|| parse_and_exercise(&bytes)));
        match outcome {
            Ok(Ok(())) => parsed += 1,
            Ok(Err(_)) => {}
            Err(_) => {
                let path =
                    std::env::temp_dir().join(format!("tmai-mutation-{name}-{iteration}.bin"));
                let _ = std::fs::write(&path, &bytes);
                failures.push(format!(
                    "{name} #{iteration}: {description} panicked (input saved to {})",
                    path.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    (parsed, iterations)
}

/// `iterations`, or a 1000th of it under Miri (which interprets every step).
fn scaled(iterations: usize) -> usize {
    if cfg!(miri) {
        iterations / 1000
    } else {
        iterations
    }
}

#[test]
fn mutated_v2_files_never_panic() {
    let tiny = fixtures::fixture_bytes(&fixtures::tiny()).unwrap();
    let multi = fixtures::fixture_bytes(&fixtures::multi_tensor()).unwrap();
    let (parsed_tiny, total_tiny) = run("tiny", &tiny, false, scaled(10_000), 1);
    let (parsed_multi, total_multi) = run("multi_tensor", &multi, false, scaled(15_000), 2);
    // Most mutations are caught; some (e.g. of layer data) still parse.
    assert!(parsed_tiny < total_tiny && parsed_multi < total_multi);
    assert!(parsed_tiny + parsed_multi > 0);
}

#[test]
fn mutated_v1_files_never_panic() {
    let legacy = fixtures::legacy_bytes(&fixtures::LegacySpec {
        name: "Test Model".to_owned(),
        layer_sizes: vec![64, 0, 17, 256, 1],
    })
    .unwrap();
    let (parsed, total) = run("legacy", &legacy, true, scaled(10_000), 3);
    assert!(parsed < total);
}
