//! `sluice`: parse the command line, pick the runtime, run the server.

#[cfg(all(feature = "runtime-tokio", feature = "runtime-smol"))]
compile_error!(
    "choose one runtime: build with either feature `runtime-tokio` (default) or `runtime-smol`, not both"
);
#[cfg(not(any(feature = "runtime-tokio", feature = "runtime-smol")))]
compile_error!("choose a runtime: build with feature `runtime-tokio` (default) or `runtime-smol`");

mod budget;
mod config;
mod connection;
mod disk;
mod server;

use clap::Parser;
use sluice_proto::runtime::Runtime;

fn main() {
    let cli = match config::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "sluice: {} (see sluice --help)",
                first.trim_start_matches("error: ")
            );
            std::process::exit(2);
        }
    };
    let config = match cli.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            std::process::exit(2);
        }
    };
    init_tracing();
    if let Err(e) = run(config) {
        tracing::error!("{e:#}");
        eprintln!("sluice: {e:#}");
        std::process::exit(1);
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(feature = "runtime-tokio")]
fn make_runtime(workers: usize) -> anyhow::Result<impl Runtime> {
    Ok(sluice_io_tokio::TokioRuntime::new(workers)?)
}

#[cfg(all(feature = "runtime-smol", not(feature = "runtime-tokio")))]
fn make_runtime(workers: usize) -> anyhow::Result<impl Runtime> {
    Ok(sluice_io_smol::SmolRuntime::new(workers)?)
}

fn run(config: config::Config) -> anyhow::Result<()> {
    let node_id = config.node_id;
    let rt = make_runtime(config.workers)
        .map_err(|e| anyhow::anyhow!("node {node_id}: cannot start the runtime: {e}"))?;
    let rt2 = rt.clone();
    rt.block_on(async move {
        let server = server::Server::start(rt2, config).await?;
        server::handle_signals(server.shared())?;
        server.run().await
    })
}
