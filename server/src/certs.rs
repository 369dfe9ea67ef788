//! `sluice certs --server-names ... [--client NAME]`: a CA, a server certificate for the Kafka
//! listener and client certificates, so a local TLS listener is two commands. An existing
//! `ca.pem` + `ca.key` in the directory (from an earlier run, or `--nodes` in the same run) is
//! reused; no existing file is ever overwritten.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Certificates stay valid this long.
const VALIDITY_YEARS: i32 = 10;

/// Sets the validity: from the start of last year, for [`VALIDITY_YEARS`].
fn set_validity(params: &mut CertificateParams) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let year = 1970 + i32::try_from(secs / 31_556_952).unwrap_or(0);
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year - 1 + VALIDITY_YEARS, 1, 1);
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (existing files are never overwritten)",
                path.display()
            )
        })?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

/// Loads the CA in `out`, or creates one.
fn issuer(out: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let (ca_pem, ca_key) = (out.join("ca.pem"), out.join("ca.key"));
    if ca_pem.exists() || ca_key.exists() {
        let pem =
            fs::read_to_string(&ca_pem).with_context(|| format!("reading {}", ca_pem.display()))?;
        let key =
            fs::read_to_string(&ca_key).with_context(|| format!("reading {}", ca_key.display()))?;
        let key =
            KeyPair::from_pem(&key).with_context(|| format!("parsing {}", ca_key.display()))?;
        return Issuer::from_ca_cert_pem(&pem, key)
            .with_context(|| format!("parsing {}", ca_pem.display()));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Sluice CA {:016x}", rand::random::<u64>()),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    let cert = params.self_signed(&key)?;
    write_new(&ca_pem, cert.pem().as_bytes(), 0o644)?;
    write_new(&ca_key, key.serialize_pem().as_bytes(), 0o600)?;
    written.push(ca_pem);
    written.push(ca_key);
    Ok(Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: Vec<String>,
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
    out: &Path,
    stem: &str,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let (pem, key_path) = (
        out.join(format!("{stem}.pem")),
        out.join(format!("{stem}.key")),
    );
    if pem.exists() || key_path.exists() {
        bail!(
            "{} already exists (existing files are never overwritten)",
            pem.display()
        );
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);
    let cert = params.signed_by(&key, issuer)?;
    write_new(&pem, cert.pem().as_bytes(), 0o644)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    written.push(pem);
    written.push(key_path);
    Ok(())
}

/// Writes `server.pem`/`server.key` for `server_names` (DNS names or IP addresses) and
/// `NAME.pem`/`NAME.key` per client (subject CN=NAME, the principal User:NAME), signed by the
/// CA in `out` (created if absent). Returns the files written.
pub fn generate(
    server_names: &[String],
    clients: &[String],
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for c in clients {
        if c.is_empty() || c == "ca" || c == "server" || c.contains(['/', '\\']) {
            bail!("--client '{c}' is not a usable name");
        }
    }
    let mut written = Vec::new();
    let issuer = issuer(out, &mut written)?;
    if !server_names.is_empty() {
        leaf(
            &issuer,
            server_names.to_vec(),
            &server_names[0],
            ExtendedKeyUsagePurpose::ServerAuth,
            out,
            "server",
            &mut written,
        )?;
    }
    for c in clients {
        leaf(
            &issuer,
            Vec::new(),
            c,
            ExtendedKeyUsagePurpose::ClientAuth,
            out,
            c,
            &mut written,
        )?;
    }
    Ok(written)
}
