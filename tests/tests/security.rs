//! Security end to end: TLS (server and client certificates), SASL (PLAIN, SCRAM-SHA-256/512)
//! and ACLs, with real clients (librdkafka via confluent-kafka, kafka-python) against the real
//! binary, plus raw-socket checks of what real clients cannot provoke (requests before SASL,
//! plaintext on a TLS port).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;
use sluice_tests::kafka::Conn as RawConn;
use sluice_tests::{Broker, Certs, broker_tempdir, python_output, run_sluice, users_add};

const ADMIN_PW: &str = "admin-secret";
const ALICE_PW: &str = "alice-secret";
/// Group rebalances start at once, so consumer tests stay quick.
const FAST_GROUPS: &[&str] = &["--group-initial-rebalance-delay-ms", "0"];

// ---------------------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------------------

/// What one client script run printed.
struct Run {
    json: Value,
    /// Command, stdout and stderr, for assertion messages.
    text: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.json["ok"].as_bool() == Some(true)
    }

    fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }

    /// Asserts the operation worked.
    fn expect_ok(self) -> Run {
        assert!(self.ok(), "expected success:\n{}", self.text);
        self
    }

    /// Asserts the operation failed with the Kafka error `name`.
    fn expect_error(self, name: &str) -> Run {
        assert!(
            !self.ok() && self.error() == name,
            "expected failure {name}:\n{}",
            self.text
        );
        self
    }

    fn strings(&self, field: &str) -> Vec<String> {
        self.json[field]
            .as_array()
            .unwrap_or_else(|| panic!("no array {field}:\n{}", self.text))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

/// Runs a client script; its last stdout line must be JSON.
fn run_script(script: &str, args: &[String]) -> Run {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = Instant::now();
    let out = python_output(script, &refs);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let text = format!(
        "$ {script} {}\n(exit {}, {:.1} s)\nstdout:\n{stdout}\nstderr:\n{}",
        refs.join(" "),
        out.status,
        start.elapsed().as_secs_f64(),
        tail(&stderr, 12_000)
    );
    assert!(out.status.success(), "client script crashed:\n{text}");
    let json = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON result:\n{text}"));
    // One line per client run (shown for failing tests, or with --nocapture).
    eprintln!(
        "[{:>5.1} s] {script} {} -> {}",
        start.elapsed().as_secs_f64(),
        refs.first().copied().unwrap_or(""),
        json
    );
    Run { json, text }
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// Connection settings of one client identity.
#[derive(Clone)]
struct Client {
    args: Vec<String>,
}

impl Client {
    fn new(bootstrap: &str, protocol: &str) -> Client {
        Client {
            args: vec![
                "--bootstrap".into(),
                bootstrap.into(),
                "--protocol".into(),
                protocol.into(),
            ],
        }
    }

    /// A SASL user (over SASL_PLAINTEXT, or SASL_SSL when `certs` is given).
    fn sasl(
        bootstrap: &str,
        certs: Option<&Certs>,
        mechanism: &str,
        user: &str,
        pw: &str,
    ) -> Client {
        let protocol = if certs.is_some() {
            "SASL_SSL"
        } else {
            "SASL_PLAINTEXT"
        };
        let mut c = Client::new(bootstrap, protocol).with(&["--mechanism", mechanism]);
        c = c.with(&["--user", user, "--password", pw]);
        if let Some(certs) = certs {
            c = c.with(&["--ca", &certs.ca()]);
        }
        c
    }

    /// A TLS client trusting `ca` and presenting the certificate `name` from `from`, if any.
    fn ssl(bootstrap: &str, ca: &Certs, cert: Option<(&Certs, &str)>) -> Client {
        let mut c = Client::new(bootstrap, "SSL").with(&["--ca", &ca.ca()]);
        if let Some((from, name)) = cert {
            c = c.with(&[
                "--cert",
                &from.file(&format!("{name}.pem")),
                "--key",
                &from.file(&format!("{name}.key")),
            ]);
        }
        c
    }

    fn with(mut self, extra: &[&str]) -> Client {
        self.args.extend(extra.iter().map(|s| s.to_string()));
        self
    }

    /// `security_confluent.py OP` with these settings and `extra` arguments.
    fn run(&self, op: &str, extra: &[&str]) -> Run {
        let mut args = vec![op.to_string()];
        args.extend(self.args.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        run_script("security_confluent.py", &args)
    }

    fn produce(&self, topic: &str, count: usize, prefix: &str) -> Run {
        self.run(
            "produce",
            &[
                "--topic",
                topic,
                "--count",
                &count.to_string(),
                "--prefix",
                prefix,
            ],
        )
    }

    fn consume_group(&self, topic: &str, group: &str, count: usize) -> Run {
        self.run(
            "consume",
            &[
                "--topic",
                topic,
                "--group",
                group,
                "--count",
                &count.to_string(),
            ],
        )
    }

    /// Every record of `topic` (from the log start to the high watermark).
    fn dump(&self, topic: &str) -> Run {
        self.run("consume", &["--topic", topic])
    }

    fn create_topic(&self, topic: &str, partitions: u32) -> Run {
        self.run(
            "create-topic",
            &["--topic", topic, "--partitions", &partitions.to_string()],
        )
    }

    fn create_acls(&self, specs: &[&str]) -> Run {
        let mut args = Vec::new();
        for s in specs {
            args.extend(["--acl", *s]);
        }
        self.run("create-acls", &args)
    }

    fn topics(&self) -> Vec<String> {
        self.run("topics", &[]).expect_ok().strings("topics")
    }
}

/// `security_kafka_python.py --op OP` as a SASL user over SASL_PLAINTEXT.
fn kafka_python_sasl(addr: &str, mechanism: &str, user: &str, pw: &str, op: &str) -> Run {
    let args: Vec<String> = [
        "--bootstrap",
        addr,
        "--protocol",
        "SASL_PLAINTEXT",
        "--mechanism",
        mechanism,
        "--user",
        user,
        "--password",
        pw,
        "--op",
        op,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    run_script("security_kafka_python.py", &args)
}

/// A temporary broker dir whose data dir already holds `users` (name, mechanism, password).
fn dir_with_users(users: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let tmp = broker_tempdir();
    let data = Broker::data_dir_in(tmp.path());
    std::fs::create_dir_all(&data).unwrap();
    for (name, mech, pw) in users {
        users_add(&data, name, mech, pw);
    }
    tmp
}

fn args<'a>(parts: &[&'a [&'a str]], owned: &'a [String]) -> Vec<&'a str> {
    let mut v: Vec<&str> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    v.extend(owned.iter().map(String::as_str));
    v
}

/// The broker log must show no panic.
fn assert_no_panic(b: &Broker) {
    let log = b.all_logs();
    assert!(!log.contains("panicked"), "broker panicked:\n{log}");
}

/// The ACL JSON objects of a describe/delete result as comparable strings.
fn acl_set(run: &Run, field: &str) -> std::collections::BTreeSet<String> {
    run.json[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field}:\n{}", run.text))
        .iter()
        .map(|a| {
            format!(
                "{} {} {} {} {} {} {}",
                a["principal"].as_str().unwrap(),
                a["resource_type"].as_str().unwrap(),
                a["name"].as_str().unwrap(),
                a["pattern"].as_str().unwrap(),
                a["operation"].as_str().unwrap(),
                a["permission"].as_str().unwrap(),
                a["host"].as_str().unwrap()
            )
        })
        .collect()
}

fn client_errors(run: &Run) -> String {
    run.json["client_errors"].to_string()
}

// ---------------------------------------------------------------------------------------------
// 1. SASL_SSL with librdkafka
// ---------------------------------------------------------------------------------------------

#[test]
fn sasl_ssl_plain_and_scram_users_produce_consume_and_list_topics() {
    let certs = Certs::generate(&[]);
    let tmp = dir_with_users(&[
        ("carol", "SCRAM-SHA-512", "carol-pw"),
        ("dave", "SCRAM-SHA-512", "dave-pw"),
    ]);
    let b = Broker::start_listeners_in(
        tmp,
        &[("SASL_SSL", 0)],
        &args(&[FAST_GROUPS], &certs.server_args()),
    );
    let addr = b.listener("SASL_SSL");

    // PLAIN is checked against the stored SCRAM credential.
    let carol = Client::sasl(&addr, Some(&certs), "PLAIN", "carol", "carol-pw");
    let r = carol
        .run(
            "roundtrip",
            &[
                "--topic",
                "plain-t",
                "--partitions",
                "3",
                "--count",
                "200",
                "--group",
                "gp",
            ],
        )
        .expect_ok();
    assert_eq!(r.json["consumed"], 200, "{}", r.text);
    assert!(
        r.strings("topics").contains(&"plain-t".to_string()),
        "{}",
        r.text
    );

    let dave = Client::sasl(&addr, Some(&certs), "SCRAM-SHA-512", "dave", "dave-pw");
    let r = dave
        .run(
            "roundtrip",
            &[
                "--topic",
                "scram-t",
                "--partitions",
                "2",
                "--count",
                "200",
                "--group",
                "gs",
            ],
        )
        .expect_ok();
    assert_eq!(r.json["consumed"], 200, "{}", r.text);
    let topics = r.strings("topics");
    assert!(
        topics.contains(&"scram-t".to_string()) && topics.contains(&"plain-t".to_string()),
        "{}",
        r.text
    );

    // Wrong password, with either mechanism, and an unknown user: authentication fails.
    for (mech, user, pw) in [
        ("SCRAM-SHA-512", "dave", "wrong"),
        ("PLAIN", "carol", "wrong"),
        ("SCRAM-SHA-512", "nobody", "x"),
        ("PLAIN", "nobody", "x"),
    ] {
        let r = Client::sasl(&addr, Some(&certs), mech, user, pw)
            .run("connect", &["--wait", "8"])
            .expect_error("_AUTHENTICATION");
        assert!(
            client_errors(&r).contains("_AUTHENTICATION"),
            "{mech} {user}: {}",
            r.text
        );
    }
    // A SASL client without TLS on the SASL_SSL port gets nowhere either.
    let r =
        Client::sasl(&addr, None, "PLAIN", "carol", "carol-pw").run("connect", &["--wait", "5"]);
    assert!(
        !r.ok(),
        "SASL_PLAINTEXT client served on a SASL_SSL port:\n{}",
        r.text
    );
    assert_no_panic(&b);
}

#[test]
fn sasl_mechanism_not_offered_is_refused() {
    let tmp = dir_with_users(&[("erin", "SCRAM-SHA-256", "erin-pw")]);
    let b = Broker::start_listeners_in(
        tmp,
        &[("SASL_PLAINTEXT", 0)],
        &["--sasl-mechanisms", "PLAIN"],
    );
    let addr = b.listener("SASL_PLAINTEXT");
    let r = Client::sasl(&addr, None, "SCRAM-SHA-256", "erin", "erin-pw")
        .run("connect", &["--wait", "8"]);
    assert!(
        !r.ok(),
        "SCRAM-SHA-256 accepted though only PLAIN is offered:\n{}",
        r.text
    );
    let errs = client_errors(&r);
    assert!(
        errs.contains("_AUTHENTICATION") || errs.contains("UNSUPPORTED_SASL_MECHANISM"),
        "expected an authentication / unsupported-mechanism error:\n{}",
        r.text
    );
    assert!(
        r.text.contains("PLAIN"),
        "the client should learn the mechanisms the broker offers (PLAIN):\n{}",
        r.text
    );
    // The same user over PLAIN works.
    Client::sasl(&addr, None, "PLAIN", "erin", "erin-pw")
        .run("connect", &[])
        .expect_ok();
}

// ---------------------------------------------------------------------------------------------
// 2. SSL with client certificates
// ---------------------------------------------------------------------------------------------

fn mtls_broker(certs: &Certs, extra: &[&str]) -> Broker {
    let mut owned = certs.server_args();
    owned.extend([
        "--tls-client-auth".to_string(),
        "required".to_string(),
        "--tls-client-ca".to_string(),
        certs.ca(),
    ]);
    Broker::start_listeners(&[("SSL", 0)], &args(&[FAST_GROUPS, extra], &owned))
}

#[test]
fn ssl_client_certificate_is_the_principal_for_acls() {
    let certs = Certs::generate(&["alice", "admin"]);
    for f in ["alice.pem", "alice.key", "admin.pem", "admin.key"] {
        assert!(std::path::Path::new(&certs.file(f)).exists(), "no {f}");
    }
    let b = mtls_broker(
        &certs,
        &["--authorizer", "acl", "--super-users", "User:admin"],
    );
    let addr = b.listener("SSL");
    let admin = Client::ssl(&addr, &certs, Some((&certs, "admin")));
    let alice = Client::ssl(&addr, &certs, Some((&certs, "alice")));

    admin.create_topic("topic-a", 2).expect_ok();
    admin.create_topic("topic-b", 1).expect_ok();
    admin
        .create_acls(&[
            "User:alice,TOPIC,topic-a,WRITE",
            "User:alice,TOPIC,topic-a,DESCRIBE",
            "User:alice,TOPIC,topic-a,READ",
            "User:alice,GROUP,ga,READ",
        ])
        .expect_ok();

    let r = alice.produce("topic-a", 50, "a").expect_ok();
    assert_eq!(r.json["produced"], 50, "{}", r.text);
    let r = alice.consume_group("topic-a", "ga", 50).expect_ok();
    assert_eq!(r.strings("values").len(), 50, "{}", r.text);

    alice
        .produce("topic-b", 5, "b")
        .expect_error("TOPIC_AUTHORIZATION_FAILED");
    // Nothing of alice's reached topic-b.
    let r = admin.dump("topic-b").expect_ok();
    assert!(r.strings("values").is_empty(), "{}", r.text);
    // The ACL names the certificate's CN, so alice sees topic-a only.
    let topics = alice.topics();
    assert!(
        topics.contains(&"topic-a".to_string()) && !topics.contains(&"topic-b".to_string()),
        "{topics:?}"
    );
    assert_no_panic(&b);
}

/// `security_tls_probe.py`: a bare OpenSSL client sending one ApiVersions request over TLS.
fn tls_probe(addr: &str, ca: &Certs, cert: Option<(&Certs, &str)>, extra: &[&str]) -> Run {
    let mut args: Vec<String> = vec!["--addr".into(), addr.into(), "--ca".into(), ca.ca()];
    if let Some((from, name)) = cert {
        args.extend([
            "--cert".into(),
            from.file(&format!("{name}.pem")),
            "--key".into(),
            from.file(&format!("{name}.key")),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    run_script("security_tls_probe.py", &args)
}

#[test]
fn ssl_required_client_auth_refuses_foreign_and_missing_certificates() {
    let certs = Certs::generate(&["alice"]);
    let other = Certs::generate(&["mallory"]);
    let b = mtls_broker(&certs, &[]);
    let addr = b.listener("SSL");

    // Control: alice's certificate from the broker's CA works (produce and consume back).
    let alice = Client::ssl(&addr, &certs, Some((&certs, "alice")));
    alice.produce("mtls", 20, "m").expect_ok();
    let r = alice.consume_group("mtls", "gm", 20).expect_ok();
    assert_eq!(r.strings("values").len(), 20, "{}", r.text);
    tls_probe(&addr, &certs, Some((&certs, "alice")), &[]).expect_ok();

    // A certificate from another CA (the client still trusts the broker's CA). OpenSSL's own
    // client presents it; the broker answers with an unknown_ca alert, never with Kafka bytes.
    let r = tls_probe(&addr, &certs, Some((&other, "mallory")), &[]);
    assert!(
        !r.ok()
            && r.json["message"]
                .as_str()
                .unwrap_or("")
                .contains("UNKNOWN_CA"),
        "a certificate of a foreign CA must be refused (unknown_ca):\n{}",
        r.text
    );
    // librdkafka does not even send it (its issuer is not among the CA names the broker asks
    // for) and gets certificate_required; either way no metadata.
    let r = Client::ssl(&addr, &certs, Some((&other, "mallory"))).run("connect", &["--wait", "4"]);
    assert!(
        !r.ok(),
        "a certificate of a foreign CA was accepted:\n{}",
        r.text
    );

    // No certificate at all.
    let r = tls_probe(&addr, &certs, None, &[]);
    assert!(
        !r.ok()
            && r.json["message"]
                .as_str()
                .unwrap_or("")
                .contains("CERTIFICATE_REQUIRED"),
        "a client without a certificate must be refused (certificate_required):\n{}",
        r.text
    );
    let r = Client::ssl(&addr, &certs, None).run("connect", &["--wait", "4"]);
    assert!(
        !r.ok(),
        "a client without a certificate was accepted:\n{}",
        r.text
    );
    assert!(
        client_errors(&r).contains("certificate required"),
        "expected a certificate_required alert:\n{}",
        r.text
    );

    // A client that does not trust the broker's CA refuses the broker.
    let r = Client::ssl(&addr, &other, Some((&other, "mallory"))).run("connect", &["--wait", "4"]);
    assert!(
        !r.ok(),
        "connected without trusting the broker's CA:\n{}",
        r.text
    );
    assert!(
        client_errors(&r).contains("certificate verify failed"),
        "{}",
        r.text
    );

    let log = b.log();
    assert!(
        log.contains("TLS handshake failed"),
        "refused handshakes should be logged:\n{log}"
    );
    // The broker still serves alice.
    alice.run("connect", &[]).expect_ok();
    assert_no_panic(&b);
}

#[test]
fn ssl_client_auth_requested_accepts_clients_with_and_without_certificates() {
    let certs = Certs::generate(&["alice", "admin"]);
    let mut owned = certs.server_args();
    owned.extend([
        "--tls-client-auth".to_string(),
        "requested".to_string(),
        "--tls-client-ca".to_string(),
        certs.ca(),
    ]);
    let b = Broker::start_listeners(
        &[("SSL", 0)],
        &args(
            &[&["--authorizer", "acl", "--super-users", "User:admin"]],
            &owned,
        ),
    );
    let addr = b.listener("SSL");
    let admin = Client::ssl(&addr, &certs, Some((&certs, "admin")));
    admin.create_topic("req", 1).expect_ok();
    admin
        .create_acls(&[
            "User:alice,TOPIC,req,WRITE",
            "User:alice,TOPIC,req,DESCRIBE",
        ])
        .expect_ok();
    // With a certificate: User:alice, allowed by her ACL.
    Client::ssl(&addr, &certs, Some((&certs, "alice")))
        .produce("req", 3, "a")
        .expect_ok();
    // Without one: the handshake succeeds, the principal is User:ANONYMOUS, which has no ACL.
    let anon = Client::ssl(&addr, &certs, None);
    let r = anon.run("connect", &[]).expect_ok();
    assert!(
        !r.strings("topics").contains(&"req".to_string()),
        "{}",
        r.text
    );
    anon.produce("req", 1, "anon")
        .expect_error("TOPIC_AUTHORIZATION_FAILED");
    // A certificate of a foreign CA is still refused.
    let other = Certs::generate(&["mallory"]);
    let r = tls_probe(&addr, &certs, Some((&other, "mallory")), &[]);
    assert!(!r.ok(), "a foreign certificate was accepted:\n{}", r.text);
    assert_no_panic(&b);
}

#[test]
fn tls_1_2_clients_are_served() {
    // Kafka's default ssl.enabled.protocols is TLSv1.2,TLSv1.3: clients limited to TLS 1.2
    // (older JVMs and OpenSSL builds, FIPS policies) must still connect.
    let certs = Certs::generate(&["alice"]);
    let b = Broker::start_listeners(
        &[("SSL", 0)],
        &certs
            .server_args()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let r = tls_probe(&b.listener("SSL"), &certs, None, &["--tls-max", "1.2"]);
    assert!(
        r.ok(),
        "a TLS 1.2 client was refused:\n{}\n{}",
        r.text,
        b.log()
    );
    assert_eq!(r.json["tls"], "TLSv1.2", "{}", r.text);
}

// ---------------------------------------------------------------------------------------------
// 3. kafka-python, SCRAM-SHA-256 over TLS
// ---------------------------------------------------------------------------------------------

#[test]
fn kafka_python_scram_sha_256_over_sasl_ssl() {
    let certs = Certs::generate(&[]);
    let tmp = dir_with_users(&[("frank", "SCRAM-SHA-256", "frank-pw")]);
    let b = Broker::start_listeners_in(
        tmp,
        &[("SASL_SSL", 0)],
        &args(&[FAST_GROUPS], &certs.server_args()),
    );
    let addr = b.listener("SASL_SSL");
    let base = |pw: &str| -> Vec<String> {
        [
            "--bootstrap",
            &addr,
            "--protocol",
            "SASL_SSL",
            "--mechanism",
            "SCRAM-SHA-256",
            "--user",
            "frank",
            "--password",
            pw,
            "--ca",
            &certs.ca(),
            "--count",
            "150",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let r = run_script("security_kafka_python.py", &base("frank-pw")).expect_ok();
    assert_eq!(r.json["produced"], 150, "{}", r.text);
    assert_eq!(r.json["consumed"], 150, "{}", r.text);
    // A wrong password fails with kafka-python too.
    let mut bad = base("nope");
    bad.extend(["--topic", "kp-bad", "--timeout", "5"].map(String::from));
    let r = run_script("security_kafka_python.py", &bad);
    assert!(!r.ok(), "wrong password accepted:\n{}", r.text);
    // The broker answers every failed SaslAuthenticate with SASL_AUTHENTICATION_FAILED (58)
    // before closing (checked on the wire); kafka-python 3.0 often handles the EOF before the
    // answer it read with it, and then logs only "socket disconnected".
    assert!(
        r.text.contains("SaslAuthenticationFailedError") || r.text.contains("socket disconnected"),
        "expected an authentication failure:\n{}",
        r.text
    );
    let log = b.log().to_lowercase();
    assert!(
        log.contains("authentication failed") && log.contains("scram-sha-256"),
        "the broker should log the failed SCRAM-SHA-256 login:\n{log}"
    );
    assert_no_panic(&b);
}

// ---------------------------------------------------------------------------------------------
// 4. ACLs end to end, SCRAM credentials through the AdminClient
// ---------------------------------------------------------------------------------------------

/// A SASL_PLAINTEXT broker with `--authorizer acl --super-users User:admin` and SCRAM-SHA-512
/// users admin and alice.
fn acl_broker() -> Broker {
    let tmp = dir_with_users(&[
        ("admin", "SCRAM-SHA-512", ADMIN_PW),
        ("alice", "SCRAM-SHA-512", ALICE_PW),
    ]);
    Broker::start_listeners_in(
        tmp,
        &[("SASL_PLAINTEXT", 0)],
        &args(
            &[
                FAST_GROUPS,
                &["--authorizer", "acl", "--super-users", "User:admin"],
            ],
            &[],
        ),
    )
}

const ALICE_ACLS: &[&str] = &[
    "User:alice,TOPIC,orders,WRITE",
    "User:alice,TOPIC,orders,DESCRIBE",
    "User:alice,TOPIC,orders,READ",
    "User:alice,GROUP,g1,READ",
];

fn expected_alice_acls() -> std::collections::BTreeSet<String> {
    ALICE_ACLS
        .iter()
        .map(|s| {
            let f: Vec<&str> = s.split(',').collect();
            format!("{} {} {} LITERAL {} ALLOW *", f[0], f[1], f[2], f[3])
        })
        .collect()
}

#[test]
fn acls_end_to_end_with_sasl_users() {
    let b = acl_broker();
    let addr = b.listener("SASL_PLAINTEXT");
    let admin = Client::sasl(&addr, None, "SCRAM-SHA-512", "admin", ADMIN_PW);
    let alice = Client::sasl(&addr, None, "SCRAM-SHA-512", "alice", ALICE_PW);

    admin.create_topic("orders", 2).expect_ok();
    admin.create_topic("secret", 1).expect_ok();
    admin.produce("secret", 1, "admin").expect_ok();
    // No ACL yet: alice may not even create topics or write.
    alice
        .create_topic("alice-topic", 1)
        .expect_error("TOPIC_AUTHORIZATION_FAILED");
    alice
        .produce("orders", 1, "early")
        .expect_error("TOPIC_AUTHORIZATION_FAILED");

    admin.create_acls(ALICE_ACLS).expect_ok();
    let r = admin.run("describe-acls", &[]).expect_ok();
    assert_eq!(acl_set(&r, "acls"), expected_alice_acls(), "{}", r.text);
    // A filtered describe finds only the group ACL.
    let r = admin
        .run("describe-acls", &["--acl", ",GROUP,,ANY"])
        .expect_ok();
    assert_eq!(acl_set(&r, "acls").len(), 1, "{}", r.text);

    let r = alice.produce("orders", 30, "alice").expect_ok();
    assert_eq!(r.json["produced"], 30, "{}", r.text);
    alice
        .produce("secret", 3, "leak")
        .expect_error("TOPIC_AUTHORIZATION_FAILED");
    let r = admin.dump("secret").expect_ok();
    assert_eq!(
        r.strings("values"),
        vec!["admin-0".to_string()],
        "{}",
        r.text
    );

    let r = alice.consume_group("orders", "g1", 30).expect_ok();
    assert_eq!(r.strings("values").len(), 30, "{}", r.text);
    alice
        .consume_group("orders", "g2", 1)
        .expect_error("GROUP_AUTHORIZATION_FAILED");

    let topics = alice.topics();
    assert!(
        topics.contains(&"orders".to_string()) && !topics.contains(&"secret".to_string()),
        "alice lists {topics:?}"
    );
    let all = admin.topics();
    assert!(all.contains(&"secret".to_string()), "admin lists {all:?}");

    alice
        .create_acls(&["User:alice,TOPIC,secret,WRITE"])
        .expect_error("CLUSTER_AUTHORIZATION_FAILED");
    // librdkafka ignores DescribeAcls' request-level error code (it returns an empty list), so
    // this one is checked with kafka-python.
    kafka_python_sasl(&addr, "SCRAM-SHA-512", "alice", ALICE_PW, "describe-acls")
        .expect_error("ClusterAuthorizationFailedError");
    let r =
        kafka_python_sasl(&addr, "SCRAM-SHA-512", "admin", ADMIN_PW, "describe-acls").expect_ok();
    assert_eq!(r.json["acls"], 4, "{}", r.text);

    // Delete alice's topic ACLs: her writes are denied again, the group ACL stays.
    let r = admin
        .run("delete-acls", &["--acl", "User:alice,TOPIC,orders,ANY"])
        .expect_ok();
    assert_eq!(acl_set(&r, "deleted").len(), 3, "{}", r.text);
    let r = admin.run("describe-acls", &[]).expect_ok();
    assert_eq!(
        acl_set(&r, "acls"),
        ["User:alice GROUP g1 LITERAL READ ALLOW *".to_string()].into(),
        "{}",
        r.text
    );
    alice
        .produce("orders", 1, "late")
        .expect_error("TOPIC_AUTHORIZATION_FAILED");
    let r = admin.dump("orders").expect_ok();
    let values = r.strings("values");
    assert_eq!(values.len(), 30, "{}", r.text);
    assert!(values.iter().all(|v| v.starts_with("alice-")), "{}", r.text);
    assert_no_panic(&b);
}

#[test]
fn admin_client_manages_scram_credentials() {
    let b = acl_broker();
    let addr = b.listener("SASL_PLAINTEXT");
    let admin = Client::sasl(&addr, None, "SCRAM-SHA-512", "admin", ADMIN_PW);
    let bob_pw = "bob-Pa55-unique";

    // Not yet a user.
    Client::sasl(&addr, None, "SCRAM-SHA-512", "bob", bob_pw)
        .run("connect", &["--wait", "6"])
        .expect_error("_AUTHENTICATION");
    admin
        .run(
            "scram-upsert",
            &[
                "--name",
                "bob",
                "--scram-mechanism",
                "SCRAM-SHA-512",
                "--scram-password",
                bob_pw,
                "--iterations",
                "8192",
            ],
        )
        .expect_ok();
    let bob = Client::sasl(&addr, None, "SCRAM-SHA-512", "bob", bob_pw);
    bob.run("connect", &[]).expect_ok();
    // PLAIN with the same password works too; a wrong one does not.
    Client::sasl(&addr, None, "PLAIN", "bob", bob_pw)
        .run("connect", &[])
        .expect_ok();
    Client::sasl(&addr, None, "SCRAM-SHA-512", "bob", "wrong")
        .run("connect", &["--wait", "6"])
        .expect_error("_AUTHENTICATION");

    let r = admin.run("scram-describe", &["--name", "bob"]).expect_ok();
    assert_eq!(
        r.json["users"]["bob"],
        serde_json::json!([{"mechanism": "SCRAM-SHA-512", "iterations": 8192}]),
        "{}",
        r.text
    );
    assert!(!r.text.contains(bob_pw), "password leaked:\n{}", r.text);
    let r = admin.run("scram-describe", &[]).expect_ok();
    for u in ["admin", "alice", "bob"] {
        assert!(r.json["users"][u].is_array(), "{u} not listed:\n{}", r.text);
    }
    assert!(
        !r.text.contains(bob_pw) && !r.text.contains(ALICE_PW),
        "{}",
        r.text
    );

    // A non-super user may not manage credentials.
    let alice = Client::sasl(&addr, None, "SCRAM-SHA-512", "alice", ALICE_PW);
    alice
        .run(
            "scram-upsert",
            &[
                "--name",
                "mallory",
                "--scram-password",
                "x",
                "--iterations",
                "8192",
            ],
        )
        .expect_error("CLUSTER_AUTHORIZATION_FAILED");
    // librdkafka crashes (SIGSEGV) on a request-level error of DescribeUserScramCredentials
    // with an error message (it keeps a pointer to stack memory), so kafka-python checks it.
    kafka_python_sasl(&addr, "SCRAM-SHA-512", "alice", ALICE_PW, "scram-describe")
        .expect_error("ClusterAuthorizationFailedError");
    let r =
        kafka_python_sasl(&addr, "SCRAM-SHA-512", "admin", ADMIN_PW, "scram-describe").expect_ok();
    assert_eq!(
        r.json["users"]["bob"],
        serde_json::json!([["SCRAM_SHA_512", 8192]]),
        "{}",
        r.text
    );

    // Deleting bob's only credential locks him out.
    admin
        .run(
            "scram-delete",
            &["--name", "bob", "--scram-mechanism", "SCRAM-SHA-512"],
        )
        .expect_ok();
    bob.run("connect", &["--wait", "6"])
        .expect_error("_AUTHENTICATION");
    assert_no_panic(&b);
}

#[test]
fn acl_prefixed_wildcard_and_deny_rules() {
    let b = acl_broker();
    let addr = b.listener("SASL_PLAINTEXT");
    let admin = Client::sasl(&addr, None, "SCRAM-SHA-512", "admin", ADMIN_PW);
    let alice = Client::sasl(&addr, None, "SCRAM-SHA-512", "alice", ALICE_PW);
    for t in ["logs-app", "logs-secret", "other"] {
        admin.create_topic(t, 1).expect_ok();
    }
    admin
        .create_acls(&[
            // alice may write every topic starting with "logs-" ...
            "User:alice,TOPIC,logs-,WRITE,ALLOW,PREFIXED",
            "User:alice,TOPIC,logs-,DESCRIBE,ALLOW,PREFIXED",
            // ... except logs-secret: DENY wins over ALLOW.
            "User:alice,TOPIC,logs-secret,WRITE,DENY,LITERAL",
            // Everyone may read "other" (wildcard principal and resource name).
            "User:*,TOPIC,other,READ",
            "User:*,GROUP,*,READ",
        ])
        .expect_ok();
    alice.produce("logs-app", 5, "ok").expect_ok();
    alice
        .produce("logs-secret", 1, "no")
        .expect_error("TOPIC_AUTHORIZATION_FAILED");
    alice
        .produce("other", 1, "no")
        .expect_error("TOPIC_AUTHORIZATION_FAILED");
    admin.produce("other", 4, "adm").expect_ok();
    let r = alice.consume_group("other", "any-group", 4).expect_ok();
    assert_eq!(r.strings("values").len(), 4, "{}", r.text);
    let r = admin.dump("logs-secret").expect_ok();
    assert!(r.strings("values").is_empty(), "{}", r.text);
    // A filter on the PREFIXED pattern finds exactly those bindings.
    let r = admin
        .run("describe-acls", &["--acl", ",TOPIC,logs-,ANY,ANY,PREFIXED"])
        .expect_ok();
    assert_eq!(acl_set(&r, "acls").len(), 2, "{}", r.text);
    // MATCH finds every binding that applies to logs-secret (prefixed and literal).
    let r = admin
        .run(
            "describe-acls",
            &["--acl", ",TOPIC,logs-secret,ANY,ANY,MATCH"],
        )
        .expect_ok();
    assert_eq!(acl_set(&r, "acls").len(), 3, "{}", r.text);
    assert_no_panic(&b);
}

// ---------------------------------------------------------------------------------------------
// 5. Raw sockets
// ---------------------------------------------------------------------------------------------

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn raw(addr: &str) -> RawConn {
    let c = RawConn::connect(addr);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    c
}

fn api_versions(c: &mut RawConn) -> ApiVersionsResponse {
    let ResponseKind::ApiVersions(r) = c.call(
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(s("sluice-tests"))
                .with_client_software_version(s("1")),
        ),
    ) else {
        panic!("not an ApiVersions response")
    };
    r
}

fn metadata_request() -> RequestKind {
    RequestKind::Metadata(MetadataRequest::default().with_topics(None))
}

/// Reads until EOF (or `limit`); None if the broker kept the connection open past the timeout.
fn read_to_eof(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None;
            }
            // Reset by peer counts as closed.
            Err(_) => return Some(got),
        }
        if Instant::now() > deadline {
            return None;
        }
    }
}

#[test]
fn sasl_listener_answers_api_versions_and_closes_on_other_requests_before_auth() {
    let tmp = dir_with_users(&[("alice", "SCRAM-SHA-512", ALICE_PW)]);
    let b = Broker::start_listeners_in(
        tmp,
        &[("SASL_PLAINTEXT", 0), ("PLAINTEXT", 0)],
        &["--connection-failed-authentication-delay-ms", "500"],
    );
    let sasl = b.listener("SASL_PLAINTEXT");

    // ApiVersions is answered before authentication and lists the SASL APIs.
    let mut c = raw(&sasl);
    let r = api_versions(&mut c);
    assert_eq!(r.error_code, 0);
    let keys: Vec<i16> = r.api_keys.iter().map(|k| k.api_key).collect();
    assert!(keys.contains(&17), "SaslHandshake missing: {keys:?}");
    assert!(keys.contains(&36), "SaslAuthenticate missing: {keys:?}");
    // Then Metadata without authenticating: closed, no answer.
    let (_, f) = c.frame(ApiKey::Metadata, 12, &metadata_request());
    c.stream.write_all(&f).unwrap();
    let rest = read_to_eof(&mut c.stream, Duration::from_secs(10))
        .expect("connection left open after Metadata before SASL");
    assert!(rest.is_empty(), "answered Metadata before SASL: {rest:?}");

    // Metadata as the very first request: closed, no answer.
    let mut c = raw(&sasl);
    let (_, f) = c.frame(ApiKey::Metadata, 12, &metadata_request());
    c.stream.write_all(&f).unwrap();
    let rest = read_to_eof(&mut c.stream, Duration::from_secs(10))
        .expect("connection left open after a first Metadata");
    assert!(rest.is_empty(), "answered Metadata before SASL: {rest:?}");

    // Produce as the first request: same.
    let mut c = raw(&sasl);
    let body =
        sluice_tests::kafka::produce_request("sneaky", sluice_tests::kafka::batch(1, 8, b'x'), -1);
    let (_, f) = c.frame(ApiKey::Produce, 9, &body);
    c.stream.write_all(&f).unwrap();
    let rest = read_to_eof(&mut c.stream, Duration::from_secs(10))
        .expect("connection left open after a Produce before SASL");
    assert!(rest.is_empty(), "answered Produce before SASL: {rest:?}");

    // Nothing was written: the PLAINTEXT listener (no authorizer) does not know the topic.
    let mut p = raw(&b.listener("PLAINTEXT"));
    let ResponseKind::Metadata(md) = p.call(
        ApiKey::Metadata,
        12,
        RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(None)
                .with_allow_auto_topic_creation(false),
        ),
    ) else {
        panic!()
    };
    assert!(
        md.topics
            .iter()
            .all(|t| t.name.as_ref().map(|n| n.as_str()) != Some("sneaky")),
        "{md:?}"
    );
    assert_no_panic(&b);
}

#[test]
fn raw_sasl_handshake_and_failed_plain_authentication() {
    let tmp = dir_with_users(&[("alice", "SCRAM-SHA-512", ALICE_PW)]);
    let b = Broker::start_listeners_in(
        tmp,
        &[("SASL_PLAINTEXT", 0)],
        &[
            "--connection-failed-authentication-delay-ms",
            "500",
            "--sasl-mechanisms",
            "PLAIN,SCRAM-SHA-512",
        ],
    );
    let addr = b.listener("SASL_PLAINTEXT");
    let handshake = |c: &mut RawConn, mech: &str| -> SaslHandshakeResponse {
        let ResponseKind::SaslHandshake(r) = c.call(
            ApiKey::SaslHandshake,
            1,
            RequestKind::SaslHandshake(SaslHandshakeRequest::default().with_mechanism(s(mech))),
        ) else {
            panic!()
        };
        r
    };
    let authenticate = |c: &mut RawConn, bytes: &[u8]| -> Option<SaslAuthenticateResponse> {
        let (id, f) = c.frame(
            ApiKey::SaslAuthenticate,
            2,
            &RequestKind::SaslAuthenticate(
                SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(bytes)),
            ),
        );
        c.stream.write_all(&f).unwrap();
        let (corr, r) = c.read_response(ApiKey::SaslAuthenticate, 2)?;
        assert_eq!(corr, id);
        let ResponseKind::SaslAuthenticate(r) = r else {
            panic!()
        };
        Some(r)
    };

    // An unknown mechanism: UNSUPPORTED_SASL_MECHANISM (33) with the offered ones.
    let mut c = raw(&addr);
    let r = handshake(&mut c, "SCRAM-SHA-256");
    assert_eq!(r.error_code, 33, "{r:?}");
    let offered: Vec<&str> = r.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!(offered, vec!["PLAIN", "SCRAM-SHA-512"], "{r:?}");

    // PLAIN with the right password, then Metadata is served.
    let mut c = raw(&addr);
    let r = handshake(&mut c, "PLAIN");
    assert_eq!(r.error_code, 0, "{r:?}");
    let r = authenticate(&mut c, format!("\0alice\0{ALICE_PW}").as_bytes()).expect("an answer");
    assert_eq!(r.error_code, 0, "{r:?}");
    let ResponseKind::Metadata(md) = c.call(ApiKey::Metadata, 12, metadata_request()) else {
        panic!()
    };
    assert_eq!(md.brokers.len(), 1, "{md:?}");

    // A wrong password: SASL_AUTHENTICATION_FAILED (58) after the configured delay, then closed.
    for creds in [
        "\0alice\0wrong".to_string(),
        format!("\0nobody\0{ALICE_PW}"),
    ] {
        let mut c = raw(&addr);
        assert_eq!(handshake(&mut c, "PLAIN").error_code, 0);
        let start = Instant::now();
        let r = authenticate(&mut c, creds.as_bytes()).expect("an error response before closing");
        let took = start.elapsed();
        assert_eq!(r.error_code, 58, "{creds:?}: {r:?}");
        assert!(
            took >= Duration::from_millis(400),
            "failed authentication answered after {took:?}, not delayed 500 ms"
        );
        assert!(
            read_to_eof(&mut c.stream, Duration::from_secs(5)).is_some(),
            "connection left open after a failed authentication"
        );
    }
    assert_no_panic(&b);
}

#[test]
fn sasl_sessions_expire_without_reauthentication() {
    let tmp = dir_with_users(&[("alice", "SCRAM-SHA-512", ALICE_PW)]);
    let b = Broker::start_listeners_in(
        tmp,
        &[("SASL_PLAINTEXT", 0)],
        &["--connections-max-reauth-ms", "1500"],
    );
    let addr = b.listener("SASL_PLAINTEXT");

    // The session lifetime is announced in SaslAuthenticate (v1+).
    let mut c = raw(&addr);
    let ResponseKind::SaslHandshake(h) = c.call(
        ApiKey::SaslHandshake,
        1,
        RequestKind::SaslHandshake(SaslHandshakeRequest::default().with_mechanism(s("PLAIN"))),
    ) else {
        panic!()
    };
    assert_eq!(h.error_code, 0);
    let ResponseKind::SaslAuthenticate(a) = c.call(
        ApiKey::SaslAuthenticate,
        2,
        RequestKind::SaslAuthenticate(
            SaslAuthenticateRequest::default()
                .with_auth_bytes(Bytes::from(format!("\0alice\0{ALICE_PW}"))),
        ),
    ) else {
        panic!()
    };
    assert_eq!(a.error_code, 0, "{a:?}");
    assert!(
        a.session_lifetime_ms > 0 && a.session_lifetime_ms <= 1500,
        "session lifetime {} ms, expected (0, 1500]",
        a.session_lifetime_ms
    );
    let ResponseKind::Metadata(_) = c.call(ApiKey::Metadata, 12, metadata_request()) else {
        panic!()
    };
    // This client never re-authenticates: once the session is over it is not served.
    std::thread::sleep(Duration::from_millis(2500));
    let (_, f) = c.frame(ApiKey::Metadata, 12, &metadata_request());
    let _ = c.stream.write_all(&f);
    let rest = read_to_eof(&mut c.stream, Duration::from_secs(10))
        .expect("connection kept open after the session expired");
    assert!(
        rest.is_empty(),
        "served after the session expired: {} bytes",
        rest.len()
    );

    // librdkafka re-authenticates on its own (KIP-368): a producer paced over 3+ sessions
    // delivers everything with no error.
    let alice = Client::sasl(&addr, None, "SCRAM-SHA-512", "alice", ALICE_PW);
    let r = alice
        .run(
            "produce",
            &[
                "--topic", "reauth", "--count", "60", "--spread", "5", "--prefix", "r",
            ],
        )
        .expect_ok();
    assert_eq!(r.json["produced"], 60, "{}", r.text);
    let logins = b.log().matches("SASL authentication succeeded").count();
    assert!(
        logins >= 4,
        "expected the producer to re-authenticate (saw {logins} logins):\n{}",
        b.log()
    );
    assert_no_panic(&b);
}

#[test]
fn tls_certificate_reloads_on_sighup() {
    let first = Certs::generate(&[]);
    let second = Certs::generate(&[]);
    let live = tempfile::tempdir().unwrap();
    let (cert, key) = (
        live.path().join("server.pem"),
        live.path().join("server.key"),
    );
    std::fs::copy(first.file("server.pem"), &cert).unwrap();
    std::fs::copy(first.file("server.key"), &key).unwrap();
    let b = Broker::start_listeners(
        &[("SSL", 0)],
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let addr = b.listener("SSL");
    tls_probe(&addr, &first, None, &[]).expect_ok();
    assert!(!tls_probe(&addr, &second, None, &[]).ok());

    std::fs::copy(second.file("server.pem"), &cert).unwrap();
    std::fs::copy(second.file("server.key"), &key).unwrap();
    unsafe {
        libc::kill(b.pid() as i32, libc::SIGHUP);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tls_probe(&addr, &second, None, &[]).ok() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served 10 s after SIGHUP:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !tls_probe(&addr, &first, None, &[]).ok(),
        "old certificate still served"
    );
    Client::ssl(&addr, &second, None)
        .produce("reloaded", 3, "x")
        .expect_ok();

    // A broken file on the next SIGHUP keeps the running certificate.
    std::fs::write(&cert, "not a certificate").unwrap();
    unsafe {
        libc::kill(b.pid() as i32, libc::SIGHUP);
    }
    std::thread::sleep(Duration::from_millis(500));
    tls_probe(&addr, &second, None, &[]).expect_ok();
    assert_no_panic(&b);
}

#[test]
fn plaintext_and_garbage_on_a_tls_port_are_dropped_and_the_broker_keeps_serving() {
    let certs = Certs::generate(&["alice"]);
    let b = Broker::start_listeners(
        &[("SSL", 0), ("PLAINTEXT", 0)],
        &certs
            .server_args()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let tls = b.listener("SSL");

    // A Kafka ApiVersions frame in the clear.
    let mut c = raw(&tls);
    let (_, f) = c.frame(
        ApiKey::ApiVersions,
        3,
        &RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(s("t"))
                .with_client_software_version(s("1")),
        ),
    );
    c.stream.write_all(&f).unwrap();
    let got = read_to_eof(&mut c.stream, Duration::from_secs(10))
        .expect("TLS port kept a plaintext Kafka connection open");
    // At most a TLS alert record (content type 21), never a Kafka answer.
    assert!(
        got.is_empty() || got[0] == 0x15,
        "unexpected answer: {got:?}"
    );

    // Random bytes.
    let mut c = raw(&tls);
    let garbage: Vec<u8> = (0..2000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = c.stream.write_all(&garbage);
    assert!(
        read_to_eof(&mut c.stream, Duration::from_secs(10)).is_some(),
        "TLS port kept a garbage connection open"
    );

    // A TLS ClientHello-looking header that then stalls must not stop others.
    let mut stalled = raw(&tls);
    stalled
        .stream
        .write_all(&[0x16, 0x03, 0x01, 0x40, 0x00])
        .unwrap();

    // The broker serves a good TLS client and the plaintext listener.
    let alice = Client::ssl(&tls, &certs, None);
    alice.produce("after-garbage", 10, "g").expect_ok();
    let r = Client::new(&b.listener("PLAINTEXT"), "PLAINTEXT")
        .dump("after-garbage")
        .expect_ok();
    assert_eq!(r.strings("values").len(), 10, "{}", r.text);
    let mut p = raw(&b.listener("PLAINTEXT"));
    assert_eq!(api_versions(&mut p).error_code, 0);
    drop(stalled);
    assert_no_panic(&b);
}

// ---------------------------------------------------------------------------------------------
// 6. Restart; the `users` command
// ---------------------------------------------------------------------------------------------

#[test]
fn acls_and_users_survive_a_clean_restart() {
    let mut b = acl_broker();
    let addr = b.listener("SASL_PLAINTEXT");
    let admin = Client::sasl(&addr, None, "SCRAM-SHA-512", "admin", ADMIN_PW);
    let alice = Client::sasl(&addr, None, "SCRAM-SHA-512", "alice", ALICE_PW);
    admin.create_topic("orders", 1).expect_ok();
    admin.create_topic("secret", 1).expect_ok();
    admin.create_acls(ALICE_ACLS).expect_ok();
    admin
        .run(
            "scram-upsert",
            &[
                "--name",
                "bob",
                "--scram-mechanism",
                "SCRAM-SHA-256",
                "--scram-password",
                "bob-pw",
                "--iterations",
                "4096",
            ],
        )
        .expect_ok();
    alice.produce("orders", 5, "before").expect_ok();
    let acls_before = acl_set(&admin.run("describe-acls", &[]).expect_ok(), "acls");
    let users_before = admin.run("scram-describe", &[]).expect_ok().json["users"].clone();

    assert!(b.terminate().success(), "{}", b.log());
    b.restart();
    assert_eq!(b.listener("SASL_PLAINTEXT"), addr);

    let r = admin.run("describe-acls", &[]).expect_ok();
    assert_eq!(acl_set(&r, "acls"), acls_before, "{}", r.text);
    assert_eq!(acls_before, expected_alice_acls());
    let r = admin.run("scram-describe", &[]).expect_ok();
    assert_eq!(r.json["users"], users_before, "{}", r.text);
    assert_eq!(
        r.json["users"]["bob"],
        serde_json::json!([{"mechanism": "SCRAM-SHA-256", "iterations": 4096}]),
        "{}",
        r.text
    );

    alice.produce("orders", 5, "after").expect_ok();
    alice
        .produce("secret", 1, "x")
        .expect_error("TOPIC_AUTHORIZATION_FAILED");
    Client::sasl(&addr, None, "SCRAM-SHA-256", "bob", "bob-pw")
        .run("connect", &[])
        .expect_ok();
    Client::sasl(&addr, None, "SCRAM-SHA-512", "alice", "wrong")
        .run("connect", &["--wait", "6"])
        .expect_error("_AUTHENTICATION");
    let r = alice.consume_group("orders", "g1", 10).expect_ok();
    assert_eq!(r.strings("values").len(), 10, "{}", r.text);
    assert_no_panic(&b);
}

#[test]
fn users_command_manages_credentials_of_a_stopped_broker() {
    let tmp = broker_tempdir();
    let data = Broker::data_dir_in(tmp.path());
    let d = data.to_str().unwrap();
    users_add(&data, "gina", "SCRAM-SHA-512", "gina-pw");
    users_add(&data, "hank", "SCRAM-SHA-256", "hank-pw");
    let (code, out, err) = run_sluice(&["users", "list", "--data-dir", d]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("gina") && out.contains("hank"), "{out}");
    assert!(
        out.contains("SCRAM-SHA-512") && out.contains("SCRAM-SHA-256"),
        "{out}"
    );
    assert!(
        !out.contains("gina-pw") && !out.contains("hank-pw"),
        "{out}"
    );
    let (code, out, err) = run_sluice(&["users", "delete", "hank", "--data-dir", d]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_sluice(&["users", "list", "--data-dir", d]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("gina") && !out.contains("hank"), "{out}");
    // Too few iterations are refused (Kafka's minimum is 4096).
    let (code, out, err) = sluice_tests::run_sluice_stdin(
        &[
            "users",
            "add",
            "ivy",
            "--mechanism",
            "SCRAM-SHA-256",
            "--password-stdin",
            "--iterations",
            "100",
            "--data-dir",
            d,
        ],
        "ivy-pw\n",
    );
    assert_ne!(code, 0, "100 iterations accepted: {out}{err}");

    let mut b = Broker::start_listeners_in(tmp, &[("SASL_PLAINTEXT", 0)], &[]);
    // While the broker runs, it holds the data dir: the command refuses, clearly.
    let (code, out, err) = sluice_tests::run_sluice_stdin(
        &[
            "users",
            "add",
            "jack",
            "--mechanism",
            "SCRAM-SHA-512",
            "--password-stdin",
            "--data-dir",
            d,
        ],
        "jack-pw\n",
    );
    assert_ne!(
        code, 0,
        "users add ran on a live broker's data dir: {out}{err}"
    );
    assert!(!err.trim().is_empty(), "no explanation on stderr");
    let addr = b.listener("SASL_PLAINTEXT");
    Client::sasl(&addr, None, "SCRAM-SHA-512", "gina", "gina-pw")
        .run("connect", &[])
        .expect_ok();
    Client::sasl(&addr, None, "SCRAM-SHA-256", "hank", "hank-pw")
        .run("connect", &["--wait", "6"])
        .expect_error("_AUTHENTICATION");
    Client::sasl(&addr, None, "SCRAM-SHA-512", "jack", "jack-pw")
        .run("connect", &["--wait", "6"])
        .expect_error("_AUTHENTICATION");
    // Stopped, the dir is free again; the new user works after a restart.
    assert!(b.terminate().success());
    users_add(&data, "jack", "SCRAM-SHA-512", "jack-pw");
    b.restart();
    Client::sasl(&addr, None, "SCRAM-SHA-512", "jack", "jack-pw")
        .run("connect", &[])
        .expect_ok();
}

// ---------------------------------------------------------------------------------------------
// kcat (librdkafka's command-line client, Debian's build)
// ---------------------------------------------------------------------------------------------

fn kcat(args: &[String], input: Option<&str>) -> std::process::Output {
    let mut child = std::process::Command::new("kcat")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kcat is installed by scripts/setup");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(text) = input {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn kcat_produces_and_consumes_over_sasl_ssl_with_scram() {
    let certs = Certs::generate(&[]);
    let tmp = dir_with_users(&[("erin", "SCRAM-SHA-256", "erin-pw")]);
    let b = Broker::start_listeners_in(tmp, &[("SASL_SSL", 0)], &args(&[], &certs.server_args()));
    let addr = b.listener("SASL_SSL");
    let common = |user: &str, pw: &str| -> Vec<String> {
        [
            "-b",
            &addr,
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            "sasl.mechanisms=SCRAM-SHA-256",
            "-X",
            &format!("sasl.username={user}"),
            "-X",
            &format!("sasl.password={pw}"),
            "-X",
            &format!("ssl.ca.location={}", certs.ca()),
            "-t",
            "kcat-t",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let lines: Vec<String> = (0..50).map(|i| format!("line-{i}")).collect();
    let mut produce = common("erin", "erin-pw");
    produce.push("-P".into());
    let out = kcat(&produce, Some(&(lines.join("\n") + "\n")));
    assert!(
        out.status.success(),
        "kcat -P: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut consume = common("erin", "erin-pw");
    consume.extend(
        ["-C", "-e", "-o", "beginning"]
            .iter()
            .map(|s| s.to_string()),
    );
    let out = kcat(&consume, None);
    assert!(
        out.status.success(),
        "kcat -C: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(got, lines);
    // A wrong password: kcat reports the authentication failure and fails.
    let mut bad = common("erin", "wrong");
    bad.extend(["-L", "-m", "5"].iter().map(|s| s.to_string()));
    let out = kcat(&bad, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "kcat -L with a wrong password succeeded"
    );
    assert!(
        err.contains("Authentication failed") || err.contains("SASL authentication error"),
        "{err}"
    );
    assert_no_panic(&b);
}

#[test]
fn a_listener_that_authenticates_no_one_on_a_public_address_is_warned_about() {
    let tmp = broker_tempdir();
    let port = sluice_tests::free_port();
    let args: Vec<String> = [
        "--data-dir",
        &tmp.path().join("data").display().to_string(),
        "--listeners",
        &format!("PLAINTEXT://0.0.0.0:{port}"),
        "--advertised-listeners",
        &format!("PLAINTEXT://127.0.0.1:{port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = sluice_tests::Process::start("open-listener", &args, tmp.path());
    let line = p.wait_for_line("authenticates no one", Duration::from_secs(20));
    let log = p.log();
    p.terminate(Duration::from_secs(10));
    let line = line.unwrap_or_else(|| panic!("no warning logged:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("PLAINTEXT"), "{line}");
    // On loopback the same listener is not warned about.
    let quiet = Broker::start_listeners(&[("PLAINTEXT", 0)], &[]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !quiet.log().contains("authenticates no one"),
        "{}",
        quiet.log()
    );
}

#[test]
fn cluster_status_asks_a_sasl_ssl_listener_with_kafka_client_properties() {
    let certs = Certs::generate(&[]);
    let tmp = dir_with_users(&[("erin", "SCRAM-SHA-256", "erin-pw")]);
    let b = Broker::start_listeners_in(tmp, &[("SASL_SSL", 0)], &args(&[], &certs.server_args()));
    let addr = b.listener("SASL_SSL");
    let status = |props: &[String]| {
        let mut a: Vec<&str> = vec!["cluster", "status", "--bootstrap", &addr, "--json"];
        for p in props {
            a.extend(["-X", p.as_str()]);
        }
        run_sluice(&a)
    };
    let props = |password: &str| -> Vec<String> {
        vec![
            "security.protocol=SASL_SSL".into(),
            "sasl.mechanisms=SCRAM-SHA-256".into(),
            "sasl.username=erin".into(),
            format!("sasl.password={password}"),
            format!("ssl.ca.location={}", certs.ca()),
        ]
    };
    // The properties librdkafka (kcat) takes: TLS verified against the CA, SCRAM, and every
    // node reached the same way.
    let (code, out, err) = status(&props("erin-pw"));
    assert_eq!(code, 0, "{out}\n{err}");
    let doc: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["nodes"][0]["up"], true, "{doc}");
    // Kafka's tools' --command-config, with a JAAS line and a PEM trust store.
    let conf_dir = broker_tempdir();
    let file = conf_dir.path().join("client.properties");
    std::fs::write(
        &file,
        format!(
            "# as for kafka-topics.sh\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-256\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \
             username=\"erin\" password=\"erin-pw\";\nssl.truststore.type=PEM\n\
             ssl.truststore.location={}\n",
            certs.ca()
        ),
    )
    .unwrap();
    let (code, out, err) = run_sluice(&[
        "cluster",
        "status",
        "--bootstrap",
        &addr,
        "--command-config",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("1 node"), "{out}");
    // A wrong password: exit 2, and the broker's reason.
    let (code, _, err) = status(&props("wrong"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("authentication failed"), "{err}");
    // PLAINTEXT against the TLS port, and TLS without the CA: no answer, clear errors.
    let (code, _, err) = status(&[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = status(&props("erin-pw")[..4]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ssl.ca.location"), "{err}");
}
