//! TLS on the Kafka listener, over any runtime's connection halves.
//!
//! rustls is itself sans-IO: bytes from the socket go into a `ServerConnection`, plaintext comes
//! out, and what it wants sent is drained from it. The handshake runs with both halves in one
//! task; afterwards [`TlsReader`] and [`TlsWriter`] share the connection behind a mutex, so the
//! reading and writing halves of `connection.rs` work unchanged. Decryption runs in a task of its
//! own, so it overlaps with request handling; the writing half encrypts and sends in the caller's
//! task, piece by piece, so a fetch response starts to leave after its first piece is encrypted.
//! TLS records the reading side produces (a key update answer) leave with the next response.
//!
//! The server config is behind a lock: SIGHUP reloads the certificate, key and client CA
//! ([`TlsAcceptor::reload`]); connections already open keep the config they started with.

use std::io::{self, BufRead, Write};
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
/// Ciphertext read per socket read (during the handshake, and by the decrypting pump, which
/// keeps a buffer this large for the life of the connection).
const READ_CHUNK: usize = 64 * 1024;

/// The TLS configuration of the Kafka listeners, reloadable.
pub struct TlsAcceptor {
    settings: TlsSettings,
    config: RwLock<Arc<rustls::ServerConfig>>,
}

/// ring, with AES-128-GCM first: as safe for this use, and a third cheaper per byte than
/// AES-256 for the broker and (as the server's choice is taken) for its clients — encryption
/// is most of what TLS costs a broker moving hundreds of MB/s.
pub(crate) fn provider() -> Arc<CryptoProvider> {
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

pub(crate) fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
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
        TlsReader::spawn(rt, shared.clone(), reader),
        TlsWriter::new(shared, writer),
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
///
/// Decryption runs in its own task (the pump), so it overlaps with the handling of the requests
/// already decrypted — as Kafka's network threads decrypt while its request handlers append.
/// On a produce-heavy connection the handler (append, CRC) and AES-GCM each keep a core busy;
/// done in turn they would take the sum of both.
pub struct TlsReader<Rd> {
    plaintext: async_channel::Receiver<io::Result<Vec<u8>>>,
    /// Dropped with the reader: tells the pump to stop even while it waits on the socket.
    _stop: async_channel::Sender<()>,
    chunk: Vec<u8>,
    pos: usize,
    _inner: std::marker::PhantomData<fn() -> Rd>,
}

/// Plaintext chunks the pump may run ahead by (each at most what one socket read decrypts to).
const PUMP_AHEAD: usize = 4;

impl<Rd: Reader> TlsReader<Rd> {
    fn spawn<R: Runtime>(rt: &R, conn: Arc<Mutex<Connection>>, inner: Rd) -> Self {
        let (tx, plaintext) = async_channel::bounded(PUMP_AHEAD);
        let (stop, stopped) = async_channel::bounded::<()>(1);
        rt.spawn(async move {
            let cancelled = async {
                let _ = stopped.recv().await;
                Ok(())
            };
            let pumped = async {
                if let Err(e) = pump(&conn, inner, &tx).await {
                    let _ = tx.send(Err(e)).await;
                }
                Ok::<(), ()>(())
            };
            let _ = futures_lite::future::or(pumped, cancelled).await;
        });
        TlsReader {
            plaintext,
            _stop: stop,
            chunk: Vec::new(),
            pos: 0,
            _inner: std::marker::PhantomData,
        }
    }
}

/// Reads ciphertext, decrypts it and hands the plaintext on, until the peer closes (`Ok`), the
/// reader is dropped, or the stream fails.
async fn pump<Rd: Reader>(
    conn: &Mutex<Connection>,
    mut inner: Rd,
    tx: &async_channel::Sender<io::Result<Vec<u8>>>,
) -> io::Result<()> {
    // Allocated (and zeroed) once; `pos..end` is ciphertext rustls has not taken yet.
    let mut pending = vec![0u8; READ_CHUNK];
    let (mut pos, mut end) = (0, 0);
    loop {
        let mut chunk = Vec::new();
        let closed = {
            let mut conn = conn.lock().unwrap();
            loop {
                let took = if pos < end {
                    let mut slice = &pending[pos..end];
                    conn.read_tls(&mut slice)?
                } else {
                    0
                };
                pos += took;
                let state = conn
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let ready = state.plaintext_bytes_to_read();
                // Taken piece by piece (no zero-filled buffer to copy into). `ready` is all
                // rustls holds, in non-empty pieces, so the loop takes every byte of it.
                chunk.reserve(ready);
                let mut left = ready;
                let mut reader = conn.reader();
                while left > 0 {
                    let got = reader.fill_buf()?;
                    if got.is_empty() {
                        break;
                    }
                    let n = got.len().min(left);
                    chunk.extend_from_slice(&got[..n]);
                    reader.consume(n);
                    left -= n;
                }
                if state.peer_has_closed() {
                    break true;
                }
                if pos == end || (took == 0 && ready == 0) {
                    break false;
                }
            }
        };
        if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
            return Ok(());
        }
        if closed {
            return Ok(());
        }
        if pos == end {
            (pos, end) = (0, 0);
        } else if end == pending.len() {
            // Full with a partial record at the end: move it to the front.
            pending.copy_within(pos..end, 0);
            end -= pos;
            pos = 0;
        }
        if end == pending.len() {
            // rustls took nothing from a full buffer and has no plaintext: never spin.
            return Err(io::Error::other("TLS input stalled"));
        }
        let n = inner.read(&mut pending[end..]).await?;
        if n == 0 {
            return Ok(());
        }
        end += n;
    }
}

