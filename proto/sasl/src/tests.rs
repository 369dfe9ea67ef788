//! End-to-end exchanges against a test-side client built from the same primitives.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::scram::encode_saslname;
use crate::*;

/// The client half of SCRAM, as a Kafka client computes it.
struct TestClient {
    mechanism: ScramMechanism,
    password: Vec<u8>,
    gs2_header: String,
    bare: String,
    cnonce: String,
}

/// What the client sends last and expects back.
struct Final {
    message: String,
    proof: Vec<u8>,
    server_final: Vec<u8>,
}

impl TestClient {
    fn new(mechanism: ScramMechanism, user: &str, password: &str, cnonce: &str) -> Self {
        Self::with_header(mechanism, user, password, cnonce, "n,,")
    }

    fn with_header(m: ScramMechanism, user: &str, password: &str, cnonce: &str, gs2: &str) -> Self {
        TestClient {
            mechanism: m,
            password: password.as_bytes().to_vec(),
            gs2_header: gs2.to_owned(),
            bare: format!("n={},r={cnonce}", encode_saslname(user)),
            cnonce: cnonce.to_owned(),
        }
    }

    fn first(&self) -> String {
        format!("{}{}", self.gs2_header, self.bare)
    }

    /// Parses server-first and computes client-final and the expected server-final.
    fn finish(&self, server_first: &[u8]) -> Final {
        self.finish_as(server_first, false)
    }

