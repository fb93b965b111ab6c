//! Maglev quality (`cargo xtask bench`): how even the tables are and how many flows move
//! when one backend goes or comes, against the ideal, for the table builder the agent uses.

use std::time::Instant;

use lb_common::{
    flow::{flow_hash, maglev_slot},
    maglev::{MaglevBackend, build},
};

fn backends(n: u32, mixed_weights: bool) -> Vec<MaglevBackend> {
    (1..=n)
        .map(|i| MaglevBackend {
            id: i,
            identity: format!("198.18.{}.{}:8080", i / 250, i % 250 + 2),
            weight: if mixed_weights { 1 + i % 3 } else { 1 },
        })
        .collect()
}

/// A deterministic stream of random-looking 5-tuples (xorshift).
fn flows(count: usize) -> impl Iterator<Item = u32> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..count).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let src = lb_common::addr::v4_mapped([198, 18, (x >> 8) as u8, (x >> 16) as u8]);
        let dst = lb_common::addr::v4_mapped([198, 19, 0, 10]);
        flow_hash(&src, &dst, ((x >> 24) as u16).to_be(), 80u16.to_be(), 6)
    })
}

/// Median wall time of building the table alone (what the agent pays per changed Service).
fn median_build_ms(all: &[MaglevBackend], m: u32) -> f64 {
    let mut ms: Vec<f64> = (0..9)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(build(all, m).expect("table"));
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

fn main() {
    const FLOWS: usize = 1_000_000;
    println!("Maglev quality ({FLOWS} random flows per row)");
    println!(
        "{:>6} {:>6} {:>7} {:>10} {:>12} {:>16} {:>16} {:>16}",
        "M",
        "N",
        "weights",
        "build",
        "max/mean",
        "moved on remove",
        "of which others",
        "moved on add"
    );
    for m in [16381u32, 65537] {
        for n in [10u32, 100, 1000] {
            for mixed in [false, true] {
                let all = backends(n, mixed);
                let table = build(&all, m).expect("table");
                let build_ms = median_build_ms(&all, m);
                // Slots per unit of weight: max over mean (1.0 is perfectly even).
                let mut slots = vec![0u64; n as usize + 1];
                for &id in &table {
                    slots[id as usize] += 1;
                }
                let per_weight: Vec<f64> =
                    all.iter().map(|b| slots[b.id as usize] as f64 / f64::from(b.weight)).collect();
                let mean = per_weight.iter().sum::<f64>() / per_weight.len() as f64;
                let max = per_weight.iter().copied().fold(0.0, f64::max);

                let removed = build(&all[1..], m).expect("table");
                let mut added_set = all.clone();
                added_set.push(MaglevBackend {
                    id: n + 1,
                    identity: "198.18.99.99:8080".into(),
                    weight: 1,
                });
                let added = build(&added_set, m).expect("table");
                let (mut moved_rm, mut moved_other, mut moved_add) = (0u64, 0u64, 0u64);
                for h in flows(FLOWS) {
                    let s = maglev_slot(h, m) as usize;
                    if table[s] != removed[s] {
                        moved_rm += 1;
                        if table[s] != all[0].id {
                            moved_other += 1;
                        }
                    }
                    if table[s] != added[s] {
                        moved_add += 1;
                    }
                }
                let pct = |x: u64| format!("{:.3}%", x as f64 * 100.0 / FLOWS as f64);
                println!(
                    "{m:>6} {n:>6} {:>7} {:>7.2} ms {:>12.3} {:>16} {:>16} {:>16}",
                    if mixed { "1-3" } else { "equal" },
                    build_ms,
                    max / mean,
                    pct(moved_rm),
                    pct(moved_other),
                    pct(moved_add)
                );
            }
        }
    }
    println!(
        "build: median of 9 builds of the whole table, one core; ideal: max/mean 1.000; on remove only the removed backend's flows move (≈ its share; 'of which others' 0); on add ≈ 1/(N+1) move"
    );
}
