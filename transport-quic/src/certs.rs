//! Cluster CA and node certificates: `generate` writes them, `load` reads and checks one node's.
//!
//! Layout of a certificate directory (what `sluice certs --nodes 1,2,3 --out DIR` writes):
//!
//! | file | content | mode |
//! | --- | --- | --- |
//! | `ca.pem` | cluster CA certificate(s), PEM; every certificate in it is a trust root | 0644 |
//! | `ca.key` | CA private key (keep it off the nodes once they have their certificates) | 0600 |
//! | `node-<id>.pem` | node certificate, then any intermediate CA certificates | 0644 |
//! | `node-<id>.key` | node private key (PKCS#8 / SEC1 / PKCS#1 PEM) | 0600 |
//!
//! A node certificate proves its node id by carrying the DNS name [`node_dns_name`]
//! (`node-<id>.sluice`) in its subjectAltName; the common name `sluice-node-<id>` is for humans
//! only and never checked. It must allow both TLS client and server authentication (extended key
//! usage `serverAuth` + `clientAuth`, or no EKU extension), because every node dials some peers
//! and accepts others. Any CA that issues such certificates works (bring your own CA): see
//! docs/transport.md.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::error::CertError;

/// The DNS subjectAltName that identifies node `id`: `node-<id>.sluice`.
pub fn node_dns_name(id: u64) -> String {
    format!("node-{id}.sluice")
}

/// The common name `generate` gives node `id` (informational; not checked).
pub fn node_common_name(id: u64) -> String {
    format!("sluice-node-{id}")
}

/// File names inside a certificate directory.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// The CA private key file inside a certificate directory.
pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

/// Node `id`'s certificate file inside a certificate directory.
pub fn node_cert_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node-{id}.pem"))
}

/// Node `id`'s private key file inside a certificate directory.
pub fn node_key_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node-{id}.key"))
}

/// How long generated certificates are valid, in years (from January 1st of last year).
pub const VALIDITY_YEARS: i32 = 10;

/// One node's TLS material, checked by [`load`]: the trust roots, its certificate chain and key.
pub struct NodeIdentity {
    /// The node these certificates belong to (checked against the certificate's SAN).
    pub node_id: u64,
    /// Trust roots: every certificate in `ca.pem`.
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// The node certificate first, then intermediates (if any).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        NodeIdentity {
            node_id: self.node_id,
            ca_certs: self.ca_certs.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_id", &self.node_id)
            .field("ca_certs", &self.ca_certs.len())
            .field("cert_chain", &self.cert_chain.len())
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// The trust roots as a rustls store.
    pub(crate) fn root_store(&self) -> Result<RootCertStore, rustls::Error> {
        let mut roots = RootCertStore::empty();
        for ca in &self.ca_certs {
            roots.add(ca.clone())?;
        }
        Ok(roots)
    }
}

/// Writes a new cluster CA and one certificate + key per node into `out` (created if needed).
/// When `out` holds a CA already (`ca.pem` and `ca.key`), it issues the node certificates: a
/// node added to a running cluster gets one from the cluster's CA.
///
/// Refuses to overwrite any existing file. Returns the files written. Keys are written with
/// mode 0600. Node ids must be non-zero and distinct.
pub fn generate(nodes: &[u64], out: &Path) -> Result<Vec<PathBuf>, CertError> {
    if nodes.is_empty() {
        return Err(CertError::InvalidNodes("no node ids given".into()));
    }
    let mut sorted = nodes.to_vec();
    sorted.sort_unstable();
    if sorted[0] == 0 {
        return Err(CertError::InvalidNodes(
            "node id 0 is reserved by Raft".into(),
        ));
    }
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(CertError::InvalidNodes(format!(
            "node {} is listed twice",
            w[0]
        )));
    }

    fs::create_dir_all(out).map_err(|source| CertError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    // An existing CA (both files) issues the certificates of nodes added to its cluster.
    let existing_ca = ca_cert_path(out).exists() && ca_key_path(out).exists();
    let mut paths = if existing_ca {
        Vec::new()
    } else {
        vec![ca_cert_path(out), ca_key_path(out)]
    };
    for &id in nodes {
        paths.push(node_cert_path(out, id));
        paths.push(node_key_path(out, id));
    }
    // Check everything before writing anything: no half-written directory on refusal.
    if let Some(path) = paths.iter().find(|p| p.exists()) {
        return Err(CertError::Exists { path: path.clone() });
    }

    let (first_year, last_year) = validity_years();
    let issuer = if existing_ca {
        let read = |path: PathBuf, what: &'static str| {
            fs::read_to_string(&path).map_err(|source| CertError::Read { what, path, source })
        };
        let ca_pem = read(ca_cert_path(out), "cluster CA certificate")?;
        let ca_key = read(ca_key_path(out), "cluster CA key")?;
        let key = KeyPair::from_pem(&ca_key).map_err(|e| CertError::Pem {
            what: "cluster CA key",
            path: ca_key_path(out),
            detail: e.to_string(),
        })?;
        Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|e| CertError::Pem {
            what: "cluster CA certificate",
            path: ca_cert_path(out),
            detail: e.to_string(),
        })?
    } else {
        new_ca(out, first_year, last_year)?
    };
    for &id in nodes {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![node_dns_name(id)])?;
        params
            .distinguished_name
            .push(DnType::CommonName, node_common_name(id));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = rcgen::date_time_ymd(first_year, 1, 1);
        params.not_after = rcgen::date_time_ymd(last_year, 1, 1);
        let cert = params.signed_by(&key, &issuer)?;
        write_file(&node_cert_path(out, id), cert.pem().as_bytes(), 0o644)?;
        write_file(
            &node_key_path(out, id),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
    }
    tracing::info!(nodes = ?nodes, out = %out.display(), existing_ca, "generated node certificates");
    Ok(paths)
}

