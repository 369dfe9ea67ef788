//! Errors, one enum per caller-facing operation, each naming what it was doing (path, node,
//! address) so a log line alone says what to fix.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Writing or reading the cluster CA and node certificates ([`crate::certs`]).
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read (missing, permissions, ...).
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// What the file should hold ("cluster CA certificate", ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file was readable but held no usable PEM section of the expected kind.
    #[error("{what} {}: {detail}", path.display())]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong ("no CERTIFICATE section", a PEM parse error, ...).
        detail: String,
    },
    /// `generate` refuses to overwrite existing files (a CA key is not something to lose).
    #[error("{} already exists; refusing to overwrite it (use an empty directory)", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The node certificate does not chain to any certificate in `ca.pem`.
    #[error("node certificate {} is not issued by the cluster CA in {}: {reason}", cert.display(), ca.display())]
    NotIssuedByCa {
        /// The node certificate file.
        cert: PathBuf,
        /// The CA file.
        ca: PathBuf,
        /// rustls/webpki's verdict.
        reason: String,
    },
    /// The node certificate chains to the CA but cannot be used (expired, missing key usage, ...).
    #[error("node certificate {} cannot be used for node-to-node TLS: {reason}", cert.display())]
    Unusable {
        /// The node certificate file.
        cert: PathBuf,
        /// rustls/webpki's verdict.
        reason: String,
    },
    /// The node certificate is valid but issued to another node.
    #[error(
        "node certificate {} is not for node {expected}: it does not carry the DNS name {name} \
         in its subjectAltName",
        cert.display()
    )]
    WrongNodeId {
        /// The node certificate file.
        cert: PathBuf,
        /// The node id that was asked for.
        expected: u64,
        /// The name the certificate should carry.
        name: String,
    },
    /// The private key cannot be loaded or does not belong to the certificate.
    #[error("private key {} does not fit certificate {}: {reason}", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// rustls's verdict.
        reason: String,
    },
    /// A node id is 0 (reserved by Raft for "none") or listed twice.
    #[error("invalid node list: {0}")]
    InvalidNodes(String),
    /// rcgen failed to build a key or certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Starting a [`crate::Transport`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is inconsistent (ids, limits, TLS identity for another node).
    #[error("invalid transport configuration for node {node_id}: {detail}")]
    Config {
        /// This node.
        node_id: u64,
        /// What is wrong.
        detail: String,
    },
    /// rustls or quinn refused the TLS material.
    #[error("node {node_id}: cannot build the TLS configuration: {detail}")]
    Tls {
        /// This node.
        node_id: u64,
        /// rustls's or quinn's error.
        detail: String,
    },
    /// The UDP socket could not be bound or wrapped by the runtime.
    #[error("node {node_id}: cannot bind the Raft address {addr}: {source}")]
    Bind {
        /// This node.
        node_id: u64,
        /// The `--raft-addr`.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// [`crate::Transport::send`] refused a payload. Queue overflow is *not* an error (the oldest
/// batch is dropped and counted, Raft retransmits).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The destination is not in `peers`.
    #[error("node {0} is not a configured peer")]
    UnknownPeer(u64),
    /// The payload is larger than the frame limit; the receiver would refuse it.
    #[error("a {bytes}-byte batch exceeds the {max}-byte frame limit")]
    TooLarge {
        /// Payload size.
        bytes: usize,
        /// `Limits::frame_bytes_max`.
        max: usize,
    },
    /// `shutdown` was called.
    #[error("the transport is shut down")]
    ShutDown,
}

/// Parsing a `id@host:port` peer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid peer {input:?} (expected id@host:port, e.g. 2@10.0.0.2:7002): {detail}")]
pub struct PeerParseError {
    /// What was given.
    pub input: String,
    /// What is wrong.
    pub detail: String,
}
