//! `sluice cluster status`: what an operator asks first of a cluster, through the Kafka API
//! every node serves (DescribeCluster, Metadata, and an ApiVersions round trip to each node),
//! so it works from any machine that reaches a Kafka listener, secured or not. The exit status
//! says whether anything needs attention.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    DescribeQuorumRequest, MetadataRequest, RequestKind, ResponseKind, TopicName,
    describe_quorum_request,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use crate::tool_conn::{ClientSecurity, Conn};

/// `sluice cluster` subcommands.
#[derive(Debug, Args)]
pub struct ClusterToolArgs {
    #[command(subcommand)]
    pub command: ClusterTool,
}

/// Operator tools for a running cluster.
#[derive(Debug, Subcommand)]
pub enum ClusterTool {
    /// Nodes (up or down, software version), the __meta leader, and every partition's leader,
    /// replicas, in-sync replicas and how far each replica is behind; exits 1 when a node is down or a partition is under-replicated or
    /// offline, 2 when the cluster cannot be asked.
    Status(StatusArgs),
    /// Add a node to the cluster (AddRaftVoter), then wait until it votes: start the new node
    /// with --join meanwhile
    AddNode(crate::membership::AddNodeArgs),
    /// Remove a node (RemoveRaftVoter): its replicas move to the other nodes first, then it
    /// leaves __meta; waits until it can be stopped. Refused when a partition would find no
    /// other node or the rest could not form a quorum
    RemoveNode(crate::membership::RemoveNodeArgs),
}

/// `sluice cluster status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Kafka listeners to ask, tried in turn: HOST:PORT,HOST:PORT,...
    #[arg(long, value_name = "HOST:PORT,...")]
    pub bootstrap: String,
    /// A client property, as librdkafka names it (repeatable): security.protocol,
    /// sasl.mechanism, sasl.username, sasl.password, ssl.ca.location,
    /// ssl.certificate.location, ssl.key.location
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// A properties file of client settings, as Kafka's tools take it (the keys of -X, and
    /// sasl.jaas.config, ssl.truststore.location with ssl.truststore.type=PEM)
    #[arg(long, value_name = "FILE")]
    pub command_config: Option<PathBuf>,
    /// Print one JSON document instead of tables
    #[arg(long)]
    pub json: bool,
    /// List every partition, not only those that need attention
    #[arg(long)]
    pub all: bool,
    /// How long to wait for each connection and answer, in milliseconds
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub timeout_ms: u64,
}

/// Runs the tool; returns the process exit status.
pub fn run(args: ClusterToolArgs) -> anyhow::Result<i32> {
    match args.command {
        ClusterTool::Status(a) => status(&a),
        ClusterTool::AddNode(a) => crate::membership::add_node(&a),
        ClusterTool::RemoveNode(a) => crate::membership::remove_node(&a),
    }
}

/// One node as the tool reports it.
struct Node {
    id: i32,
    address: String,
    up: bool,
    error: Option<String>,
    /// Its software version (None: it did not say).
    version: Option<String>,
}

/// One partition as the tool reports it.
struct Partition {
    topic: String,
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    /// Raft entries each replica is behind its leader, as the leader knows it (empty: the
    /// leader did not say, e.g. a standalone broker).
    lag: BTreeMap<i32, i64>,
}

impl Partition {
    /// The most any replica is behind (None: not known).
    fn max_lag(&self) -> Option<i64> {
        self.lag.values().copied().max()
    }

    fn offline(&self) -> bool {
        self.leader < 0
    }

    fn under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }
}

