//! Command line, environment and config file, merged: flags beat `SLUICE_*` env, env beats the
//! TOML file, the file beats defaults. Every problem is reported before anything is touched.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde::Deserialize;

/// When a produce is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After fdatasync: an acknowledged write survives power loss (default).
    Fsync,
    /// After the write reaches the OS; synced every `flush-interval-ms`. Survives a process
    /// crash (kill -9), not a machine crash.
    Os,
}

/// Sluice: a Kafka-compatible streaming server.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
pub struct Cli {
    /// Address the Kafka listener binds [default: 127.0.0.1:9092]
    #[arg(
        long,
        global = true,
        env = "SLUICE_KAFKA_ADDR",
        value_name = "HOST:PORT"
    )]
    pub kafka_addr: Option<String>,
    /// Address clients are told to connect to [default: the --kafka-addr]
    #[arg(
        long,
        global = true,
        env = "SLUICE_ADVERTISED_ADDR",
        value_name = "HOST:PORT"
    )]
    pub advertised_addr: Option<String>,
    /// Directory holding all data [default: ./data]
    #[arg(long, global = true, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file; keys are the long flag names with '_' for '-'
    #[arg(long, global = true, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id: required by `raft-cluster` (one per node, in its --peers); a standalone
    /// broker is node 1 unless told otherwise
    #[arg(long, global = true, env = "SLUICE_NODE_ID")]
    pub node_id: Option<i32>,
    /// When produces are acknowledged: after fsync, or after the OS has the write [default: fsync]
    #[arg(long, global = true, env = "SLUICE_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// With --durability=os: how often data is synced [default: 1000]
    #[arg(long, global = true, env = "SLUICE_FLUSH_INTERVAL_MS")]
    pub flush_interval_ms: Option<u64>,
    /// Create topics on first use by Metadata or Produce [default: true]
    #[arg(long, global = true, env = "SLUICE_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics [default: 1]
    #[arg(long, global = true, env = "SLUICE_NUM_PARTITIONS")]
    pub num_partitions: Option<i32>,
    /// Largest request frame accepted, in bytes [default: 104857600]
    #[arg(long, global = true, env = "SLUICE_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Memory for requests in flight across all connections; reading stops when it is used up
    /// [default: 134217728]
    #[arg(long, global = true, env = "SLUICE_MAX_INFLIGHT_BYTES")]
    pub max_inflight_bytes: Option<usize>,
    /// How often retention deletes expired segments [default: 30000]
    #[arg(long, global = true, env = "SLUICE_RETENTION_CHECK_INTERVAL_MS")]
    pub retention_check_interval_ms: Option<u64>,
    /// How long the log cleaner sleeps when no compacted partition needs cleaning (Kafka's
    /// log.cleaner.backoff.ms) [default: 15000]
    #[arg(long, global = true, env = "SLUICE_LOG_CLEANER_BACKOFF_MS")]
    pub log_cleaner_backoff_ms: Option<u64>,
    /// The log cleaner's I/O budget: bytes it reads per second, 0 for no limit (Kafka's
    /// log.cleaner.io.max.bytes.per.second) [default: 67108864]
    #[arg(
        long,
        global = true,
        env = "SLUICE_LOG_CLEANER_IO_MAX_BYTES_PER_SECOND"
    )]
    pub log_cleaner_io_max_bytes_per_second: Option<u64>,
    /// Runtime worker threads, 0 for one per core [default: 0]
    #[arg(long, global = true, env = "SLUICE_WORKERS")]
    pub workers: Option<usize>,
    /// Partitions of the internal `__consumer_offsets` topic, fixed when it is first created
    /// (Kafka's offsets.topic.num.partitions) [default: 50]
    #[arg(long, global = true, env = "SLUICE_OFFSETS_PARTITIONS")]
    pub offsets_partitions: Option<i32>,
    /// Segment size of the internal `__consumer_offsets` topic, fixed when it is first created
    /// (Kafka's offsets.topic.segment.bytes) [default: 104857600]
    #[arg(long, global = true, env = "SLUICE_OFFSETS_TOPIC_SEGMENT_BYTES")]
    pub offsets_topic_segment_bytes: Option<u64>,
    /// How long the first rebalance of an empty group waits for more members
    /// (Kafka's group.initial.rebalance.delay.ms) [default: 3000]
    #[arg(long, global = true, env = "SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics [default: off]
    #[arg(
        long,
        global = true,
        env = "SLUICE_METRICS_ADDR",
        value_name = "HOST:PORT"
    )]
    pub metrics_addr: Option<String>,
    /// Kafka listeners: NAME://HOST:PORT,... with names PLAINTEXT, SSL, SASL_PLAINTEXT,
    /// SASL_SSL (or any name mapped by --listener-security-protocol-map); replaces --kafka-addr
    #[arg(
        long,
        global = true,
        env = "SLUICE_LISTENERS",
        value_name = "NAME://HOST:PORT,..."
    )]
    pub listeners: Option<String>,
    /// Addresses clients are told, per listener: NAME://HOST:PORT,... [default: the bind address]
    #[arg(
        long,
        global = true,
        env = "SLUICE_ADVERTISED_LISTENERS",
        value_name = "NAME://HOST:PORT,..."
    )]
    pub advertised_listeners: Option<String>,
    /// Security protocol of custom listener names: NAME:PROTOCOL,...
    #[arg(
        long,
        global = true,
        env = "SLUICE_LISTENER_SECURITY_PROTOCOL_MAP",
        value_name = "NAME:PROTOCOL,..."
    )]
    pub listener_security_protocol_map: Option<String>,
    /// TLS certificate chain (PEM) of SSL and SASL_SSL listeners; reloaded on SIGHUP
    #[arg(long, global = true, env = "SLUICE_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of SSL and SASL_SSL listeners; reloaded on SIGHUP
    #[arg(long, global = true, env = "SLUICE_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Client certificates on TLS listeners: none, requested or required [default: none]
    #[arg(long, global = true, env = "SLUICE_TLS_CLIENT_AUTH", value_enum)]
    pub tls_client_auth: Option<ClientAuth>,
    /// CA certificates (PEM) that client certificates must chain to
    #[arg(long, global = true, env = "SLUICE_TLS_CLIENT_CA", value_name = "PEM")]
    pub tls_client_ca: Option<PathBuf>,
    /// SASL mechanisms offered on SASL listeners [default: PLAIN,SCRAM-SHA-256,SCRAM-SHA-512]
    #[arg(
        long,
        global = true,
        env = "SLUICE_SASL_MECHANISMS",
        value_name = "M,M,..."
    )]
    pub sasl_mechanisms: Option<String>,
    /// Authorizer: none (everything allowed, as Kafka without one) or acl [default: none]
    #[arg(long, global = true, env = "SLUICE_AUTHORIZER", value_enum)]
    pub authorizer: Option<Authorizer>,
    /// Principals allowed everything: User:admin;User:ops
    #[arg(
        long,
        global = true,
        env = "SLUICE_SUPER_USERS",
        value_name = "User:NAME;..."
    )]
    pub super_users: Option<String>,
    /// Delay before answering a failed authentication and closing the connection (Kafka's
    /// connection.failed.authentication.delay.ms) [default: 100]
    #[arg(
        long,
        global = true,
        env = "SLUICE_CONNECTION_FAILED_AUTHENTICATION_DELAY_MS"
    )]
    pub connection_failed_authentication_delay_ms: Option<u64>,
    /// SASL session lifetime; clients re-authenticate before it ends, others are disconnected
    /// (Kafka's connections.max.reauth.ms; 0: no limit) [default: 0]
    #[arg(long, global = true, env = "SLUICE_CONNECTIONS_MAX_REAUTH_MS")]
    pub connections_max_reauth_ms: Option<u64>,
    /// What to run: nothing for the standalone broker, `raft-cluster` for cluster mode,
    /// `certs` to create a cluster's certificates.
    #[command(subcommand)]
    pub command: Option<crate::cluster::cli::Command>,
}

