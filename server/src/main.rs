//! `sluice`: parse the command line, pick the runtime, run the server.

#[cfg(all(feature = "runtime-tokio", feature = "runtime-smol"))]
compile_error!(
    "choose one runtime: build with either feature `runtime-tokio` (default) or `runtime-smol`, not both"
);
#[cfg(not(any(feature = "runtime-tokio", feature = "runtime-smol")))]
compile_error!("choose a runtime: build with feature `runtime-tokio` (default) or `runtime-smol`");

mod budget;
mod certs;
mod cleaner;
mod cluster;
mod config;
mod connection;
mod disk;
mod limits;
mod listeners;
mod logging;
mod membership;
mod metrics;
mod server;
mod status;
mod tls;
mod tool_conn;
mod users;

use clap::Parser;
use sluice_proto::runtime::Runtime;

fn main() {
    bound_allocator_retention();
    let started = std::time::Instant::now();
    let mut cli = match config::Cli::try_parse() {
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
    let command = cli.command.take();
    if let Some(cluster::cli::Command::Certs(args)) = command {
        if let Err(e) = cluster::cli::run_certs(args) {
            eprintln!("sluice: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(cluster::cli::Command::Cluster(args)) = command {
        // A tool piped into `head` ends quietly when the pipe closes, as Unix tools do.
        // SAFETY: restores the default disposition before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        match status::run(args) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("sluice: {e:#}");
                std::process::exit(2);
            }
        }
    }
    if let Some(cluster::cli::Command::Users(args)) = command {
        let data_dir = cli
            .data_dir
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from("./data"));
        if let Err(e) = users::run(args, &data_dir) {
            eprintln!("sluice: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let config = match cli.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            std::process::exit(2);
        }
    };
    if let Some(cluster::cli::Command::RaftCluster(args)) = command {
        // Every refusal (settings, certificates, a data dir of another node or cluster) is one
        // line and exit status 2, before anything runs.
        let prepared = cluster::cli::resolve(args, &config).and_then(|mut cc| {
            let p = cluster::node::prepare(&config.data_dir, &mut cc)?;
            Ok((cc, p))
        });
        let (cc, prepared) = match prepared {
            Ok(v) => v,
            Err(e) => {
                eprintln!("sluice: {e:#}");
                std::process::exit(2);
            }
        };
        logging::init(cc.raft_debug);
        let node_id = cc.node_id;
        log_open_files_limit(node_id);
        if let Err(e) = run_cluster(config, cc, prepared, started) {
            tracing::error!(node_id, "{e:#}");
            std::process::exit(1);
        }
        return;
    }
    logging::init(false);
    log_open_files_limit(config.node_id as u64);
    if let Err(e) = run(config) {
        tracing::error!("{e:#}");
        eprintln!("sluice: {e:#}");
        std::process::exit(1);
    }
}

/// Raises the open-files limit (see `limits.rs`) and says so.
fn log_open_files_limit(node_id: u64) {
    match limits::raise_open_files() {
        Some((before, after)) => {
            tracing::info!(
                node_id,
                before,
                after,
                "raised the open-files limit to the hard limit"
            )
        }
        None => tracing::debug!(node_id, limit = ?limits::open_files(), "open-files limit"),
    }
}

/// Request and fetch buffers are often hundreds of KiB to MiBs, allocated on one thread and
/// freed on another. With glibc's default of up to 8 arenas per core, each thread that ever
/// touched such a buffer keeps its own arena's worth of freed memory, so RSS grew with the
/// thread count (the smol build's blocking pool peaked at 460 MB under 10 KiB load; 218 MB with
/// two arenas, at the same throughput). A fixed mmap threshold bounded RSS too but halved fetch
/// throughput (page faults on every large buffer).
fn bound_allocator_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
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
    let (stop, reload) = server::early_signals()?;
    // Every line the broker logs, from any task, carries its node id.
    let span = tracing::info_span!("node", node_id);
    rt.block_on(tracing::Instrument::instrument(
        async move {
            let server = server::Server::start(rt2, config).await?;
            server::handle_signals(server.shared(), stop)?;
            server::handle_reload(server.shared(), reload)?;
            server.run().await
        },
        span,
    ))
}