fn status(a: &StatusArgs) -> anyhow::Result<i32> {
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let security = ClientSecurity::from_properties(a.command_config.as_deref(), &a.properties)?;
    let mut errors = Vec::new();
    let mut asked = None;
    for addr in a
        .bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match ask(addr, timeout, &security) {
            Ok(r) => {
                asked = Some(r);
                break;
            }
            Err(e) => errors.push(format!("{addr}: {e:#}")),
        }
    }
    let Some(Asked {
        cluster_id,
        meta_leader,
        meta_term,
        brokers,
        mut partitions,
    }) = asked
    else {
        bail!("no bootstrap address answered: {}", errors.join("; "));
    };
    partitions.sort_by(|x, y| (&x.topic, x.partition).cmp(&(&y.topic, y.partition)));
    let nodes: Vec<Node> = brokers
        .into_iter()
        .map(|(id, address)| {
            let mut version = None;
            let reached = Conn::open(&address, timeout, &security).and_then(|mut c| {
                c.call(
                    ApiKey::ApiVersions,
                    3,
                    RequestKind::ApiVersions(
                        ApiVersionsRequest::default()
                            .with_client_software_name("sluice-status".into())
                            .with_client_software_version(env!("CARGO_PKG_VERSION").into()),
                    ),
                )?;
                version = node_version(&mut c, id);
                // Each leader says how far its partitions' replicas are behind.
                ask_lag(&mut c, id, &mut partitions);
                Ok(())
            });
            Node {
                id,
                address,
                up: reached.is_ok(),
                error: reached.err().map(|e| format!("{e:#}")),
                version,
            }
        })
        .collect();
    let under = partitions.iter().filter(|p| p.under_replicated()).count();
    let offline = partitions.iter().filter(|p| p.offline()).count();
    let down = nodes.iter().filter(|n| !n.up).count();
    if a.json {
        let doc = json!({
            "cluster_id": cluster_id,
            "meta_leader": meta_leader,
            "meta_term": meta_term,
            "nodes": nodes.iter().map(|n| json!({
                "id": n.id, "address": n.address, "up": n.up, "error": n.error, "version": n.version,
            })).collect::<Vec<_>>(),
            "partitions": partitions.iter().filter(|p| a.all || p.offline() || p.under_replicated()).map(|p| json!({
                "topic": p.topic, "partition": p.partition, "leader": p.leader,
                "leader_epoch": p.leader_epoch, "replicas": p.replicas, "isr": p.isr,
                "under_replicated": p.under_replicated(), "offline": p.offline(),
                "lag": p.lag.iter().map(|(r, l)| (r.to_string(), json!(l))).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
            "partition_count": partitions.len(),
            "under_replicated": under,
            "offline": offline,
            "nodes_down": down,
        });
        println!("{doc}");
    } else {
        let leader = match (meta_leader, meta_term) {
            (l, t) if l >= 0 && t >= 0 => format!("node {l} (term {t})"),
            (l, _) if l >= 0 => format!("node {l}"),
            _ => "none known".into(),
        };
        let plural = if nodes.len() == 1 { "" } else { "s" };
        println!(
            "cluster {cluster_id}: {} node{plural}, __meta leader {leader}",
            nodes.len()
        );
        println!("{:<6} {:<28} {:<10} status", "node", "address", "version");
        for n in &nodes {
            let state = match &n.error {
                None => "up".to_string(),
                Some(e) => format!("DOWN ({e})"),
            };
            let version = n.version.as_deref().unwrap_or("-");
            println!("{:<6} {:<28} {version:<10} {state}", n.id, n.address);
        }
        println!(
            "{} partitions: {under} under-replicated, {offline} offline",
            partitions.len()
        );
        let shown: Vec<&Partition> = partitions
            .iter()
            .filter(|p| a.all || p.offline() || p.under_replicated())
            .collect();
        if !shown.is_empty() {
            println!(
                "{:<32} {:>9} {:>6} {:>6} {:<12} {:<12} {:>6} state",
                "topic", "partition", "leader", "epoch", "replicas", "isr", "lag"
            );
            let list = |v: &[i32]| {
                v.iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            for p in shown {
                let state = if p.offline() {
                    "OFFLINE"
                } else if p.under_replicated() {
                    "UNDER-REPLICATED"
                } else {
                    "ok"
                };
                let lag = p.max_lag().map_or("-".to_string(), |l| l.to_string());
                println!(
                    "{:<32} {:>9} {:>6} {:>6} {:<12} {:<12} {lag:>6} {state}",
                    p.topic,
                    p.partition,
                    p.leader,
                    p.leader_epoch,
                    list(&p.replicas),
                    list(&p.isr)
                );
            }
        }
    }
    Ok(if under + offline + down > 0 { 1 } else { 0 })
}

/// The cluster as one node sees it.
struct Asked {
    cluster_id: String,
    /// The `__meta` leader (-1: none known).
    meta_leader: i32,
    /// Its term (-1: the node did not say).
    meta_term: i64,
    brokers: Vec<(i32, String)>,
    partitions: Vec<Partition>,
}

fn ask(addr: &str, timeout: Duration, security: &ClientSecurity) -> anyhow::Result<Asked> {
    let mut c = Conn::open(addr, timeout, security)?;
    let ResponseKind::DescribeCluster(dc) = c.call(
        ApiKey::DescribeCluster,
        1,
        RequestKind::DescribeCluster(DescribeClusterRequest::default()),
    )?
    else {
        bail!("not a DescribeCluster answer");
    };
    if dc.error_code != 0 {
        bail!(
            "DescribeCluster: error {} {}",
            dc.error_code,
            dc.error_message.as_deref().unwrap_or_default()
        );
    }
    let ResponseKind::Metadata(md) = c.call(
        ApiKey::Metadata,
        12,
        RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
    )?
    else {
        bail!("not a Metadata answer");
    };
    let mut brokers: Vec<(i32, String)> = dc
        .brokers
        .iter()
        .map(|b| {
            (
                b.broker_id.0,
                crate::tool_conn::host_port(b.host.as_str(), b.port),
            )
        })
        .collect();
    brokers.sort();
    let mut partitions = Vec::new();
    for t in &md.topics {
        let topic = t.name.as_ref().map_or("?", |n| n.0.as_str()).to_string();
        for p in &t.partitions {
            partitions.push(Partition {
                topic: topic.clone(),
                partition: p.partition_index,
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: p.replica_nodes.iter().map(|r| r.0).collect(),
                isr: p.isr_nodes.iter().map(|r| r.0).collect(),
                lag: BTreeMap::new(),
            });
        }
    }
    // The `__meta` leader and term as Kafka's metadata quorum (an older node may not know it).
    let quorum = c.call(
        ApiKey::DescribeQuorum,
        1,
        RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
                .with_partitions(vec![describe_quorum_request::PartitionData::default()]),
        ])),
    );
    let (mut meta_leader, mut meta_term) = (dc.controller_id.0, -1);
    if let Ok(ResponseKind::DescribeQuorum(q)) = quorum
        && let Some(p) = q.topics.first().and_then(|t| t.partitions.first())
        && q.error_code == 0
        && p.error_code == 0
    {
        meta_leader = p.leader_id.0;
        meta_term = i64::from(p.leader_epoch);
    }
    Ok(Asked {
        cluster_id: dc.cluster_id.as_str().to_string(),
        meta_leader,
        meta_term,
        brokers,
        partitions,
    })
}

