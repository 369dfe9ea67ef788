//! Cluster mode's command line: the `raft-cluster` and `certs` subcommands, the `[cluster]`
//! table of the config file, and their merge (flag > `SLUICE_*` env > file) into a
//! [`ClusterConfig`]. Every problem is one line naming the node id and what to add or change.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Deserialize;

use crate::config::Config;

/// Subcommands of `sluice`. Without one, `sluice` runs the standalone broker.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a node of a Raft cluster: topic metadata and every partition replicated with
    /// Raft, Kafka clients served by every node.
    RaftCluster(ClusterArgs),
    /// Create certificates: a cluster CA and node certificates (--nodes), and/or a Kafka
    /// listener's server certificate (--server-names) and client certificates (--client).
    Certs(CertsArgs),
    /// Manage SCRAM users in a stopped broker's data dir (--data-dir).
    Users(crate::users::UsersArgs),
    /// Operator tools for a running cluster (`sluice cluster status --bootstrap HOST:PORT`).
    Cluster(crate::status::ClusterToolArgs),
}

/// `sluice raft-cluster` options.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Address the QUIC endpoint for Raft traffic binds [default: this node's entry in --peers]
    #[arg(long, env = "SLUICE_RAFT_ADDR", value_name = "HOST:PORT")]
    pub raft_addr: Option<String>,
    /// Every node of a new cluster, this one included: ID@HOST:PORT,ID@HOST:PORT,... (to
    /// bootstrap it; a node added later starts with --join instead)
    #[arg(long, env = "SLUICE_PEERS", value_name = "ID@HOST:PORT,...")]
    pub peers: Option<String>,
    /// Join a running cluster through the Raft address of any member (add this node first with
    /// `sluice cluster add-node ID@RAFT_HOST:PORT --bootstrap KAFKA_HOST:PORT`); needs
    /// --raft-addr. Keep it on restarts: the member is asked only on the first start, later
    /// ones use what the data dir recorded.
    #[arg(
        long,
        env = "SLUICE_JOIN",
        value_name = "HOST:PORT",
        conflicts_with = "peers"
    )]
    pub join: Option<String>,
    /// Directory with ca.pem, node-<id>.pem and node-<id>.key (see `sluice certs`)
    #[arg(long, env = "SLUICE_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Cluster id checked at every handshake [default: derived from the sorted --peers]
    #[arg(long, env = "SLUICE_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: Option<String>,
    /// Compact a partition's Raft log once this many entries are applied, durable and held by
    /// every replica [default: 1000]
    #[arg(long, env = "SLUICE_RAFT_COMPACT_ENTRIES", value_name = "N")]
    pub raft_compact_entries: Option<u64>,
    /// Compact the `__meta` Raft log to a snapshot of the cluster metadata once it holds this
    /// many applied entries; a node that was away longer gets the snapshot. Experimental
    /// [default: off]
    #[arg(long, env = "SLUICE_RAFT_META_COMPACT_ENTRIES", value_name = "N")]
    pub raft_meta_compact_entries: Option<u64>,
    /// A replica silent this long stops holding back Raft log compaction; when it returns it
    /// catches up from a snapshot, copying records from another replica [default: 10000]
    #[arg(long, env = "SLUICE_RAFT_REPLICA_TIMEOUT_MS", value_name = "MS")]
    pub raft_replica_timeout_ms: Option<u64>,
    /// Log every Raft message this node sends and receives (type, from, to, term, index) at
    /// trace level; also switchable at run time with GET /raft-debug/on|off on --metrics-addr
    #[arg(long, env = "SLUICE_RAFT_DEBUG")]
    pub raft_debug: bool,
}

/// `--raft-meta-compact-entries` by default: off (0). At 10,000 partitions it destabilized the
/// cluster in benchmark runs (likely a leader re-sending its image to a follower busy applying,
/// not confirmed; docs/OPERATIONS.md): until that is understood, compaction is opt-in.
const META_COMPACT_ENTRIES: u64 = 0;

