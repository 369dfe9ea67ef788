//! Measures the CPU cost of idle Raft groups on simulated nodes.
//!
//! `cargo run -p sluice-raft --release --features sim --example idle_groups -- [groups] [nodes] [secs]`
//! (defaults: 1000 groups, 3 nodes, 10 simulated seconds after a 5 s warm-up).

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let groups = args.first().copied().unwrap_or(1000);
    let nodes = args.get(1).copied().unwrap_or(3);
    let secs = args.get(2).copied().unwrap_or(10);
    let report = sluice_raft::sim::idle::measure(groups, nodes, 5, secs);
    println!("{report}");
}