/// The config file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    kafka_addr: Option<String>,
    advertised_addr: Option<String>,
    data_dir: Option<PathBuf>,
    node_id: Option<i32>,
    durability: Option<Durability>,
    flush_interval_ms: Option<u64>,
    auto_create_topics: Option<bool>,
    num_partitions: Option<i32>,
    max_frame_bytes: Option<usize>,
    max_inflight_bytes: Option<usize>,
    retention_check_interval_ms: Option<u64>,
    log_cleaner_backoff_ms: Option<u64>,
    log_cleaner_io_max_bytes_per_second: Option<u64>,
    workers: Option<usize>,
    offsets_partitions: Option<i32>,
    offsets_topic_segment_bytes: Option<u64>,
    group_initial_rebalance_delay_ms: Option<u64>,
    metrics_addr: Option<String>,
    listeners: Option<String>,
    advertised_listeners: Option<String>,
    listener_security_protocol_map: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_auth: Option<ClientAuth>,
    tls_client_ca: Option<PathBuf>,
    sasl_mechanisms: Option<String>,
    authorizer: Option<Authorizer>,
    super_users: Option<String>,
    connection_failed_authentication_delay_ms: Option<u64>,
    connections_max_reauth_ms: Option<u64>,
    /// Cluster mode settings (`sluice raft-cluster`); ignored by the standalone broker.
    cluster: Option<crate::cluster::cli::FileCluster>,
}