/// `sluice certs` options.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Cluster node ids to issue node certificates for: 1,2,3
    #[arg(long, value_name = "ID,ID,...", value_delimiter = ',')]
    pub nodes: Vec<u64>,
    /// Names (DNS or IP) of a Kafka listener's server certificate: writes server.pem, server.key
    #[arg(long, value_name = "NAME,NAME,...", value_delimiter = ',')]
    pub server_names: Vec<String>,
    /// A client certificate with subject CN=NAME (principal User:NAME): NAME.pem, NAME.key
    #[arg(long, value_name = "NAME")]
    pub client: Vec<String>,
    /// Output directory (created; existing files are never overwritten, an existing CA is used)
    #[arg(long, value_name = "DIR", required = true)]
    pub out: PathBuf,
}

/// The `[cluster]` table of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCluster {
    raft_addr: Option<String>,
    /// `["1@host:port", ...]`
    peers: Option<Vec<String>>,
    join: Option<String>,
    tls_dir: Option<PathBuf>,
    cluster_id: Option<String>,
    raft_compact_entries: Option<u64>,
    raft_meta_compact_entries: Option<u64>,
    raft_replica_timeout_ms: Option<u64>,
    raft_debug: Option<bool>,
}

/// Cluster mode settings after merging, validated.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id (explicit, non-zero, listed in `peers`).
    pub node_id: u64,
    /// Address the QUIC endpoint binds.
    pub raft_addr: SocketAddr,
    /// Every node, this one included, sorted by id.
    pub peers: Vec<(u64, SocketAddr)>,
    /// Certificate directory.
    pub tls_dir: PathBuf,
    /// Cluster id (given, or derived from `peers`).
    pub cluster_id: String,
    /// Whether `cluster_id` was given rather than derived.
    pub cluster_id_given: bool,
    /// Raft log compaction step, in entries (≥ 1).
    pub raft_compact_entries: u64,
    /// `__meta` log compaction, in applied entries (0: off).
    pub raft_meta_compact_entries: u64,
    /// Silence after which a replica no longer holds back compaction (ms).
    pub raft_replica_timeout_ms: u64,
    /// Raft message tracing from the start.
    pub raft_debug: bool,
    /// `--join`: a member's Raft address, asked for the cluster's members on first start.
    pub join: Option<SocketAddr>,
    /// The voters the cluster's `__meta` started with (its members at creation): every node
    /// builds the same initial state from them.
    pub initial_members: Vec<u64>,
    /// This node joins the cluster for the first time with an empty state (see
    /// `sluice_replica::ReplicaConfig::joining`).
    pub joining: bool,
}

impl ClusterConfig {
    /// The other nodes.
    pub fn others(&self) -> Vec<(u64, SocketAddr)> {
        self.peers
            .iter()
            .copied()
            .filter(|&(id, _)| id != self.node_id)
            .collect()
    }
}

