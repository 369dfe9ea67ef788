//! Log output: `RUST_LOG` (default `info`) to stderr, with Raft message tracing (type, from, to,
//! term, index of every message a node sends and receives) switchable at start
//! (`raft-cluster --raft-debug`) and at run time (`GET /raft-debug/on|off` on the metrics port),
//! for one node, without a restart.

use std::sync::OnceLock;

use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt, reload};

/// The directive that turns Raft message tracing on.
const RAFT_TRACE: &str = "sluice_raft::driver=trace";

type Toggle = Box<dyn Fn(bool) -> Result<(), String> + Send + Sync>;

static RAFT_DEBUG: OnceLock<Toggle> = OnceLock::new();

fn filter(base: &str, raft_debug: bool) -> EnvFilter {
    let spec = if raft_debug {
        format!("{base},{RAFT_TRACE}")
    } else {
        base.to_string()
    };
    EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the subscriber; call once, before anything logs.
pub fn init(raft_debug: bool) {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let base = if EnvFilter::try_new(&base).is_ok() {
        base
    } else {
        "info".to_string()
    };
    let (layer, handle) = reload::Layer::new(filter(&base, raft_debug));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry()
        .with(layer)
        .with(fmt::layer().with_writer(std::io::stderr).with_ansi(ansi))
        .init();
    let _ = RAFT_DEBUG.set(Box::new(move |on| {
        handle.reload(filter(&base, on)).map_err(|e| e.to_string())
    }));
}

/// Turns Raft message tracing on or off for this process.
pub fn set_raft_debug(on: bool) -> Result<(), String> {
    match RAFT_DEBUG.get() {
        Some(toggle) => toggle(on),
        None => Err("logging is not initialised".into()),
    }
}
