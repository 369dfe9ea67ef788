//! `sluice cluster add-node` and `remove-node`: KIP-853's AddRaftVoter and RemoveRaftVoter
//! through any node's Kafka listener, then the change followed to its end: a new node is done
//! once it votes in `__meta` (it was started with `--join` and caught up); a removed node is
//! done once every replica it held has moved and it left `__meta`, when it can be stopped.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use kafka_protocol::messages::add_raft_voter_request::Listener;
use kafka_protocol::messages::{
    AddRaftVoterRequest, ApiKey, DescribeQuorumRequest, MetadataRequest, RemoveRaftVoterRequest,
    RequestKind, ResponseKind, TopicName, describe_quorum_request,
};
use kafka_protocol::protocol::StrBytes;

use crate::tool_conn::{ClientSecurity, Conn};

/// How a tool reaches the cluster (shared by add-node and remove-node).
#[derive(Debug, Args)]
pub struct Reach {
    /// Kafka listeners to ask, tried in turn: HOST:PORT,HOST:PORT,...
    #[arg(long, value_name = "HOST:PORT,...")]
    pub bootstrap: String,
    /// A client property, as librdkafka names it (repeatable; see `cluster status --help`)
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// A properties file of client settings, as Kafka's tools take it
    #[arg(long, value_name = "FILE")]
    pub command_config: Option<std::path::PathBuf>,
    /// How long to follow the change before giving up (it goes on in the cluster), in ms
    #[arg(long, default_value_t = 600_000, value_name = "MS")]
    pub wait_ms: u64,
    /// Return once the cluster recorded the change, without following it
    #[arg(long)]
    pub no_wait: bool,
}

/// `sluice cluster add-node` options.
#[derive(Debug, Args)]
pub struct AddNodeArgs {
    /// The new node: ID@RAFT_HOST:PORT (the --raft-addr it will be started with)
    #[arg(value_name = "ID@HOST:PORT")]
    pub node: String,
    #[command(flatten)]
    pub reach: Reach,
}

/// `sluice cluster remove-node` options.
#[derive(Debug, Args)]
pub struct RemoveNodeArgs {
    /// The node to remove (decommission: its replicas move to the other members first)
    #[arg(value_name = "ID")]
    pub node: i32,
    #[command(flatten)]
    pub reach: Reach,
}

const TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(500);
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// `sluice cluster add-node`; returns the exit status.
pub fn add_node(a: &AddNodeArgs) -> anyhow::Result<i32> {
    let (id, addr) = a
        .node
        .split_once('@')
        .with_context(|| format!("{}: give the node as ID@RAFT_HOST:PORT", a.node))?;
    let id: i32 = id
        .parse()
        .ok()
        .filter(|i| *i > 0)
        .with_context(|| format!("{}: the node id must be a positive integer", a.node))?;
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("{}: the raft address needs a port", a.node))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("{}: bad port {port:?}", a.node))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let security =
        ClientSecurity::from_properties(a.reach.command_config.as_deref(), &a.reach.properties)?;
    let mut c = open(&a.reach.bootstrap, &security)?;
    let ResponseKind::AddRaftVoter(r) = c.call(
        ApiKey::AddRaftVoter,
        0,
        RequestKind::AddRaftVoter(
            AddRaftVoterRequest::default()
                .with_voter_id(id)
                .with_timeout_ms(30_000)
                .with_listeners(vec![
                    Listener::default()
                        .with_name(StrBytes::from_static_str("RAFT"))
                        .with_host(StrBytes::from_string(host.to_string()))
                        .with_port(port),
                ]),
        ),
    )?
    else {
        bail!("not an AddRaftVoter answer");
    };
    // DUPLICATE_VOTER at the same address: added before (a repeated command), followed as if
    // just added.
    let again = r.error_code == 126
        && r.error_message
            .as_deref()
            .is_some_and(|m| m.contains(&format!("(raft address {addr})")));
    if r.error_code != 0 && !again {
        bail!(
            "the cluster refused to add node {id}: {} (error {})",
            r.error_message.as_deref().unwrap_or("no message"),
            r.error_code
        );
    }
    if again {
        println!("node {id} is already a member");
    } else {
        println!("node {id} added at raft address {addr}");
    }
    println!(
        "start it with: sluice raft-cluster --node-id {id} --raft-addr {addr} --join <any member's raft address> --tls-dir <dir with ca.pem and node-{id}.pem/.key>"
    );
    if a.reach.no_wait {
        return Ok(0);
    }
    follow(
        a.reach.wait_ms,
        || {
            let q = quorum(&a.reach.bootstrap, &security)?;
            Ok(if q.voters.contains(&id) {
                Step::Done(format!(
                    "node {id} votes in __meta: it has joined the cluster"
                ))
            } else if q.observers.contains(&id) {
                Step::Waiting(format!("node {id} is catching up (a learner of __meta)"))
            } else {
                Step::Waiting(format!("waiting for node {id} to start and join"))
            })
        },
        &format!(
            "node {id} is a member but does not vote yet after {} ms; the cluster keeps waiting for it",
            a.reach.wait_ms
        ),
    )
}