/// Renders a peer list the way `--peers` takes it.
pub fn peers_string(peers: &[(u64, SocketAddr)]) -> String {
    peers
        .iter()
        .map(|(id, a)| format!("{id}@{a}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The cluster id every node derives from the same peer list: `sluice-` and the FNV-1a 64 hash
/// of the sorted `id@ip:port` list, in hex. Any node given the same `--peers` (in any order)
/// gets the same id.
pub fn derive_cluster_id(peers: &[(u64, SocketAddr)]) -> String {
    let mut sorted = peers.to_vec();
    sorted.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in peers_string(&sorted).bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("sluice-{hash:016x}")
}

/// Merges the `raft-cluster` flags/env with the config file's `[cluster]` table and checks them
/// against the node id.
pub fn resolve(args: ClusterArgs, config: &Config) -> anyhow::Result<ClusterConfig> {
    let file = config.file_cluster.clone().unwrap_or_default();
    let peers_s: Option<Vec<String>> = match args.peers {
        Some(s) => Some(s.split(',').map(|p| p.trim().to_string()).collect()),
        None => file.peers,
    };
    let who = if config.node_id_given {
        format!("node {}: ", config.node_id)
    } else {
        String::new()
    };
    let join = args.join.or(file.join).filter(|j| !j.is_empty());
    let peers_s = peers_s.filter(|p| p.iter().any(|s| !s.is_empty()));
    if let Some(join) = join {
        if peers_s.is_some() {
            bail!(
                "{who}--join and --peers exclude each other: --peers bootstraps a new cluster, --join adds this node to a running one"
            );
        }
        return resolve_join(
            args.raft_addr.or(file.raft_addr),
            &join,
            args.tls_dir.or(file.tls_dir),
            args.cluster_id.or(file.cluster_id),
            config,
            &who,
        )
        .map(|mut cc| {
            cc.raft_compact_entries = args
                .raft_compact_entries
                .or(file.raft_compact_entries)
                .unwrap_or(1000)
                .max(1);
            cc.raft_meta_compact_entries = args
                .raft_meta_compact_entries
                .or(file.raft_meta_compact_entries)
                .unwrap_or(META_COMPACT_ENTRIES);
            cc.raft_replica_timeout_ms = args
                .raft_replica_timeout_ms
                .or(file.raft_replica_timeout_ms)
                .unwrap_or(10_000)
                .max(1000);
            cc.raft_debug = args.raft_debug || file.raft_debug.unwrap_or(false);
            cc
        });
    }
    let Some(peers_s) = peers_s else {
        bail!(
            "{who}cluster mode needs the cluster's nodes: add --peers 1@HOST:PORT,2@HOST:PORT,3@HOST:PORT to bootstrap a new cluster (or SLUICE_PEERS, or peers in [cluster] of the config file), or --join HOST:PORT to join a running one"
        );
    };
    let mut peers = Vec::new();
    let mut seen = BTreeSet::new();
    for p in peers_s.iter().filter(|s| !s.is_empty()) {
        let (id, addr) =
            sluice_transport_quic::parse_peer(p).map_err(|e| anyhow::anyhow!("--peers: {e}"))?;
        if !seen.insert(id) {
            bail!("--peers lists node {id} twice");
        }
        peers.push((id, addr));
    }
    peers.sort();
    let listed = peers_string(&peers);
    if !config.node_id_given {
        bail!(
            "cluster mode needs this node's id: add --node-id ID (or SLUICE_NODE_ID, or node_id in the config file), one of the ids in --peers {listed}"
        );
    }
    if config.node_id <= 0 {
        bail!(
            "--node-id {} is not a valid cluster node id (0 is reserved by Raft): use one of the ids in --peers {listed}",
            config.node_id
        );
    }
    let node_id = config.node_id as u64;
    let Some(&(_, own_addr)) = peers.iter().find(|&&(id, _)| id == node_id) else {
        bail!(
            "node {node_id} is not in --peers {listed}: add {node_id}@HOST:PORT to --peers on every node, or start this node with one of the listed ids"
        );
    };
    let raft_addr = match args.raft_addr.or(file.raft_addr) {
        Some(a) => sluice_transport_quic::parse_peer(&format!("{node_id}@{a}"))
            .map(|(_, addr)| addr)
            .map_err(|e| anyhow::anyhow!("node {node_id}: --raft-addr {a}: {}", e.detail))?,
        None => own_addr,
    };
    let Some(tls_dir) = args.tls_dir.or(file.tls_dir) else {
        bail!(
            "node {node_id}: cluster mode needs certificates: add --tls-dir DIR (create it with `sluice certs --nodes {} --out DIR`)",
            peers
                .iter()
                .map(|(id, _)| id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
    };
    let given = args.cluster_id.or(file.cluster_id);
    let cluster_id_given = given.is_some();
    let cluster_id = given.unwrap_or_else(|| derive_cluster_id(&peers));
    if cluster_id.is_empty() || cluster_id.len() > 255 {
        bail!("node {node_id}: --cluster-id must be 1 to 255 bytes");
    }
    let raft_compact_entries = args
        .raft_compact_entries
        .or(file.raft_compact_entries)
        .unwrap_or(1000);
    if raft_compact_entries == 0 {
        bail!("node {node_id}: --raft-compact-entries must be 1 or more");
    }
    let raft_meta_compact_entries = args
        .raft_meta_compact_entries
        .or(file.raft_meta_compact_entries)
        .unwrap_or(META_COMPACT_ENTRIES);
    let raft_replica_timeout_ms = args
        .raft_replica_timeout_ms
        .or(file.raft_replica_timeout_ms)
        .unwrap_or(10_000);
    if raft_replica_timeout_ms < 1000 {
        bail!(
            "node {node_id}: --raft-replica-timeout-ms must be 1000 or more (a live replica answers every 150 ms)"
        );
    }
    let initial_members = peers.iter().map(|&(id, _)| id).collect();
    Ok(ClusterConfig {
        node_id,
        raft_addr,
        peers,
        tls_dir,
        cluster_id,
        cluster_id_given,
        raft_compact_entries,
        raft_meta_compact_entries,
        raft_replica_timeout_ms,
        raft_debug: args.raft_debug || file.raft_debug.unwrap_or(false),
        join: None,
        initial_members,
        joining: false,
    })
}

/// `--join`: this node's own id and Raft address are all it knows; the cluster id, the
/// initial members and the peers come from the data dir or the member it joins through.
fn resolve_join(
    raft_addr: Option<String>,
    join: &str,
    tls_dir: Option<PathBuf>,
    cluster_id: Option<String>,
    config: &Config,
    who: &str,
) -> anyhow::Result<ClusterConfig> {
    if !config.node_id_given || config.node_id <= 0 {
        bail!(
            "{who}joining a cluster needs this node's own id: add --node-id ID (a positive id no member has; add it first with `sluice cluster add-node ID@RAFT_HOST:PORT`)"
        );
    }
    let node_id = config.node_id as u64;
    let Some(raft_addr) = raft_addr else {
        bail!(
            "node {node_id}: joining a cluster needs this node's Raft address: add --raft-addr HOST:PORT (the address given to `sluice cluster add-node {node_id}@HOST:PORT`)"
        );
    };
    let (_, raft_addr) = sluice_transport_quic::parse_peer(&format!("{node_id}@{raft_addr}"))
        .map_err(|e| anyhow::anyhow!("node {node_id}: --raft-addr {raft_addr}: {}", e.detail))?;
    let (_, join_addr) = sluice_transport_quic::parse_peer(&format!("1@{join}"))
        .map_err(|e| anyhow::anyhow!("node {node_id}: --join {join}: {}", e.detail))?;
    let Some(tls_dir) = tls_dir else {
        bail!(
            "node {node_id}: cluster mode needs certificates: add --tls-dir DIR holding the cluster's ca.pem and node-{node_id}.pem/.key (`sluice certs --nodes {node_id} --out DIR` with the cluster's CA in DIR)"
        );
    };
    let given = cluster_id.filter(|c| !c.is_empty());
    if given.as_ref().is_some_and(|c| c.len() > 255) {
        bail!("node {node_id}: --cluster-id must be 1 to 255 bytes");
    }
    Ok(ClusterConfig {
        node_id,
        raft_addr,
        peers: vec![(node_id, raft_addr)],
        tls_dir,
        cluster_id_given: given.is_some(),
        cluster_id: given.unwrap_or_default(),
        raft_compact_entries: 1000,
        raft_meta_compact_entries: META_COMPACT_ENTRIES,
        raft_replica_timeout_ms: 10_000,
        raft_debug: false,
        join: Some(join_addr),
        initial_members: Vec::new(),
        joining: false,
    })
}

/// `sluice certs`: writes the CA and one pair per node, refusing to overwrite anything.
pub fn run_certs(args: CertsArgs) -> anyhow::Result<()> {
    if args.nodes.is_empty() && args.server_names.is_empty() && args.client.is_empty() {
        bail!(
            "say what to create: --nodes 1,2,3 (cluster), --server-names HOST,... and/or --client NAME (Kafka listener)"
        );
    }
    let mut files = Vec::new();
    if !args.nodes.is_empty() {
        files.extend(
            sluice_transport_quic::certs::generate(&args.nodes, &args.out)
                .with_context(|| format!("certificates in {}", args.out.display()))?,
        );
    }
    if !args.server_names.is_empty() || !args.client.is_empty() {
        files.extend(
            crate::certs::generate(&args.server_names, &args.client, &args.out)
                .with_context(|| format!("certificates in {}", args.out.display()))?,
        );
    }
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> anyhow::Result<ClusterConfig> {
        let mut v = vec!["sluice"];
        v.extend_from_slice(args);
        let mut cli = crate::config::Cli::try_parse_from(v)?;
        let Some(Command::RaftCluster(c)) = cli.command.take() else {
            panic!("no raft-cluster")
        };
        resolve(c, &cli.resolve()?)
    }

    const PEERS: &str = "3@127.0.0.1:7003,1@127.0.0.1:7001,2@127.0.0.1:7002";

    #[test]
    fn global_flags_before_or_after_the_subcommand() {
        let a = parse(&[
            "--node-id",
            "2",
            "raft-cluster",
            "--peers",
            PEERS,
            "--tls-dir",
            "c",
        ])
        .unwrap();
        let b = parse(&[
            "raft-cluster",
            "--peers",
            PEERS,
            "--tls-dir",
            "c",
            "--node-id",
            "2",
        ])
        .unwrap();
        assert_eq!(a.node_id, 2);
        assert_eq!(b.node_id, 2);
        assert_eq!(a.raft_addr.port(), 7002);
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_eq!(a.others().len(), 2);
    }

    #[test]
    fn cluster_id_is_independent_of_peer_order() {
        let mut p: Vec<(u64, SocketAddr)> = vec![
            (2, "127.0.0.1:7002".parse().unwrap()),
            (1, "127.0.0.1:7001".parse().unwrap()),
        ];
        let a = derive_cluster_id(&p);
        p.reverse();
        assert_eq!(a, derive_cluster_id(&p));
        p[0].1 = "127.0.0.1:7009".parse().unwrap();
        assert_ne!(a, derive_cluster_id(&p));
    }

    #[test]
    fn refusals_say_what_to_add() {
        let e = parse(&["raft-cluster", "--peers", PEERS, "--tls-dir", "c"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--node-id"), "{e}");
        let e = parse(&[
            "--node-id",
            "4",
            "raft-cluster",
            "--peers",
            PEERS,
            "--tls-dir",
            "c",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("node 4 is not in --peers"), "{e}");
        assert!(e.contains("1@127.0.0.1:7001,2@127.0.0.1:7002,3@127.0.0.1:7003"));
        let e = parse(&["--node-id", "1", "raft-cluster", "--peers", PEERS])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-dir"), "{e}");
    }

    #[test]
    fn join_takes_a_member_and_this_nodes_raft_address() {
        let c = parse(&[
            "--node-id",
            "4",
            "raft-cluster",
            "--join",
            "127.0.0.1:7001",
            "--raft-addr",
            "127.0.0.1:7004",
            "--tls-dir",
            "c",
        ])
        .unwrap();
        assert_eq!(c.join, Some("127.0.0.1:7001".parse().unwrap()));
        assert_eq!(c.peers, vec![(4, "127.0.0.1:7004".parse().unwrap())]);
        assert!(
            !c.cluster_id_given && c.cluster_id.is_empty(),
            "learned at the join"
        );
        assert!(c.initial_members.is_empty(), "learned at the join");
        let refused = |args: &[&str]| parse(args).unwrap_err().to_string();
        let e = refused(&[
            "--node-id",
            "4",
            "raft-cluster",
            "--join",
            "127.0.0.1:7001",
            "--tls-dir",
            "c",
        ]);
        assert!(e.contains("--raft-addr"), "{e}");
        let e = refused(&[
            "raft-cluster",
            "--join",
            "127.0.0.1:7001",
            "--raft-addr",
            "127.0.0.1:7004",
            "--tls-dir",
            "c",
        ]);
        assert!(e.contains("--node-id"), "{e}");
        let e = refused(&[
            "--node-id",
            "4",
            "raft-cluster",
            "--join",
            "127.0.0.1:7001",
            "--peers",
            PEERS,
            "--raft-addr",
            "127.0.0.1:7004",
            "--tls-dir",
            "c",
        ]);
        assert!(e.contains("--join") && e.contains("--peers"), "{e}");
        let e = refused(&["--node-id", "4", "raft-cluster", "--tls-dir", "c"]);
        assert!(e.contains("--peers") && e.contains("--join"), "{e}");
    }

    #[test]
    fn file_table() {
        let dir = std::env::temp_dir().join(format!("sluice-ccfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "node_id = 3\n[cluster]\npeers = [\"1@127.0.0.1:7001\", \"2@127.0.0.1:7002\", \"3@127.0.0.1:7003\"]\ntls_dir = \"certs\"\ncluster_id = \"prod\"\n",
        )
        .unwrap();
        let c = parse(&["--config", f.to_str().unwrap(), "raft-cluster"]).unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.cluster_id, "prod");
        assert_eq!(c.tls_dir, PathBuf::from("certs"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