impl<Rd: Reader> TlsReader<Rd> {
    /// Waits for plaintext; false once the peer closed.
    async fn fill(&mut self) -> io::Result<bool> {
        while self.pos == self.chunk.len() {
            match self.plaintext.recv().await {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The pump ended: the peer closed.
                Err(_) => return Ok(false),
            }
        }
        Ok(true)
    }
}

impl<Rd: Reader> Reader for TlsReader<Rd> {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.fill().await? {
            return Ok(0);
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    /// Hands over the whole decrypted chunk: no copy through `scratch`.
    async fn read_into<F: FnOnce(&[u8]) + Send>(
        &mut self,
        _scratch: &mut [u8],
        sink: F,
    ) -> io::Result<usize> {
        if !self.fill().await? {
            return Ok(0);
        }
        let n = self.chunk.len() - self.pos;
        sink(&self.chunk[self.pos..]);
        self.pos = self.chunk.len();
        Ok(n)
    }
}

/// The writing half of a TLS connection: plaintext in, records out.
///
/// Each piece (at most rustls' 64 KiB send buffer) is encrypted and written to the socket before
/// the next is encrypted: the client decrypts one piece while the next is encrypted. An earlier
/// version handed the pieces to a sender task; on tokio the woken sender waits in the same
/// worker's LIFO slot until the encrypting task blocks, so the two took turns on one core and
/// added a hand-off per piece (SASL_SSL 10 KiB consume: 0.80–0.83 of PLAINTEXT with the task,
/// 0.83–0.87 without; docs/BENCHMARKS.md has the runs, and those with 1 MiB fetches).
pub struct TlsWriter<W> {
    conn: Arc<Mutex<Connection>>,
    inner: W,
}

impl<W: Writer> TlsWriter<W> {
    fn new(conn: Arc<Mutex<Connection>>, inner: W) -> Self {
        TlsWriter { conn, inner }
    }
}

impl<W: Writer> Writer for TlsWriter<W> {
    async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        // One buffer for the pieces of this write, freed after it: an idle connection holds none.
        let mut out = Vec::new();
        loop {
            out.clear();
            {
                let mut conn = self.conn.lock().unwrap();
                // rustls buffers up to its limit; encrypt in pieces so memory stays bounded.
                let n = conn.writer().write(buf)?;
                buf = &buf[n..];
                while conn.wants_write() {
                    conn.write_tls(&mut out)?;
                }
            }
            if !out.is_empty() {
                self.inner.write_all(&out).await?;
            }
            if buf.is_empty() {
                return Ok(());
            }
        }
    }
}
