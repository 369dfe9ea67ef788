//! TLS on the Kafka listener, over any runtime's connection halves.
//!
//! rustls is itself sans-IO: bytes from the socket go into a `ServerConnection`, plaintext comes
//! out, and what it wants sent is drained from it. The handshake runs with both halves in one
//! task; afterwards [`TlsReader`] and [`TlsWriter`] share the connection behind a mutex, so the
//! reading and writing halves of `connection.rs` work unchanged. TLS records the reading side
//! produces (a key update answer) leave with the next response.
//!
//! The server config is behind a lock: SIGHUP reloads the certificate, key and client CA
//! ([`TlsAcceptor::reload`]); connections already open keep the config they started with.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::Connection;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice_proto::runtime::{Reader, Runtime, Writer};

use crate::config::{ClientAuth, TlsSettings};

/// A handshake not finished within this is abandoned (slow or idle clients hold no slot).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Ciphertext read per socket read.
const READ_CHUNK: usize = 64 * 1024;

/// The TLS configuration of the Kafka listeners, reloadable.
pub struct TlsAcceptor {
    settings: TlsSettings,
    config: RwLock<Arc<rustls::ServerConfig>>,
}

/// ring, with AES-128-GCM first: as safe for this use, and a third cheaper per byte than
/// AES-256 for the broker and (as the server's choice is taken) for its clients — encryption
/// is most of what TLS costs a broker moving hundreds of MB/s.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as suite;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn build(settings: &TlsSettings) -> anyhow::Result<rustls::ServerConfig> {
    let chain = read_certs(&settings.cert).context("--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).with_context(|| {
        format!(
            "--tls-key: reading a PEM private key from {}",
            settings.key.display()
        )
    })?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match (settings.client_auth, &settings.client_ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca).context("--tls-client-ca")? {
                roots.add(c).with_context(|| {
                    format!("--tls-client-ca: bad CA certificate in {}", ca.display())
                })?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if auth == ClientAuth::Requested {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().context("client certificate verifier")?)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("--tls-cert and --tls-key do not form a usable certificate and key")?;
    // The order above decides, not the client's.
    config.ignore_client_order = true;
    Ok(config)
}

impl TlsAcceptor {
    /// Loads the certificate, key and client CA; every problem is reported here, at start.
    pub fn new(settings: TlsSettings) -> anyhow::Result<Self> {
        let config = build(&settings)?;
        Ok(TlsAcceptor {
            settings,
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// Re-reads the files; on any error the running configuration stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = build(&self.settings)?;
        *self.config.write().unwrap() = Arc::new(config);
        Ok(())
    }

    fn current(&self) -> Arc<rustls::ServerConfig> {
        self.config.read().unwrap().clone()
    }

    /// Runs the TLS handshake on a new connection. Returns the halves and the client
    /// certificate's subject common name, if it presented one.
    pub async fn accept<R: Runtime, Rd: Reader, W: Writer>(
        &self,
        rt: &R,
        reader: Rd,
        writer: W,
    ) -> io::Result<(TlsReader<Rd>, TlsWriter<W>, Option<String>)> {
        let (r, w, cert) = accept_with(rt, self.current(), reader, writer).await?;
        Ok((r, w, cert.and_then(|c| common_name(&c))))
    }
}

/// A TLS stream: its halves and the peer's (verified) leaf certificate.
pub type Stream<Rd, W> = (TlsReader<Rd>, TlsWriter<W>, Option<CertificateDer<'static>>);

/// The server side of a TLS handshake with `config`.
pub async fn accept_with<R: Runtime, Rd: Reader, W: Writer>(
    rt: &R,
    config: Arc<rustls::ServerConfig>,
    reader: Rd,
    writer: W,
) -> io::Result<Stream<Rd, W>> {
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    establish(rt, Connection::Server(conn), reader, writer).await
}

/// The client side of a TLS handshake with `config`, to `name`.
pub async fn connect_with<R: Runtime, Rd: Reader, W: Writer>(
    rt: &R,
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
    reader: Rd,
    writer: W,
) -> io::Result<Stream<Rd, W>> {
    let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    establish(rt, Connection::Client(conn), reader, writer).await
}

async fn establish<R: Runtime, Rd: Reader, W: Writer>(
    rt: &R,
    conn: Connection,
    reader: Rd,
    writer: W,
) -> io::Result<Stream<Rd, W>> {
    let handshake = handshake(conn, reader, writer);
    let timeout = async {
        rt.sleep(HANDSHAKE_TIMEOUT).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake not completed in time",
        ))
    };
    let (conn, reader, writer) = futures_lite::future::or(handshake, timeout).await?;
    let cert = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|c| c.clone().into_owned());
    let shared = Arc::new(Mutex::new(conn));
    Ok((
        TlsReader {
            conn: shared.clone(),
            inner: reader,
            pending: Vec::new(),
            pending_pos: 0,
            pending_end: 0,
        },
        TlsWriter {
            conn: shared,
            inner: writer,
            out: Vec::new(),
        },
        cert,
    ))
}