/// Settings after merging, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Advertised host.
    pub advertised_host: String,
    /// Advertised port.
    pub advertised_port: u16,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Broker id.
    pub node_id: i32,
    /// Whether the node id was given (flag, env or file) rather than defaulted: cluster mode
    /// requires it.
    pub node_id_given: bool,
    /// The config file's `[cluster]` table, if any.
    pub file_cluster: Option<crate::cluster::cli::FileCluster>,
    /// Ack policy.
    pub durability: Durability,
    /// Background sync period with `Durability::Os`.
    pub flush_interval_ms: u64,
    /// Auto-create topics.
    pub auto_create_topics: bool,
    /// Default partitions.
    pub num_partitions: i32,
    /// Frame limit.
    pub max_frame_bytes: usize,
    /// In-flight request memory.
    pub max_inflight_bytes: usize,
    /// Retention period check.
    pub retention_check_interval_ms: u64,
    /// Log cleaner sleep when idle.
    pub log_cleaner_backoff_ms: u64,
    /// Log cleaner read budget per second (0: unlimited).
    pub log_cleaner_io_max_bytes_per_second: u64,
    /// Runtime threads.
    pub workers: usize,
    /// Partitions of `__consumer_offsets`.
    pub offsets_partitions: i32,
    /// Segment size of `__consumer_offsets` at creation.
    pub offsets_topic_segment_bytes: u64,
    /// Initial rebalance delay of empty groups.
    pub group_initial_rebalance_delay_ms: u64,
    /// Where the metrics endpoint listens (none: off).
    pub metrics_addr: Option<SocketAddr>,
    /// Kafka listeners; the first is the one `kafka_addr` / `advertised_*` describe.
    pub listeners: Vec<crate::listeners::ListenerConfig>,
    /// Certificate and key of TLS listeners, and client-certificate checks.
    pub tls: Option<TlsSettings>,
    /// SASL mechanisms offered.
    pub sasl_mechanisms: Vec<sluice_sasl::Mechanism>,
    /// ACL enforcement and super users.
    pub security: sluice_proto::security::SecurityConfig,
    /// Delay before a failed authentication is answered and the connection closed.
    pub failed_authentication_delay_ms: u64,
    /// SASL session lifetime (0: unlimited).
    pub reauth_ms: u64,
    /// Cluster mode: where other nodes reach this node's replica listener.
    pub replica_advertised: Option<(String, u16)>,
    /// Cluster mode: this node's Raft address as peers reach it (registered in `__meta`).
    pub raft_advertised: Option<String>,
}

