//! The long run of the replica simulator: `cargo run --release -p sluice-replica --example soak
//! -- [SEEDS] [START]` (default 1,000,000 from 0). Prints progress every 10,000 seeds and every
//! failure with its replay command; exits non-zero if any seed failed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sluice_replica::sim::{SimConfig, replay_command, run};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let count = args.first().copied().unwrap_or(1_000_000);
    let start = args.get(1).copied().unwrap_or(0);
    let next = AtomicU64::new(start);
    let failed = Mutex::new(Vec::new());
    let began = Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= start + count {
                        return;
                    }
                    let o = run(&SimConfig::new(seed));
                    if !o.violations.is_empty() {
                        eprintln!(
                            "seed {seed}: {}\n  replay: {}",
                            o.violations.join("; "),
                            replay_command(seed)
                        );
                        failed.lock().unwrap().push(seed);
                    }
                    let done = seed + 1 - start;
                    if done.is_multiple_of(10_000) {
                        eprintln!("{done} seeds, {:.0} s", began.elapsed().as_secs_f64());
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap();
    println!(
        "replica soak: {count} seeds from {start} in {:.0} s, {} failed",
        began.elapsed().as_secs_f64(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