fn run_cluster(
    config: config::Config,
    cc: cluster::cli::ClusterConfig,
    prepared: cluster::node::Prepared,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    use tracing::Instrument;
    let node_id = cc.node_id;
    let rt = make_runtime(config.workers)
        .map_err(|e| anyhow::anyhow!("node {node_id}: cannot start the runtime: {e}"))?;
    let stop = cluster_signals(node_id)?;
    let reload = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| anyhow::anyhow!("node {node_id}: installing the SIGHUP handler: {e}"))?;
    let span = tracing::info_span!("node", node_id);
    let rt2 = rt.clone();
    let mut config = config;
    config.node_id = node_id as i32;
    let mut cc = cc;
    rt.block_on(
        async move {
            let cluster::node::Prepared {
                storage,
                data_dir,
                tls,
                needs_join,
            } = prepared;
            if needs_join {
                cluster::join::join_cluster(&rt2, &mut cc, &tls, &data_dir, &stop).await?;
            }
            let members: Vec<i32> = cc.initial_members.iter().map(|&id| id as i32).collect();
            // Replica catch-up: TCP with the cluster certificates, on an ephemeral port at this
            // node's Raft host; its address reaches the other nodes through `__meta`.
            let raft_host = cc
                .peers
                .iter()
                .find(|(id, _)| *id == node_id)
                .map(|(_, a)| a.ip())
                .unwrap_or(cc.raft_addr.ip());
            let bind_ip = if cc.raft_addr.ip().is_unspecified() {
                cc.raft_addr.ip()
            } else {
                raft_host
            };
            let replica_listener = rt2
                .bind(std::net::SocketAddr::new(bind_ip, 0))
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "node {node_id}: cannot listen for replica catch-up on {bind_ip}: {e}"
                    )
                })?;
            let replica_port =
                sluice_proto::runtime::Listener::local_addr(&replica_listener)?.port();
            let mut config = config;
            config.replica_advertised = Some((raft_host.to_string(), replica_port));
            config.raft_advertised = Some(
                cc.peers
                    .iter()
                    .find(|(id, _)| *id == node_id)
                    .map_or(cc.raft_addr, |(_, a)| *a)
                    .to_string(),
            );
            let server =
                server::Server::start_with(rt2.clone(), config, storage, Some(members)).await?;
            let shared = server.shared();
            server::handle_reload(shared.clone(), reload)?;
            let params = cluster::node::NodeParams {
                cc,
                tls,
                data_dir,
                started,
            };
            let raft = cluster::node::run(
                rt2,
                cluster::quic_runtime(),
                params,
                shared,
                replica_listener,
                stop,
            );
            let (served, raft) = futures_lite::future::zip(server.run(), raft).await;
            served.and(raft)
        }
        .instrument(span),
    )
}

/// SIGINT/SIGTERM stop the cluster node gracefully; a second signal exits at once.
fn cluster_signals(node_id: u64) -> anyhow::Result<async_channel::Receiver<()>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| anyhow::anyhow!("node {node_id}: installing signal handlers: {e}"))?;
    let (tx, rx) = async_channel::bounded(1);
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            for (seen, sig) in signals.forever().enumerate() {
                if seen > 0 {
                    tracing::warn!(node_id, "second signal: exiting without a clean shutdown");
                    std::process::exit(130);
                }
                tracing::info!(node_id, signal = sig, "signal received: shutting down");
                let _ = tx.try_send(());
            }
        })
        .map_err(|e| anyhow::anyhow!("node {node_id}: spawning the signal thread: {e}"))?;
    Ok(rx)
}
