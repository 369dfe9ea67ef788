//! A blocking Kafka connection for the operator tools (`sluice cluster status`): one request
//! at a time, over PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, configured with the client
//! properties librdkafka and Kafka's own tools use (`-X key=value`, `--command-config FILE`),
//! so a secured cluster is asked the way its other clients reach it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, RequestKind, ResponseKind, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use sluice_proto::codec;
use sluice_sasl::{ScramClient, ScramMechanism};

/// How the tool reaches the Kafka listeners.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    /// TLS, with the trust roots (and client certificate) to use.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// SASL mechanism, user and password.
    sasl: Option<(String, String, String)>,
}

/// The keys understood, for the error naming an unknown one.
const KEYS: &str = "security.protocol, sasl.mechanism(s), sasl.username, sasl.password, \
                    sasl.jaas.config, ssl.ca.location, ssl.truststore.location (with \
                    ssl.truststore.type=PEM), ssl.certificate.location, ssl.key.location, \
                    ssl.endpoint.identification.algorithm";

impl ClientSecurity {
    /// Builds the settings from `--command-config` (a properties file, if any) and then the
    /// `-X key=value` properties, later ones winning. A file may hold settings meant for other
    /// clients (`client.id`, `acks`...): those are ignored with a warning, as Kafka's tools do;
    /// an unknown `-X` key is an error, as in librdkafka.
    pub fn from_properties(file: Option<&Path>, props: &[String]) -> anyhow::Result<Self> {
        let mut all: Vec<(String, String, bool)> = Vec::new();
        if let Some(f) = file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading --command-config {}", f.display()))?;
            for (k, v) in
                properties_file(&text).with_context(|| format!("reading {}", f.display()))?
            {
                all.push((k, v, true));
            }
        }
        for p in props {
            let (k, v) = split_property(p).context("-X")?;
            all.push((k, v, false));
        }
        let mut protocol = "PLAINTEXT".to_string();
        let (mut mechanism, mut user, mut password) = (None, None, None);
        let (mut ca, mut cert, mut key) = (None::<PathBuf>, None::<PathBuf>, None::<PathBuf>);
        let mut truststore_type = None;
        let mut check_hostname = true;
        for (k, v, from_file) in all {
            match k.as_str() {
                "security.protocol" => protocol = v.to_ascii_uppercase(),
                "sasl.mechanism" | "sasl.mechanisms" => mechanism = Some(v.to_ascii_uppercase()),
                "sasl.username" => user = Some(v),
                "sasl.password" => password = Some(v),
                "sasl.jaas.config" => {
                    user = Some(jaas_option(&v, "username").context("sasl.jaas.config")?);
                    password = Some(jaas_option(&v, "password").context("sasl.jaas.config")?);
                }
                "ssl.ca.location" | "ssl.truststore.location" => ca = Some(v.into()),
                "ssl.truststore.type" => truststore_type = Some(v.to_ascii_uppercase()),
                "ssl.certificate.location" => cert = Some(v.into()),
                "ssl.key.location" => key = Some(v.into()),
                "ssl.endpoint.identification.algorithm" => match v.to_ascii_lowercase().as_str() {
                    "https" => check_hostname = true,
                    "" | "none" => check_hostname = false,
                    other => bail!(
                        "ssl.endpoint.identification.algorithm {other:?}: expected https or empty"
                    ),
                },
                other if from_file => {
                    eprintln!(
                        "sluice: ignoring {other} (not used by this tool; understood: {KEYS})"
                    )
                }
                other => bail!("unknown client property {other:?}; understood: {KEYS}"),
            }
        }
        if truststore_type.as_deref().is_some_and(|t| t != "PEM") {
            bail!("ssl.truststore.type: only PEM trust stores are read (a CA certificate file)");
        }
        let (tls, sasl) = match protocol.as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            other => bail!(
                "security.protocol {other:?}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            ),
        };
        let sasl = if sasl {
            let mechanism = mechanism.unwrap_or_else(|| "PLAIN".into());
            if !matches!(
                mechanism.as_str(),
                "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512"
            ) {
                bail!(
                    "sasl.mechanism {mechanism:?}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                );
            }
            let (Some(user), Some(password)) = (user, password) else {
                bail!(
                    "security.protocol {protocol} needs sasl.username and sasl.password (or sasl.jaas.config)"
                );
            };
            Some((mechanism, user, password))
        } else {
            if user.is_some() || mechanism.is_some() {
                bail!("SASL settings given but security.protocol is {protocol}");
            }
            None
        };
        let tls = if tls {
            Some(Arc::new(tls_config(
                ca.as_deref(),
                (cert.as_deref(), key.as_deref()),
                check_hostname,
            )?))
        } else {
            if ca.is_some() || cert.is_some() {
                bail!("TLS settings given but security.protocol is {protocol}");
            }
            None
        };
        Ok(ClientSecurity { tls, sasl })
    }
}

