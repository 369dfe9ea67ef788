//! `certs::generate` and `certs::load`: what is written, and that every way loading can go
//! wrong gives an error naming the file and the problem.

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::*;
use sluice_transport_quic::{CertError, certs};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generate_writes_ca_and_node_pairs_with_private_keys_0600() {
    let dir = cluster_certs("gen", &[1, 2, 3]);
    for f in ["ca.pem", "node-1.pem", "node-2.pem", "node-3.pem"] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    for f in ["ca.key", "node-1.key", "node-2.key", "node-3.key"] {
        assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
    }
    for id in [1, 2, 3] {
        let identity = certs::load(dir.path(), id).unwrap();
        assert_eq!(identity.node_id, id);
        assert_eq!(identity.cert_chain.len(), 1);
        assert_eq!(identity.ca_certs.len(), 1);
    }
}

#[test]
fn generate_refuses_bad_node_lists_and_overwriting() {
    let dir = TempDir::new("gen-bad");
    for nodes in [&[][..], &[0, 1], &[1, 2, 1]] {
        let e = certs::generate(nodes, dir.path()).unwrap_err();
        assert!(matches!(e, CertError::InvalidNodes(_)), "{nodes:?}: {e}");
    }
    certs::generate(&[1], dir.path()).unwrap();
    let e = certs::generate(&[3, 1], dir.path()).unwrap_err();
    assert!(
        matches!(&e, CertError::Exists { path } if path.ends_with("node-1.pem")),
        "{e}"
    );
    assert!(
        !dir.path().join("node-3.pem").exists(),
        "nothing written on refusal"
    );
    // A node added later gets its certificate from the same CA, which stays as it was.
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let written = certs::generate(&[2], dir.path()).unwrap();
    assert_eq!(written.len(), 2, "{written:?}");
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
    certs::load(dir.path(), 2).expect("node 2's certificate chains to the cluster CA");
    // Half a CA (no key) is not a CA to issue from.
    let half = TempDir::new("gen-half");
    std::fs::create_dir_all(half.path()).unwrap();
    std::fs::copy(dir.path().join("ca.pem"), half.path().join("ca.pem")).unwrap();
    let e = certs::generate(&[1], half.path()).unwrap_err();
    assert!(
        matches!(&e, CertError::Exists { path } if path.ends_with("ca.pem")),
        "{e}"
    );
}

#[test]
fn missing_files_name_the_file() {
    let dir = cluster_certs("missing", &[1]);
    let e = certs::load(&dir.path().join("nope"), 1).unwrap_err();
    assert!(matches!(e, CertError::Read { .. }), "{e}");
    assert!(e.to_string().contains("cluster CA certificate") && e.to_string().contains("ca.pem"));

    let e = certs::load(dir.path(), 4).unwrap_err();
    assert!(
        e.to_string().contains("node certificate") && e.to_string().contains("node-4.pem"),
        "{e}"
    );

    std::fs::remove_file(dir.path().join("node-1.key")).unwrap();
    let e = certs::load(dir.path(), 1).unwrap_err();
    assert!(
        e.to_string().contains("node private key") && e.to_string().contains("node-1.key"),
        "{e}"
    );
}

#[test]
fn garbage_pem_is_an_error() {
    let dir = cluster_certs("garbage", &[1]);
    std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
    let e = certs::load(dir.path(), 1).unwrap_err();
    assert!(matches!(e, CertError::Pem { .. }), "{e}");
    assert!(e.to_string().contains("no CERTIFICATE section"), "{e}");
}

#[test]
fn certificate_from_another_ca_is_not_issued_by_the_cluster_ca() {
    let dir = cluster_certs("ca-a", &[1]);
    let other = cluster_certs("ca-b", &[1]);
    for f in ["node-1.pem", "node-1.key"] {
        std::fs::copy(other.path().join(f), dir.path().join(f)).unwrap();
    }
    let e = certs::load(dir.path(), 1).unwrap_err();
    assert!(matches!(e, CertError::NotIssuedByCa { .. }), "{e}");
    assert!(
        e.to_string().contains("is not issued by the cluster CA"),
        "{e}"
    );
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}

#[test]
fn certificate_of_another_node_is_the_wrong_node_id() {
    let dir = cluster_certs("wrong-node", &[2]);
    for (from, to) in [("node-2.pem", "node-5.pem"), ("node-2.key", "node-5.key")] {
        std::fs::copy(dir.path().join(from), dir.path().join(to)).unwrap();
    }
    let e = certs::load(dir.path(), 5).unwrap_err();
    assert!(
        matches!(&e, CertError::WrongNodeId { expected: 5, name, .. } if name == "node-5.sluice"),
        "{e}"
    );
    assert!(e.to_string().contains("is not for node 5"), "{e}");
}

#[test]
fn key_of_another_node_does_not_fit() {
    let dir = cluster_certs("key", &[1, 2]);
    std::fs::copy(dir.path().join("node-2.key"), dir.path().join("node-1.key")).unwrap();
    let e = certs::load(dir.path(), 1).unwrap_err();
    assert!(matches!(e, CertError::KeyMismatch { .. }), "{e}");
}

#[test]
fn a_ca_bundle_is_accepted() {
    let dir = cluster_certs("bundle", &[1]);
    let other = cluster_certs("bundle-other", &[1]);
    let bundle = [
        std::fs::read_to_string(other.path().join("ca.pem")).unwrap(),
        std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.path().join("ca.pem"), bundle).unwrap();
    assert_eq!(certs::load(dir.path(), 1).unwrap().ca_certs.len(), 2);
}

/// The bring-your-own-CA recipe of docs/transport.md, with openssl (skipped if it is missing).
#[test]
fn bring_your_own_ca_made_with_openssl() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("openssl not installed; skipping");
        return;
    }
    let dir = TempDir::new("byo");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(
        dir.path().join("node-2.ext"),
        "subjectAltName=DNS:node-2.sluice\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n",
    )
    .unwrap();
    let script = r#"set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
  -subj "/CN=My Org Sluice CA" -days 3650 -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout node-2.key -subj "/CN=sluice-node-2" -out node-2.csr
openssl x509 -req -in node-2.csr -CA ca.pem -CAkey ca.key -days 825 -out node-2.pem -extfile node-2.ext
chmod 600 node-2.key
"#;
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let identity = certs::load(dir.path(), 2).expect("openssl-made node certificate loads");
    assert_eq!(identity.node_id, 2);
    let e = certs::load(dir.path(), 3).unwrap_err();
    assert!(e.to_string().contains("node-3.pem"), "{e}");
}