/// `sluice cluster remove-node`; returns the exit status.
pub fn remove_node(a: &RemoveNodeArgs) -> anyhow::Result<i32> {
    let id = a.node;
    let security =
        ClientSecurity::from_properties(a.reach.command_config.as_deref(), &a.reach.properties)?;
    let mut c = open(&a.reach.bootstrap, &security)?;
    let ResponseKind::RemoveRaftVoter(r) = c.call(
        ApiKey::RemoveRaftVoter,
        0,
        RequestKind::RemoveRaftVoter(RemoveRaftVoterRequest::default().with_voter_id(id)),
    )?
    else {
        bail!("not a RemoveRaftVoter answer");
    };
    if r.error_code != 0 {
        bail!(
            "the cluster refused to remove node {id}: {} (error {})",
            r.error_message.as_deref().unwrap_or("no message"),
            r.error_code
        );
    }
    println!("node {id} removed from the members: its replicas are moving to the other nodes");
    if a.reach.no_wait {
        return Ok(0);
    }
    follow(
        a.reach.wait_ms,
        || {
            let mut c = open_other(&a.reach.bootstrap, &security, id)?;
            let q = describe_quorum(&mut c)?;
            let held = replicas_on(&mut c, id)?;
            Ok(
                if held == 0 && !q.voters.contains(&id) && !q.observers.contains(&id) {
                    Step::Done(format!(
                        "node {id} holds no replica and has left __meta: it can be stopped now"
                    ))
                } else {
                    Step::Waiting(format!(
                        "node {id} still holds {held} replica(s) (or has not left __meta yet)"
                    ))
                },
            )
        },
        &format!(
            "node {id} is still leaving after {} ms; the cluster goes on moving its replicas",
            a.reach.wait_ms
        ),
    )
}

/// Where a change being followed stands.
enum Step {
    /// Complete: say so and exit 0.
    Done(String),
    /// Still under way: said every [`REPORT_EVERY`].
    Waiting(String),
}

/// Asks `poll` every [`POLL`] until it says done (exit 0) or `wait_ms` passed (exit 1 with
/// `gave_up`); where it stands, and failures to ask, are printed every [`REPORT_EVERY`].
fn follow(
    wait_ms: u64,
    mut poll: impl FnMut() -> anyhow::Result<Step>,
    gave_up: &str,
) -> anyhow::Result<i32> {
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let mut next_report = Instant::now() + REPORT_EVERY;
    loop {
        let say = match poll() {
            Ok(Step::Done(m)) => {
                println!("{m}");
                return Ok(0);
            }
            Ok(Step::Waiting(m)) => m,
            Err(e) => format!("asking the cluster failed (retrying): {e:#}"),
        };
        if Instant::now() >= next_report {
            next_report = Instant::now() + REPORT_EVERY;
            println!("{say}");
        }
        if Instant::now() >= deadline {
            eprintln!("{gave_up}");
            return Ok(1);
        }
        std::thread::sleep(POLL);
    }
}

/// The first bootstrap address that answers.
fn open(bootstrap: &str, security: &ClientSecurity) -> anyhow::Result<Conn> {
    let mut errors = Vec::new();
    for addr in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match Conn::open(addr, TIMEOUT, security) {
            Ok(c) => return Ok(c),
            Err(e) => errors.push(format!("{addr}: {e:#}")),
        }
    }
    bail!("no bootstrap address answered: {}", errors.join("; "))
}

/// `__meta`'s voters and observers as a node describes them.
struct Quorum {
    voters: Vec<i32>,
    observers: Vec<i32>,
}

fn quorum(bootstrap: &str, security: &ClientSecurity) -> anyhow::Result<Quorum> {
    describe_quorum(&mut open(bootstrap, security)?)
}

/// A connection to a node other than `node` (through `bootstrap`'s Metadata): a removed node
/// stops learning what `__meta` decides, so its own answers would never change.
fn open_other(bootstrap: &str, security: &ClientSecurity, node: i32) -> anyhow::Result<Conn> {
    let mut c = open(bootstrap, security)?;
    let ResponseKind::Metadata(md) = c.call(
        ApiKey::Metadata,
        12,
        RequestKind::Metadata(MetadataRequest::default().with_topics(Some(Vec::new()))),
    )?
    else {
        bail!("not a Metadata answer");
    };
    for b in md.brokers.iter().filter(|b| b.node_id.0 != node) {
        let addr = crate::tool_conn::host_port(b.host.as_str(), b.port);
        if let Ok(other) = Conn::open(&addr, TIMEOUT, security) {
            return Ok(other);
        }
    }
    Ok(c)
}

fn describe_quorum(c: &mut Conn) -> anyhow::Result<Quorum> {
    let ResponseKind::DescribeQuorum(r) = c.call(
        ApiKey::DescribeQuorum,
        1,
        RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
                .with_partitions(vec![
                    describe_quorum_request::PartitionData::default().with_partition_index(0),
                ]),
        ])),
    )?
    else {
        bail!("not a DescribeQuorum answer");
    };
    let p = r
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .context("DescribeQuorum answered no partition")?;
    if p.error_code != 0 {
        bail!("DescribeQuorum: error {}", p.error_code);
    }
    Ok(Quorum {
        voters: p.current_voters.iter().map(|v| v.replica_id.0).collect(),
        observers: p.observers.iter().map(|v| v.replica_id.0).collect(),
    })
}

/// How many partition replicas Metadata lists on `node`.
fn replicas_on(c: &mut Conn, node: i32) -> anyhow::Result<usize> {
    let ResponseKind::Metadata(md) = c.call(
        ApiKey::Metadata,
        12,
        RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
    )?
    else {
        bail!("not a Metadata answer");
    };
    Ok(md
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .filter(|p| p.replica_nodes.iter().any(|r| r.0 == node))
        .count())
}