fn split_property(line: &str) -> anyhow::Result<(String, String)> {
    match line.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => bail!("{line:?} is not key=value"),
    }
}

/// The (key, value) pairs of a Java properties file as Kafka's tools write them: `#` and `!`
/// comments, a `\` at the end of a line continuing it (a long `sasl.jaas.config`), and the key
/// ending at the first `=` or `:`.
fn properties_file(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut first_line = 0;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if pending.is_empty() {
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            first_line = n + 1;
        }
        match line.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(line);
                out.push(property_line(&pending).with_context(|| format!("line {first_line}"))?);
                pending.clear();
            }
        }
    }
    if !pending.is_empty() {
        out.push(property_line(&pending).with_context(|| format!("line {first_line}"))?);
    }
    Ok(out)
}

fn property_line(line: &str) -> anyhow::Result<(String, String)> {
    let at = line
        .find(['=', ':'])
        .with_context(|| format!("{line:?} is not key=value"))?;
    let (k, v) = (line[..at].trim(), line[at + 1..].trim());
    if k.is_empty() {
        bail!("{line:?} has no key");
    }
    Ok((k.to_string(), v.to_string()))
}

/// `name="value"` out of a JAAS line such as Kafka's
/// `org.apache.kafka.common.security.scram.ScramLoginModule required username="a" password="b";`.
fn jaas_option(jaas: &str, name: &str) -> anyhow::Result<String> {
    let start = jaas
        .find(&format!("{name}=\""))
        .with_context(|| format!("no {name}=\"...\""))?
        + name.len()
        + 2;
    let len = jaas[start..]
        .find('"')
        .with_context(|| format!("{name}= is not closed"))?;
    Ok(jaas[start..start + len].to_string())
}

fn tls_config(
    ca: Option<&Path>,
    (cert, key): (Option<&Path>, Option<&Path>),
    check_hostname: bool,
) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let Some(ca) = ca else {
        bail!(
            "TLS needs ssl.ca.location: the CA certificate (PEM) the listeners' certificates are signed by"
        );
    };
    for c in crate::tls::read_certs(ca).context("ssl.ca.location")? {
        roots
            .add(c)
            .with_context(|| format!("adding a CA certificate of {}", ca.display()))?;
    }
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let builder = if check_hostname {
        builder.with_root_certificates(roots)
    } else {
        let chain =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("the certificate verifier")?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(chain)))
    };
    Ok(match (cert, key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = crate::tls::read_certs(cert).context("ssl.certificate.location")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("ssl.key.location {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("the client certificate and key")?
        }
        _ => bail!("ssl.certificate.location and ssl.key.location go together"),
    })
}

/// `ssl.endpoint.identification.algorithm=` (empty): the server's chain must still lead to
/// the CA, but its certificate need not name the host (listeners reached by an address their
/// certificates do not list), as Kafka clients do with that setting.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One open connection.
pub struct Conn {
    stream: Box<dyn Stream>,
    correlation: i32,
}

