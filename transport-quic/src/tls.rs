//! rustls configurations for mutual TLS between nodes (TLS 1.3 only, ring only).
//!
//! Both sides verify that the peer's certificate chains to the cluster CA ([`NodeIdentity`]'s
//! roots) with the right extended key usage:
//!
//! - acceptor: rustls's `WebPkiClientVerifier` (a client certificate is mandatory);
//! - dialer: [`ClusterCaVerifier`], the same chain check *without* the name check.
//!
//! The node id is deliberately not checked inside TLS. A TLS-level refusal reaches the other
//! side only as an alert ("bad certificate"), which cannot say which node was expected and which
//! answered. Instead the handshake ([`crate::handshake`]) runs right after TLS, before any Raft
//! byte: the acceptor checks the dialer's certificate carries the id the dialer claims and that
//! the dialer expected *this* node; the dialer checks the acceptor's certificate carries the
//! expected id. Refusals are then logged on both sides with both ids.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::certs::NodeIdentity;
use crate::transport::Limits;

/// ALPN protocol id of this transport; a peer speaking anything else fails the TLS handshake.
pub const ALPN: &[u8] = b"sluice-raft/1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The acceptor's configuration: present our certificate, require one chaining to the CA.
pub(crate) fn server_config(
    id: &NodeIdentity,
    limits: &Limits,
) -> Result<quinn::ServerConfig, String> {
    let tls = mutual_server(id, ALPN)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| format!("QUIC server crypto: {e}"))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(limits)?));
    Ok(config)
}

/// TLS 1.3 with our node certificate, requiring a client certificate that chains to the CA.
fn mutual_server(id: &NodeIdentity, alpn: &[u8]) -> Result<rustls::ServerConfig, String> {
    let provider = provider();
    let roots = Arc::new(id.root_store().map_err(|e| format!("cluster CA: {e}"))?);
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| format!("client certificate verifier: {e}"))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.cert_chain.clone(), id.key.clone_key())
        .map_err(|e| format!("node certificate: {e}"))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// TLS 1.3 presenting our node certificate, accepting a server that chains to the CA (its
/// node id is checked after the handshake).
fn mutual_client(id: &NodeIdentity, alpn: &[u8]) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let verifier = ClusterCaVerifier {
        roots: Arc::new(id.root_store().map_err(|e| format!("cluster CA: {e}"))?),
        provider: provider.clone(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(id.cert_chain.clone(), id.key.clone_key())
        .map_err(|e| format!("node certificate: {e}"))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// The dialer's configuration: present our certificate, verify the acceptor's chain.
pub(crate) fn client_config(
    id: &NodeIdentity,
    limits: &Limits,
) -> Result<quinn::ClientConfig, String> {
    let tls = mutual_client(id, ALPN)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| format!("QUIC client crypto: {e}"))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(limits)?));
    Ok(config)
}

fn transport_config(limits: &Limits) -> Result<quinn::TransportConfig, String> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(limits.idle_timeout_ms))
        .map_err(|e| format!("idle timeout: {e}"))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(Duration::from_millis(limits.keep_alive_ms)));
    // Cluster peers share a data center. With quinn's default (333 ms, meant for the internet)
    // an Initial sent to a peer that is not listening yet — nodes started together — is
    // retransmitted only after about a second, and the first election waits for it. The
    // estimate follows the measured round trip from the first sample on.
    t.initial_rtt(Duration::from_millis(30));
    // One data stream per direction plus the handshake stream; a few spare for reconnect races.
    t.max_concurrent_uni_streams(8u32.into());
    t.max_concurrent_bidi_streams(4u32.into());
    // Enough window for large append batches on a LAN without stalling on flow control.
    t.stream_receive_window((8u32 << 20).into());
    t.receive_window((16u32 << 20).into());
    t.send_window(16 << 20);
    Ok(t)
}

/// The peer certificate of an established connection (the leaf), if any.
pub(crate) fn peer_leaf_cert(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().cloned()
}

/// Server certificate verifier for dialing: chain to the cluster CA with `serverAuth`, no name
/// check (see the module doc: the node id is checked by the handshake, with both ids logged).
#[derive(Debug)]
pub(crate) struct ClusterCaVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ClusterCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// ALPN of node-to-node Kafka-protocol traffic over TCP (snapshot catch-up fetches).
pub const REPLICA_ALPN: &[u8] = b"sluice-replica/1";

/// TLS over TCP for node-to-node Kafka-protocol traffic (replica catch-up), with the same
/// mutual authentication as the Raft transport: the acceptor's configuration. The dialer's
/// node is then found with [`node_of_cert`].
pub fn replica_server_config(id: &NodeIdentity) -> Result<rustls::ServerConfig, String> {
    mutual_server(id, REPLICA_ALPN)
}

/// The dialer's side of [`replica_server_config`]: present this node's certificate, accept an
/// acceptor chaining to the cluster CA (check its node with [`node_of_cert`] afterwards).
pub fn replica_client_config(id: &NodeIdentity) -> Result<rustls::ClientConfig, String> {
    mutual_client(id, REPLICA_ALPN)
}

/// Which of `candidates` a verified node certificate belongs to.
pub fn node_of_cert(
    cert: &CertificateDer<'_>,
    candidates: impl IntoIterator<Item = u64>,
) -> Option<u64> {
    candidates
        .into_iter()
        .find(|&id| crate::certs::cert_is_for_node(cert, id))
}