/// Client certificates on TLS listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Not asked for.
    None,
    /// Asked for; a client without one connects anonymously (or authenticates with SASL).
    Requested,
    /// Required: a client without a trusted certificate cannot connect.
    Required,
}

/// Which authorizer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Authorizer {
    /// Everything is allowed.
    None,
    /// Kafka ACLs; with no matching ACL a request is denied.
    Acl,
}

/// TLS files and client-certificate policy.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// Client certificates.
    pub client_auth: ClientAuth,
    /// Trust roots for client certificates.
    pub client_ca: Option<PathBuf>,
}

impl Cli {
    /// Merges flags/env with the config file and defaults, and validates the result.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let file: FileConfig = match &self.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "config file {}: {}",
                        path.display(),
                        e.to_string().lines().collect::<Vec<_>>().join(" ")
                    )
                })?
            }
        };
        let listeners_s = self.listeners.or(file.listeners);
        let kafka_addr_given = self.kafka_addr.or(file.kafka_addr);
        let advertised = self.advertised_addr.or(file.advertised_addr);
        let listeners = match listeners_s {
            Some(l) => {
                if kafka_addr_given.is_some() || advertised.is_some() {
                    bail!(
                        "--listeners replaces --kafka-addr and --advertised-addr: give one or the other (use --advertised-listeners)"
                    );
                }
                let map = match self
                    .listener_security_protocol_map
                    .or(file.listener_security_protocol_map)
                {
                    Some(m) => crate::listeners::parse_protocol_map(&m)
                        .context("--listener-security-protocol-map")?,
                    None => Default::default(),
                };
                let adv = self.advertised_listeners.or(file.advertised_listeners);
                crate::listeners::parse(&l, adv.as_deref(), &map).context("--listeners")?
            }
            None => {
                if self.advertised_listeners.is_some() || file.advertised_listeners.is_some() {
                    bail!("--advertised-listeners needs --listeners");
                }
                let kafka_addr_s = kafka_addr_given.unwrap_or_else(|| "127.0.0.1:9092".into());
                let kafka_addr = resolve_addr(&kafka_addr_s).context("--kafka-addr")?;
                let (host, port) = match advertised {
                    Some(a) => split_host_port(&a).context("--advertised-addr")?,
                    None => {
                        if kafka_addr.ip().is_unspecified() {
                            bail!(
                                "--kafka-addr {kafka_addr_s} listens on all interfaces: set --advertised-addr to the address clients should use"
                            );
                        }
                        (kafka_addr.ip().to_string(), kafka_addr.port())
                    }
                };
                vec![crate::listeners::ListenerConfig {
                    name: "PLAINTEXT".into(),
                    protocol: sluice_proto::security::SecurityProtocol::Plaintext,
                    bind: kafka_addr,
                    advertised_host: host,
                    advertised_port: port,
                }]
            }
        };
        let advertised_host = listeners[0].advertised_host.clone();
        let advertised_port = listeners[0].advertised_port;
        let tls_cert = self.tls_cert.or(file.tls_cert);
        let tls_key = self.tls_key.or(file.tls_key);
        let client_auth = self
            .tls_client_auth
            .or(file.tls_client_auth)
            .unwrap_or(ClientAuth::None);
        let client_ca = self.tls_client_ca.or(file.tls_client_ca);
        let needs_tls = listeners.iter().any(|l| l.protocol.uses_tls());
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => {
                if client_auth != ClientAuth::None && client_ca.is_none() {
                    bail!(
                        "--tls-client-auth {client_auth:?} needs --tls-client-ca PEM (the CA client certificates chain to)"
                    );
                }
                Some(TlsSettings {
                    cert,
                    key,
                    client_auth,
                    client_ca,
                })
            }
            (None, None) if needs_tls => bail!(
                "an SSL or SASL_SSL listener needs --tls-cert PEM and --tls-key PEM (create them with `sluice certs --server-names localhost,127.0.0.1 --out DIR`)"
            ),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        let mechanisms_s = self
            .sasl_mechanisms
            .or(file.sasl_mechanisms)
            .unwrap_or_else(|| "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".into());
        let mut sasl_mechanisms = Vec::new();
        for m in mechanisms_s
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            let mech = sluice_sasl::Mechanism::from_name(m).with_context(|| {
                format!("--sasl-mechanisms: '{m}' is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
            })?;
            if !sasl_mechanisms.contains(&mech) {
                sasl_mechanisms.push(mech);
            }
        }
        if sasl_mechanisms.is_empty() && listeners.iter().any(|l| l.protocol.uses_sasl()) {
            bail!("a SASL listener needs at least one mechanism in --sasl-mechanisms");
        }
        let mut super_users = Vec::new();
        if let Some(su) = self.super_users.or(file.super_users) {
            for p in su.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                match p.split_once(':') {
                    Some((t, n)) if !t.is_empty() && !n.is_empty() => {
                        super_users.push(p.to_string())
                    }
                    _ => bail!(
                        "--super-users: '{p}' is not a principal (TYPE:NAME, e.g. User:admin; separate several with ';')"
                    ),
                }
            }
        }
        let security = sluice_proto::security::SecurityConfig {
            authorizer: self.authorizer.or(file.authorizer) == Some(Authorizer::Acl),
            super_users,
        };
        let node_id_given = self.node_id.or(file.node_id);
        let node_id = node_id_given.unwrap_or(1);
        if node_id < 0 {
            bail!("--node-id must be 0 or more, got {node_id}");
        }
        let num_partitions = self.num_partitions.or(file.num_partitions).unwrap_or(1);
        if !(1..=100_000).contains(&num_partitions) {
            bail!("--num-partitions must be between 1 and 100000, got {num_partitions}");
        }
        let max_frame_bytes = self
            .max_frame_bytes
            .or(file.max_frame_bytes)
            .unwrap_or(100 << 20);
        if !(1024..=i32::MAX as usize).contains(&max_frame_bytes) {
            bail!(
                "--max-frame-bytes must be between 1024 and {}, got {max_frame_bytes}",
                i32::MAX
            );
        }
        let max_inflight_bytes = self
            .max_inflight_bytes
            .or(file.max_inflight_bytes)
            .unwrap_or(128 << 20);
        if max_inflight_bytes < max_frame_bytes {
            bail!(
                "--max-inflight-bytes ({max_inflight_bytes}) must be at least --max-frame-bytes ({max_frame_bytes})"
            );
        }
        let flush_interval_ms = self
            .flush_interval_ms
            .or(file.flush_interval_ms)
            .unwrap_or(1000);
        if flush_interval_ms == 0 {
            bail!("--flush-interval-ms must be at least 1");
        }
        let retention_check_interval_ms = self
            .retention_check_interval_ms
            .or(file.retention_check_interval_ms)
            .unwrap_or(30_000);
        if retention_check_interval_ms == 0 {
            bail!("--retention-check-interval-ms must be at least 1");
        }
        let offsets_topic_segment_bytes = self
            .offsets_topic_segment_bytes
            .or(file.offsets_topic_segment_bytes)
            .unwrap_or(100 << 20);
        if offsets_topic_segment_bytes < 4096 {
            bail!("--offsets-topic-segment-bytes must be at least 4096");
        }
        let log_cleaner_backoff_ms = self
            .log_cleaner_backoff_ms
            .or(file.log_cleaner_backoff_ms)
            .unwrap_or(15_000);
        if log_cleaner_backoff_ms == 0 {
            bail!("--log-cleaner-backoff-ms must be at least 1");
        }
        let log_cleaner_io_max_bytes_per_second = self
            .log_cleaner_io_max_bytes_per_second
            .or(file.log_cleaner_io_max_bytes_per_second)
            .unwrap_or(64 << 20);
        let offsets_partitions = self
            .offsets_partitions
            .or(file.offsets_partitions)
            .unwrap_or(50);
        if !(1..=1000).contains(&offsets_partitions) {
            bail!("--offsets-partitions must be between 1 and 1000, got {offsets_partitions}");
        }
        let group_initial_rebalance_delay_ms = self
            .group_initial_rebalance_delay_ms
            .or(file.group_initial_rebalance_delay_ms)
            .unwrap_or(3000);
        let metrics_addr = match self.metrics_addr.or(file.metrics_addr) {
            None => None,
            Some(a) => Some(resolve_addr(&a).context("--metrics-addr")?),
        };
        Ok(Config {
            advertised_host,
            advertised_port,
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            node_id,
            node_id_given: node_id_given.is_some(),
            file_cluster: file.cluster,
            durability: self
                .durability
                .or(file.durability)
                .unwrap_or(Durability::Fsync),
            flush_interval_ms,
            auto_create_topics: self
                .auto_create_topics
                .or(file.auto_create_topics)
                .unwrap_or(true),
            num_partitions,
            max_frame_bytes,
            max_inflight_bytes,
            retention_check_interval_ms,
            log_cleaner_backoff_ms,
            log_cleaner_io_max_bytes_per_second,
            workers: self.workers.or(file.workers).unwrap_or(0),
            offsets_partitions,
            offsets_topic_segment_bytes,
            group_initial_rebalance_delay_ms,
            metrics_addr,
            listeners,
            tls,
            sasl_mechanisms,
            security,
            failed_authentication_delay_ms: self
                .connection_failed_authentication_delay_ms
                .or(file.connection_failed_authentication_delay_ms)
                .unwrap_or(100),
            reauth_ms: self
                .connections_max_reauth_ms
                .or(file.connections_max_reauth_ms)
                .unwrap_or(0),
            replica_advertised: None,
            raft_advertised: None,
        })
    }
}