/// A new cluster CA, written to `out`.
fn new_ca(
    out: &Path,
    first_year: i32,
    last_year: i32,
) -> Result<Issuer<'static, KeyPair>, CertError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    // A unique name per cluster: certificate path building matches issuers by name, so two
    // clusters' CAs with one name would make a foreign certificate fail as "bad signature"
    // rather than the clearer "unknown issuer".
    let ca_name = format!("Sluice cluster CA {:016x}", rand::random::<u64>());
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = rcgen::date_time_ymd(first_year, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(last_year, 1, 1);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write_file(&ca_cert_path(out), ca_cert.pem().as_bytes(), 0o644)?;
    write_file(&ca_key_path(out), ca_key.serialize_pem().as_bytes(), 0o600)?;
    Ok(Issuer::new(ca_params, ca_key))
}

/// Reads `dir/ca.pem`, `dir/node-<node_id>.pem` and `dir/node-<node_id>.key` and checks that the
/// node certificate chains to a CA in `ca.pem`, may be used for TLS client and server
/// authentication, carries `node-<node_id>.sluice`, and matches the key.
pub fn load(dir: &Path, node_id: u64) -> Result<NodeIdentity, CertError> {
    let ca_path = ca_cert_path(dir);
    let cert_path = node_cert_path(dir, node_id);
    let key_path = node_key_path(dir, node_id);
    let ca_certs = read_certs(&ca_path, "cluster CA certificate")?;
    let cert_chain = read_certs(&cert_path, "node certificate")?;
    let key = read_key(&key_path)?;
    let identity = NodeIdentity {
        node_id,
        ca_certs,
        cert_chain,
        key,
    };
    check_identity(&identity, &ca_path, &cert_path, &key_path)?;
    Ok(identity)
}

/// The checks of [`load`] on material already in memory (paths are only for the messages).
fn check_identity(
    id: &NodeIdentity,
    ca_path: &Path,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = id.root_store().map_err(|e| CertError::Pem {
        what: "cluster CA certificate",
        path: ca_path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let leaf = &id.cert_chain[0];
    let intermediates = &id.cert_chain[1..];
    let parsed = rustls::server::ParsedCertificate::try_from(leaf).map_err(|e| CertError::Pem {
        what: "node certificate",
        path: cert_path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let chain_error = |e: rustls::Error| match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        | rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature) => {
            CertError::NotIssuedByCa {
                cert: cert_path.to_path_buf(),
                ca: ca_path.to_path_buf(),
                reason: e.to_string(),
            }
        }
        e => CertError::Unusable {
            cert: cert_path.to_path_buf(),
            reason: e.to_string(),
        },
    };
    let now = UnixTime::now();
    // As a server (peers dial us): chain + serverAuth.
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        intermediates,
        now,
        provider.signature_verification_algorithms.all,
    )
    .map_err(chain_error)?;
    // As a client (we dial peers): chain + clientAuth.
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| CertError::Pem {
        what: "cluster CA certificate",
        path: ca_path.to_path_buf(),
        detail: e.to_string(),
    })?;
    client_verifier
        .verify_client_cert(leaf, intermediates, now)
        .map_err(chain_error)?;
    if !cert_is_for_node(leaf, id.node_id) {
        return Err(CertError::WrongNodeId {
            cert: cert_path.to_path_buf(),
            expected: id.node_id,
            name: node_dns_name(id.node_id),
        });
    }
    rustls::sign::CertifiedKey::from_der(id.cert_chain.clone(), id.key.clone_key(), &provider)
        .map_err(|e| CertError::KeyMismatch {
            key: key_path.to_path_buf(),
            cert: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(())
}

/// Whether `cert` carries node `node_id`'s DNS name in its subjectAltName. Says nothing about
/// the chain: only use it on certificates rustls has already verified.
pub(crate) fn cert_is_for_node(cert: &CertificateDer<'_>, node_id: u64) -> bool {
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(cert) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(node_dns_name(node_id)) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = fs::read(path).map_err(|source| CertError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            what,
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::Pem {
            what,
            path: path.to_path_buf(),
            detail: "no CERTIFICATE section found".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    const WHAT: &str = "node private key";
    let bytes = fs::read(path).map_err(|source| CertError::Read {
        what: WHAT,
        path: path.to_path_buf(),
        source,
    })?;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "private key is readable by group or others; chmod 600 it"
        );
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| CertError::Pem {
        what: WHAT,
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        f.write_all(contents)?;
        f.sync_all()
    };
    write().map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => CertError::Exists {
            path: path.to_path_buf(),
        },
        _ => CertError::Write {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Years of the validity window: January 1st of last year to January 1st `VALIDITY_YEARS`
/// later (last year, so a clock a few days behind at New Year still accepts a fresh certificate).
fn validity_years() -> (i32, i32) {
    const SECS_PER_YEAR: u64 = 31_556_952; // mean Gregorian year
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let this_year = 1970 + i32::try_from(secs / SECS_PER_YEAR).unwrap_or(0);
    (this_year - 1, this_year - 1 + VALIDITY_YEARS)
}