    /// `legacy`: librdkafka before 2.6.1, which repeats its client nonce in client-final.
    fn finish_as(&self, server_first: &[u8], legacy: bool) -> Final {
        let server_first = std::str::from_utf8(server_first).unwrap();
        let attrs: Vec<&str> = server_first.split(',').collect();
        assert_eq!(attrs.len(), 3, "{server_first}");
        let nonce = attrs[0].strip_prefix("r=").unwrap();
        assert!(nonce.starts_with(&self.cnonce));
        let salt = BASE64.decode(attrs[1].strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = attrs[2].strip_prefix("i=").unwrap().parse().unwrap();

        let m = self.mechanism;
        let salted = crypto::salted_password(m, &self.password, &salt, iterations);
        let client_key = crypto::hmac(m, &salted, &[b"Client Key"]);
        let stored_key = crypto::hash(m, &client_key);
        let server_key = crypto::hmac(m, &salted, &[b"Server Key"]);
        let echoed = if legacy {
            format!("{}{nonce}", self.cnonce)
        } else {
            nonce.to_owned()
        };
        let without_proof = format!("c={},r={echoed}", BASE64.encode(&self.gs2_header));
        let auth_message = format!("{},{server_first},{without_proof}", self.bare);
        let signature = crypto::hmac(m, &stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_signature = crypto::hmac(m, &server_key, &[auth_message.as_bytes()]);
        Final {
            message: format!("{without_proof},p={}", BASE64.encode(&proof)),
            proof,
            server_final: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
        }
    }
}

const SNONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

fn store_with(user: &str, m: ScramMechanism, password: &str) -> CredentialStore {
    let mut store = CredentialStore::new();
    let salt = format!("salt of {user}");
    let c = ScramCredential::from_password(m, password.as_bytes(), salt.as_bytes(), 4096).unwrap();
    store.upsert(user, c);
    store
}

fn scram(m: ScramMechanism) -> Authenticator {
    Authenticator::new(Mechanism::Scram(m), SNONCE.to_owned())
}

fn challenge(step: Step) -> Vec<u8> {
    match step {
        Step::Challenge(c) => c,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn assert_malformed(r: Result<Step, AuthError>) {
    assert!(matches!(r, Err(AuthError::Malformed { .. })), "{r:?}");
}

fn assert_invalid(r: Result<Step, AuthError>) {
    assert!(
        matches!(r, Err(AuthError::InvalidCredentials { .. })),
        "{r:?}"
    );
}

/// An authenticator that has answered `client`'s first message.
fn waiting(m: ScramMechanism, client: &TestClient, store: &CredentialStore) -> Authenticator {
    let mut auth = scram(m);
    challenge(auth.step(client.first().as_bytes(), store).unwrap());
    auth
}

/// Runs client-first and returns the authenticator waiting for client-final.
fn after_first(
    m: ScramMechanism,
    client: &TestClient,
    store: &CredentialStore,
) -> (Authenticator, Final) {
    let mut auth = scram(m);
    let server_first = challenge(auth.step(client.first().as_bytes(), store).unwrap());
    let fin = client.finish(&server_first);
    (auth, fin)
}

#[test]
fn rfc7677_scram_sha256_vector() {
    let m = ScramMechanism::Sha256;
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let mut store = CredentialStore::new();
    store.upsert(
        "user",
        ScramCredential::from_password(m, b"pencil", &salt, 4096).unwrap(),
    );
    let client = TestClient::new(m, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
    assert_eq!(client.first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");

    let mut auth = scram(m);
    let server_first = challenge(auth.step(client.first().as_bytes(), &store).unwrap());
    assert_eq!(
        server_first,
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let fin = client.finish(&server_first);
    assert_eq!(
        fin.message,
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
         p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );
    let done = auth.step(fin.message.as_bytes(), &store).unwrap();
    assert_eq!(
        done,
        Step::Done {
            user: "user".into(),
            final_message: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
        }
    );
    assert_eq!(
        fin.server_final,
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
    assert!(auth.is_finished());
    assert_malformed(auth.step(fin.message.as_bytes(), &store));
}

#[test]
fn sha512_round_trips() {
    let m = ScramMechanism::Sha512;
    for (user, gs2) in [
        ("alice", "n,,"),
        ("alice", "y,,"),
        ("alice", "n,a=alice,"),
        ("we,ird=name", "n,,"),
        ("we,ird=name", "n,a=we=2Cird=3Dname,"),
        ("\u{e9}l\u{e8}ve", "n,,"),
    ] {
        let store = store_with(user, m, "s3cr3t \u{1f511}");
        let client =
            TestClient::with_header(m, user, "s3cr3t \u{1f511}", "fyko+d2lbbFgONRv9qkxdawL", gs2);
        let (mut auth, fin) = after_first(m, &client, &store);
        assert_eq!(fin.proof.len(), 64);
        let done = auth.step(fin.message.as_bytes(), &store).unwrap();
        assert_eq!(
            done,
            Step::Done {
                user: user.into(),
                final_message: fin.server_final
            },
            "{user} {gs2}"
        );
    }
}

#[test]
fn client_extensions_are_allowed() {
    let m = ScramMechanism::Sha256;
    let store = store_with("alice", m, "pw");
    let client = TestClient::new(m, "alice", "pw", "abcdefgh");
    let mut auth = scram(m);
    let first = format!("{},tokenauth=false,x=1", client.first());
    let server_first = challenge(auth.step(first.as_bytes(), &store).unwrap());
    // The AuthMessage includes the extensions, so the test client must sign them too.
    let client = TestClient {
        bare: format!("{},tokenauth=false,x=1", client.bare),
        ..client
    };
    let fin = client.finish(&server_first);
    assert!(matches!(
        auth.step(fin.message.as_bytes(), &store),
        Ok(Step::Done { .. })
    ));
}

#[test]
fn scram_wrong_password_fails_at_proof() {
    for m in ScramMechanism::ALL {
        let store = store_with("alice", m, "right");
        let client = TestClient::new(m, "alice", "wrong", "cnonce123");
        let (mut auth, fin) = after_first(m, &client, &store);
        let err = auth.step(fin.message.as_bytes(), &store).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                m.name()
            )
        );
        assert_malformed(auth.step(fin.message.as_bytes(), &store));
    }
}

#[test]
fn scram_unknown_user_fails_only_at_proof() {
    let m = ScramMechanism::Sha256;
    let store = store_with("alice", m, "pw");
    let first_for = |user: &str, secret: &[u8]| {
        let client = TestClient::new(m, user, "pw", "cnonce123");
        let mut auth = scram(m).with_unknown_user_secret(secret);
        let server_first = challenge(auth.step(client.first().as_bytes(), &store).unwrap());
        (auth, client, server_first)
    };
    let (mut auth, client, server_first) = first_for("mallory", b"k1");
    let fin = client.finish(&server_first);
    assert_invalid(auth.step(fin.message.as_bytes(), &store));

    // Looks like a real user: same shape, stable per name, different between names and secrets.
    let text = String::from_utf8(server_first.clone()).unwrap();
    assert!(text.ends_with(",i=4096"), "{text}");
    let salt = BASE64
        .decode(text.split(',').nth(1).unwrap().strip_prefix("s=").unwrap())
        .unwrap();
    assert_eq!(salt.len(), 32);
    assert_eq!(first_for("mallory", b"k1").2, server_first);
    assert_ne!(first_for("mallory", b"k2").2, server_first);
    assert_ne!(first_for("trudy", b"k1").2, server_first);

    // A user with a credential for the other mechanism only is unknown for this one.
    let store512 = store_with("bob", ScramMechanism::Sha512, "pw");
    let client = TestClient::new(m, "bob", "pw", "cnonce123");
    let (mut auth, fin) = after_first(m, &client, &store512);
    assert_invalid(auth.step(fin.message.as_bytes(), &store512));

    // A proof signed with the decoy's all-zero stored key is still refused.
    let mut auth = scram(m);
    let server_first =
        String::from_utf8(challenge(auth.step(b"n,,n=ghost,r=abc", &store).unwrap())).unwrap();
    let nonce = server_first.split(',').next().unwrap();
    let without_proof = format!("c=biws,{nonce}");
    let auth_message = format!("n=ghost,r=abc,{server_first},{without_proof}");
    let signature = crypto::hmac(m, &[0; 32], &[auth_message.as_bytes()]);
    let forged = format!("{without_proof},p={}", BASE64.encode(signature));
    assert_invalid(auth.step(forged.as_bytes(), &store));
}

#[test]
fn scram_protocol_violations_are_malformed() {
    let m = ScramMechanism::Sha256;
    let store = store_with("alice", m, "pw");
    let client = TestClient::new(m, "alice", "pw", "cnonce123");

    // Client-final tampering.
    let (_, good) = after_first(m, &client, &store);
    let good_nonce = good.message.split(',').nth(1).unwrap().to_owned();
    let proof = good.message.rsplit(',').next().unwrap().to_owned();
    let tampered = [
        // Nonce changed (server part and client part).
        good.message
            .replace(SNONCE, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1"),
        good.message.replace("r=cnonce123", "r=cnonce124"),
        // Channel binding "y,," instead of "n,,", or not base64.
        good.message.replace("c=biws", "c=eSws"),
        good.message.replace("c=biws", "c=b*ws"),
        // Missing or unparsable proof, or proof of the wrong length.
        format!("c=biws,{good_nonce}"),
        format!("c=biws,{good_nonce},p="),
        format!("c=biws,{good_nonce},p=!!notbase64!!"),
        format!("c=biws,{good_nonce},p=AAAA"),
        // Attributes out of order, or repeated.
        format!("{good_nonce},c=biws,{proof}"),
        format!("c=biws,{good_nonce},{proof},{proof}"),
        String::new(),
    ];
    for bad in &tampered {
        let mut auth = waiting(m, &client, &store);
        assert_malformed(auth.step(bad.as_bytes(), &store));
        // The exchange is over after an error, even for the right message.
        assert_malformed(auth.step(good.message.as_bytes(), &store));
    }
    let mut auth = waiting(m, &client, &store);
    assert_malformed(auth.step(b"c=biws,r=\xff,p=AAAA", &store));

    // Client-first problems.
    for bad in [
        &b"p=tls-server-end-point,,n=alice,r=cnonce123"[..],
        b"n,a=bob,n=alice,r=cnonce123",
        b"n,,n=alice,r=cnonce123,tokenauth=true",
        b"n,,n=al\xffice,r=cnonce123",
        b"\xff",
        b"",
        b"n,,n=alice",
        b"n,,n=a=lice,r=cnonce123",
        b"n,,m=x,n=alice,r=cnonce123",
        b"c=biws,r=cnonce123,p=AAAA",
    ] {
        let mut auth = scram(m);
        assert_malformed(auth.step(bad, &store));
        assert!(auth.is_finished());
    }
    let mut auth = scram(m);
    assert_malformed(auth.step(&vec![b'a'; 1 << 16], &store));
}

#[test]
fn channel_binding_must_echo_the_exact_header() {
    let m = ScramMechanism::Sha256;
    let store = store_with("alice", m, "pw");
    // The client sent "y,," but claims "n,," in c=: refused even with a correct proof over it.
    let sent = TestClient::with_header(m, "alice", "pw", "cnonce123", "y,,");
    let mut auth = scram(m);
    let server_first = challenge(auth.step(sent.first().as_bytes(), &store).unwrap());
    let lying = TestClient {
        gs2_header: "n,,".into(),
        ..sent
    };
    let fin = lying.finish(&server_first);
    assert_malformed(auth.step(fin.message.as_bytes(), &store));
}

#[test]
fn plain_exchanges() {
    let store = store_with("alice", ScramMechanism::Sha512, "pw");
    let plain = || Authenticator::new(Mechanism::Plain, String::new());

    let mut auth = plain();
    assert_eq!(auth.mechanism(), Mechanism::Plain);
    assert_eq!(
        auth.step(b"\0alice\0pw", &store).unwrap(),
        Step::Done {
            user: "alice".into(),
            final_message: vec![]
        }
    );
    assert_malformed(auth.step(b"\0alice\0pw", &store));

    assert!(matches!(
        plain().step(b"alice\0alice\0pw", &store),
        Ok(Step::Done { .. })
    ));
    let err = plain().step(b"\0alice\0wrong", &store).unwrap_err();
    assert_eq!(err, AuthError::InvalidCredentials { mechanism: "PLAIN" });
    assert_invalid(plain().step(b"\0bob\0pw", &store));
    assert_malformed(plain().step(b"bob\0alice\0pw", &store));
    assert_malformed(plain().step(b"\0alice\0", &store));
    assert_malformed(plain().step(b"\0alice\0p\xff", &store));
    assert_malformed(plain().step(b"alice", &store));

    let mut auth = plain();
    assert_invalid(auth.step(b"\0alice\0wrong", &store));
    assert_malformed(auth.step(b"\0alice\0pw", &store));
}

#[test]
fn server_nonce_is_checked_for_scram_only() {
    let m = Mechanism::Scram(ScramMechanism::Sha256);
    assert_eq!(
        Authenticator::try_new(m, "short".into()).unwrap_err(),
        InvalidServerNonce
    );
    assert!(Authenticator::try_new(m, "has,a,comma,in,it,ok".into()).is_err());
    assert!(Authenticator::try_new(m, "has a space in it ok".into()).is_err());
    assert!(Authenticator::try_new(m, "x".repeat(MIN_SERVER_NONCE_LEN)).is_ok());
    assert!(Authenticator::try_new(Mechanism::Plain, String::new()).is_ok());
    let auth = Authenticator::new(m, SNONCE.into());
    assert_eq!(auth.mechanism(), m);
    assert!(!format!("{auth:?}").contains(SNONCE));
}

#[test]
#[should_panic(expected = "server nonce")]
fn new_panics_on_a_bad_server_nonce() {
    let _ = Authenticator::new(Mechanism::Scram(ScramMechanism::Sha512), "short".into());
}

#[test]
fn error_messages() {
    let e = AuthError::Malformed {
        mechanism: "SCRAM-SHA-512",
        reason: "nonce r= does not match the server nonce".into(),
    };
    assert_eq!(
        e.to_string(),
        "Authentication failed: invalid SCRAM-SHA-512 message: nonce r= does not match the server nonce"
    );
    assert_eq!(e.mechanism(), "SCRAM-SHA-512");
}

/// Deterministic xorshift64* so the property test needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Bytes drawn mostly from SCRAM/PLAIN syntax so the parsers get past their first checks.
    fn garbage(&mut self, max_len: usize) -> Vec<u8> {
        const SYNTAX: &[u8] = b"nypacrsivme=,,,\0=2C=3Dbiws+/tokenauth";
        let len = self.below(max_len + 1);
        (0..len)
            .map(|_| match self.below(4) {
                0 => self.next() as u8,
                _ => SYNTAX[self.below(SYNTAX.len())],
            })
            .collect()
    }

    /// `valid` with a few bytes flipped, inserted or removed.
    fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
        let mut out = valid.to_vec();
        for _ in 0..=self.below(3) {
            let at = self.below(out.len() + 1);
            match self.below(3) {
                0 if at < out.len() => out[at] ^= 1 << self.below(8),
                1 => out.insert(at, self.next() as u8),
                _ if at < out.len() => {
                    out.remove(at);
                }
                _ => out.push(b','),
            }
        }
        out
    }
}

#[test]
fn random_input_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let m = ScramMechanism::Sha256;
    let store = store_with("alice", m, "pw");
    let client = TestClient::new(m, "alice", "pw", "cnonce123");
    let (_, good) = after_first(m, &client, &store);
    let mut outcomes = [0usize; 3];
    let mut record = |r: Result<Step, AuthError>| {
        outcomes[match r {
            Ok(_) => 0,
            Err(AuthError::InvalidCredentials { .. }) => 1,
            Err(AuthError::Malformed { .. }) => 2,
        }] += 1;
    };

    for _ in 0..3000 {
        // Garbage as client-first, then as client-final, then once more.
        for mech in [
            Mechanism::Scram(ScramMechanism::Sha256),
            Mechanism::Scram(ScramMechanism::Sha512),
        ] {
            let mut auth = Authenticator::new(mech, SNONCE.into());
            for _ in 0..3 {
                let g = rng.garbage(96);
                record(auth.step(&g, &store));
            }
        }
        // Mutated valid messages at each SCRAM step.
        let mut auth = scram(m);
        record(auth.step(&rng.mutate(client.first().as_bytes()), &store));
        let mut auth = waiting(m, &client, &store);
        record(auth.step(&rng.mutate(good.message.as_bytes()), &store));
        // Random garbage after a valid first message.
        let mut auth = waiting(m, &client, &store);
        record(auth.step(&rng.garbage(160), &store));
    }
    // PLAIN runs PBKDF2 whenever a message parses, so fewer rounds.
    for _ in 0..300 {
        let mut auth = Authenticator::new(Mechanism::Plain, String::new());
        let g = if rng.below(2) == 0 {
            rng.garbage(64)
        } else {
            rng.mutate(b"alice\0alice\0pw")
        };
        record(auth.step(&g, &store));
    }
    // The generators reach past the parsers, not just the first check.
    assert!(outcomes[1] > 0, "{outcomes:?}");
    assert!(outcomes[2] > 0, "{outcomes:?}");
}

#[test]
fn librdkafka_before_2_6_1_repeating_its_client_nonce_is_accepted() {
    let m = ScramMechanism::Sha256;
    let store = store_with("erin", m, "pw");
    let client = TestClient::new(m, "erin", "pw", "f2<_opwH7O13_\\.p|D801{tepR^Qk[@m");
    let mut auth = scram(m);
    let server_first = challenge(auth.step(client.first().as_bytes(), &store).unwrap());
    let fin = client.finish_as(&server_first, true);
    match auth.step(fin.message.as_bytes(), &store).unwrap() {
        Step::Done {
            user,
            final_message,
        } => {
            assert_eq!(user, "erin");
            assert_eq!(final_message, fin.server_final);
        }
        other => panic!("{other:?}"),
    }
    // Only that exact form: the client nonce alone, or a wrong prefix, is still refused.
    let mut auth = scram(m);
    let server_first = challenge(auth.step(client.first().as_bytes(), &store).unwrap());
    let fin = client.finish(&server_first);
    let cnonce_only = fin.message.replacen(
        &format!("r={}{SNONCE}", client.cnonce),
        &format!("r={}", client.cnonce),
        1,
    );
    assert_malformed(auth.step(cnonce_only.as_bytes(), &store));
}