impl Conn {
    /// Connects to `addr` (HOST:PORT), with TLS and SASL as `security` says.
    pub fn open(addr: &str, timeout: Duration, security: &ClientSecurity) -> anyhow::Result<Conn> {
        let tcp = connect(addr, timeout)?;
        let stream: Box<dyn Stream> = match &security.tls {
            None => Box::new(tcp),
            Some(config) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(host.to_string())
                    .with_context(|| format!("{host:?} as a TLS server name"))?;
                let mut tls = rustls::StreamOwned::new(
                    rustls::ClientConnection::new(config.clone(), name).context("starting TLS")?,
                    tcp,
                );
                // The handshake now, so a certificate problem is reported as such.
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .with_context(|| format!("TLS handshake with {addr}"))?;
                }
                Box::new(tls)
            }
        };
        let mut conn = Conn {
            stream,
            correlation: 0,
        };
        if let Some((mechanism, user, password)) = &security.sasl {
            conn.authenticate(mechanism, user, password)
                .with_context(|| format!("SASL {mechanism} as {user:?} at {addr}"))?;
        }
        Ok(conn)
    }

    fn authenticate(&mut self, mechanism: &str, user: &str, password: &str) -> anyhow::Result<()> {
        let ResponseKind::SaslHandshake(h) = self.call(
            ApiKey::SaslHandshake,
            1,
            RequestKind::SaslHandshake(
                SaslHandshakeRequest::default().with_mechanism(mechanism.to_string().into()),
            ),
        )?
        else {
            bail!("not a SaslHandshake answer");
        };
        if h.error_code != 0 {
            let offered: Vec<&str> = h.mechanisms.iter().map(|m| m.as_str()).collect();
            bail!(
                "the listener does not offer {mechanism} (error {}; it offers: {})",
                h.error_code,
                offered.join(", ")
            );
        }
        let scram = match mechanism {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        };
        let Some(m) = scram else {
            self.sasl_round(sluice_sasl::plain_message(user, password))?;
            return Ok(());
        };
        let nonce: String = {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            (0..24)
                .map(|_| char::from(rng.gen_range(b'A'..=b'Z')))
                .collect()
        };
        let mut client = ScramClient::new(m, user, password, &nonce);
        let server_first = self.sasl_round(client.client_first())?;
        let last = client.client_final(&server_first)?;
        let server_final = self.sasl_round(last)?;
        client.server_final(&server_final)?;
        Ok(())
    }

    /// One SaslAuthenticate round; the server's bytes.
    fn sasl_round(&mut self, bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        let ResponseKind::SaslAuthenticate(r) = self.call(
            ApiKey::SaslAuthenticate,
            2,
            RequestKind::SaslAuthenticate(
                SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)),
            ),
        )?
        else {
            bail!("not a SaslAuthenticate answer");
        };
        if r.error_code != 0 {
            bail!(
                "authentication failed: {}",
                r.error_message.as_ref().map_or("no message", |m| &**m)
            );
        }
        Ok(r.auth_bytes.to_vec())
    }

    /// Sends one request and reads its answer.
    pub fn call(
        &mut self,
        key: ApiKey,
        version: i16,
        body: RequestKind,
    ) -> anyhow::Result<ResponseKind> {
        self.correlation += 1;
        let frame =
            codec::encode_request(key, version, self.correlation, Some("sluice-status"), &body)
                .map_err(anyhow::Error::msg)?;
        self.stream.write_all(&frame)?;
        self.stream.flush()?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if !(0..=64 << 20).contains(&len) {
            bail!("response frame of {len} bytes");
        }
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf)?;
        let (correlation, response) =
            codec::decode_response(key, version, Bytes::from(buf)).map_err(anyhow::Error::msg)?;
        if correlation != self.correlation {
            bail!("answer to another request (correlation id {correlation})");
        }
        Ok(response)
    }
}

/// `HOST:PORT` of a broker as Metadata names it: an IPv6 address is bracketed, so the string
/// still splits at its last colon.
pub fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn connect(addr: &str, timeout: Duration) -> anyhow::Result<TcpStream> {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .collect();
    let mut last = None;
    for a in resolved {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e).with_context(|| format!("connecting to {addr}")),
        None => bail!("{addr} resolves to no address"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(p: &[&str]) -> anyhow::Result<ClientSecurity> {
        let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        ClientSecurity::from_properties(None, &p)
    }

    #[test]
    fn a_properties_file_reads_as_kafka_tools_write_it() {
        let text = "# admin\n! also a comment\n\nsecurity.protocol = SASL_SSL\nsasl.mechanism: SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n    username=\"admin\" \\\n    password=\"secret\";\nclient.id=tools\n";
        let got = properties_file(text).unwrap();
        assert_eq!(got[0], ("security.protocol".into(), "SASL_SSL".into()));
        assert_eq!(got[1], ("sasl.mechanism".into(), "SCRAM-SHA-512".into()));
        assert_eq!(got[2].0, "sasl.jaas.config");
        assert_eq!(jaas_option(&got[2].1, "password").unwrap(), "secret");
        assert_eq!(got[3], ("client.id".into(), "tools".into()));
        assert_eq!(got.len(), 4);
        let e = format!("{:#}", properties_file("a=1\nnonsense\n").unwrap_err());
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn properties_are_checked() {
        assert!(props(&[]).unwrap().sasl.is_none());
        let s = props(&[
            "security.protocol=sasl_plaintext",
            "sasl.mechanisms=SCRAM-SHA-512",
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"p=w\";",
        ])
        .unwrap();
        assert_eq!(
            s.sasl,
            Some(("SCRAM-SHA-512".into(), "admin".into(), "p=w".into()))
        );
        for (bad, why) in [
            (
                &["security.protocol=SASL_PLAINTEXT"][..],
                "needs sasl.username",
            ),
            (&["sasl.username=a"][..], "security.protocol is PLAINTEXT"),
            (&["security.protocol=SSL"][..], "needs ssl.ca.location"),
            (&["security.protocol=TLS"][..], "expected PLAINTEXT"),
            (&["ssl.keystore.location=x"][..], "unknown client property"),
            (&["nonsense"][..], "not key=value"),
            (
                &[
                    "security.protocol=SASL_PLAINTEXT",
                    "sasl.mechanism=GSSAPI",
                    "sasl.username=a",
                    "sasl.password=b",
                ][..],
                "expected PLAIN",
            ),
        ] {
            let e = format!("{:#}", props(bad).err().expect("refused"));
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