/// The node's software version, from its `sluice.version` broker config (None: an older node,
/// or one that does not let this principal describe it).
fn node_version(c: &mut Conn, id: i32) -> Option<String> {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_string(id.to_string()))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str("sluice.version")])),
    ]);
    let Ok(ResponseKind::DescribeConfigs(r)) = c.call(
        ApiKey::DescribeConfigs,
        4,
        RequestKind::DescribeConfigs(request),
    ) else {
        return None;
    };
    let result = r.results.first().filter(|r| r.error_code == 0)?;
    result
        .configs
        .iter()
        .find(|e| e.name.as_str() == "sluice.version")
        .and_then(|e| e.value.as_ref())
        .map(|v| v.as_str().to_string())
}

/// Asks node `id` how far behind each replica of the partitions it leads is: a Sluice
/// partition is a Raft group, which its leader describes through DescribeQuorum. A node that
/// cannot say (a standalone broker, an older node) leaves the lag unknown.
fn ask_lag(c: &mut Conn, id: i32, partitions: &mut [Partition]) {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for p in partitions.iter().filter(|p| p.leader == id) {
        by_topic.entry(&p.topic).or_default().push(p.partition);
    }
    if by_topic.is_empty() {
        return;
    }
    let topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_string(t.to_string())))
                .with_partitions(
                    ps.into_iter()
                        .map(|p| {
                            describe_quorum_request::PartitionData::default()
                                .with_partition_index(p)
                        })
                        .collect(),
                )
        })
        .collect();
    let Ok(ResponseKind::DescribeQuorum(q)) = c.call(
        ApiKey::DescribeQuorum,
        1,
        RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(topics)),
    ) else {
        return;
    };
    if q.error_code != 0 {
        return;
    }
    let mut found: BTreeMap<(String, i32), BTreeMap<i32, i64>> = BTreeMap::new();
    for t in &q.topics {
        for p in t.partitions.iter().filter(|p| p.error_code == 0) {
            let Some(end) = p
                .current_voters
                .iter()
                .find(|v| v.replica_id.0 == p.leader_id.0)
                .map(|v| v.log_end_offset)
            else {
                continue;
            };
            // Observers are replicas a move is adding: their lag is how far the copy got.
            let lag = p
                .current_voters
                .iter()
                .chain(p.observers.iter())
                .map(|v| {
                    let behind = if v.log_end_offset < 0 {
                        -1
                    } else {
                        (end - v.log_end_offset).max(0)
                    };
                    (v.replica_id.0, behind)
                })
                .collect();
            found.insert((t.topic_name.0.to_string(), p.partition_index), lag);
        }
    }
    for p in partitions.iter_mut() {
        if let Some(lag) = found.remove(&(p.topic.clone(), p.partition)) {
            p.lag = lag;
        }
    }
}
