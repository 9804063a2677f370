use tinyai_cache::workloads::Family;
use tinyai_cache::{AccessKind, LayerId, PolicyKind, sim};
fn main() {
    let fam = match std::env::args().nth(1).as_deref() {
        Some("early") => Family::EarlyExit,
        Some("conc") => Family::ConcurrentSequences,
        Some("moe") => Family::MoeDecode,
        Some("lora") => Family::LoraSwap,
        Some("spec") => Family::Speculative,
        _ => Family::DenseDecode,
    };
    let frac: f64 = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(0.5);
    let seed: u64 = std::env::args()
        .nth(3)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let t = fam.trace(seed, false);
    let n = t.layer_sizes.len();
    println!("layers {n} sizes {:?}..", &t.layer_sizes[..3.min(n)]);
    for p in [PolicyKind::Adaptive] {
        let mut e = t.engine(p, frac).unwrap();
        let mut hits = vec![0u32; n];
        let mut acc = vec![0u32; n];
        let mut res = vec![0u32; n];
        for (i, &id) in t.accesses.iter().enumerate() {
            let d = e.request(id, AccessKind::Demand, i as u64).unwrap();
            acc[id.index()] += 1;
            if d == tinyai_cache::Decision::Hit {
                hits[id.index()] += 1;
            }
            if i % 100 == 0 {
                for k in 0..n {
                    if e.is_resident(LayerId(k as u32)) {
                        res[k] += 1;
                    }
                }
            }
        }
        let r = sim::simulate_policy(&t, p, frac).unwrap();
        println!("{:?} bhr {:.4}", p, r.byte_hit_ratio());
        let samples = t.accesses.len() / 100 + 1;
        for k in 0..n.min(80) {
            print!(
                "{k}:{}/{}/{:.0}% ",
                hits[k],
                acc[k],
                100.0 * res[k] as f64 / samples as f64
            );
        }
        println!();
    }
}