/// The subject CN of a DER certificate.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}

async fn handshake<Rd: Reader, W: Writer>(
    mut conn: Connection,
    mut reader: Rd,
    mut writer: W,
) -> io::Result<(Connection, Rd, W)> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut out = Vec::new();
    loop {
        if conn.wants_write() {
            out.clear();
            while conn.wants_write() {
                conn.write_tls(&mut out)?;
            }
            writer.write_all(&out).await?;
            continue;
        }
        if !conn.is_handshaking() {
            return Ok((conn, reader, writer));
        }
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during the TLS handshake",
            ));
        }
        let mut slice = &buf[..n];
        while !slice.is_empty() {
            conn.read_tls(&mut slice)?;
            if let Err(e) = conn.process_new_packets() {
                // Tell the client why (an alert) before giving up.
                out.clear();
                while conn.wants_write() {
                    if conn.write_tls(&mut out).is_err() {
                        break;
                    }
                }
                let _ = writer.write_all(&out).await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
}

/// The reading half of a TLS connection: plaintext out.
pub struct TlsReader<Rd> {
    conn: Arc<Mutex<Connection>>,
    inner: Rd,
    /// Ciphertext read but not yet taken by rustls (its plaintext buffer was full).
    /// Allocated (and zeroed) once; `pending_pos..pending_end` is what rustls has not taken.
    pending: Vec<u8>,
    pending_pos: usize,
    pending_end: usize,
}

impl<Rd: Reader> Reader for TlsReader<Rd> {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut conn = self.conn.lock().unwrap();
                while self.pending_pos < self.pending_end && conn.wants_read() {
                    let mut slice = &self.pending[self.pending_pos..self.pending_end];
                    let n = conn.read_tls(&mut slice)?;
                    self.pending_pos += n;
                    conn.process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    if n == 0 {
                        break;
                    }
                }
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The peer closed without close_notify: end of stream all the same.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
            }
            if self.pending.is_empty() {
                self.pending = vec![0; READ_CHUNK];
            }
            if self.pending_pos == self.pending_end {
                self.pending_pos = 0;
                self.pending_end = 0;
            } else if self.pending_end == self.pending.len() {
                // Full with a partial record at the end: move it to the front.
                self.pending
                    .copy_within(self.pending_pos..self.pending_end, 0);
                self.pending_end -= self.pending_pos;
                self.pending_pos = 0;
            }
            if self.pending_end == self.pending.len() {
                // rustls took nothing from a full buffer and has no plaintext: never spin.
                return Err(io::Error::other("TLS input stalled"));
            }
            let n = self
                .inner
                .read(&mut self.pending[self.pending_end..])
                .await?;
            self.pending_end += n;
            if n == 0 {
                return Ok(0);
            }
        }
    }
}

/// The writing half of a TLS connection: plaintext in, records out.
pub struct TlsWriter<W> {
    conn: Arc<Mutex<Connection>>,
    inner: W,
    out: Vec<u8>,
}

impl<W: Writer> Writer for TlsWriter<W> {
    async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        loop {
            self.out.clear();
            {
                let mut conn = self.conn.lock().unwrap();
                // rustls buffers up to its limit; encrypt in pieces so memory stays bounded.
                let n = conn.writer().write(buf)?;
                buf = &buf[n..];
                while conn.wants_write() {
                    conn.write_tls(&mut self.out)?;
                }
            }
            if !self.out.is_empty() {
                self.inner.write_all(&self.out).await?;
            }
            if buf.is_empty() {
                return Ok(());
            }
        }
    }
}