pub(crate) fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("'{s}' is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("'{port}' in '{s}' is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("'{s}' has no host");
    }
    Ok((host.to_string(), port))
}

pub(crate) fn resolve_addr(s: &str) -> anyhow::Result<SocketAddr> {
    split_host_port(s)?;
    s.to_socket_addrs()
        .with_context(|| format!("cannot resolve '{s}'"))?
        .next()
        .with_context(|| format!("'{s}' resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        let mut v = vec!["sluice"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)?.resolve()
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listeners[0].bind.to_string(), "127.0.0.1:9092");
        assert_eq!(c.advertised_host, "127.0.0.1");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.durability, Durability::Fsync);
    }

    #[test]
    fn flags_beat_file() {
        let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "kafka_addr = \"127.0.0.1:9500\"\nnum_partitions = 3\n").unwrap();
        let c = parse(&["--config", f.to_str().unwrap(), "--num-partitions", "5"]).unwrap();
        assert_eq!(c.listeners[0].bind.port(), 9500);
        assert_eq!(c.num_partitions, 5);
        std::fs::write(&f, "kafka_adr = \"x\"\n").unwrap();
        let e = parse(&["--config", f.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--kafka-addr", "nonsense"]).is_err());
        assert!(parse(&["--num-partitions", "0"]).is_err());
        assert!(parse(&["--kafka-addr", "0.0.0.0:9092"]).is_err());
        assert!(parse(&["--max-frame-bytes", "10"]).is_err());
    }
}
