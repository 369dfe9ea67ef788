//! The client side of SCRAM, for Sluice's own tools (`sluice cluster status` against a
//! SASL listener): client-first, client-final from the server-first, and the check of the
//! server's signature, which proves the server knew the credential too.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::scram::encode_saslname;
use crate::{ScramMechanism, crypto};

/// Why a SCRAM exchange failed on the client's side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server's message is not what RFC 5802 allows at this step.
    #[error("malformed server message: {0}")]
    Malformed(String),
    /// The server answered with an error (`e=`).
    #[error("the server refused: {0}")]
    Refused(String),
    /// The server's nonce does not extend ours (a replay, or not our exchange).
    #[error("the server nonce does not start with the client nonce")]
    Nonce,
    /// The server's signature is wrong: it does not hold this user's credential.
    #[error("the server's signature does not match: it does not know this credential")]
    ServerSignature,
    /// An iteration count outside Kafka's bounds: too few is a downgrade, too many would
    /// keep the client computing for hours.
    #[error("{0} iterations is outside the mechanism's bounds")]
    Iterations(u32),
    /// The server requires an extension this client does not know (`m=`).
    #[error("the server requires an unknown extension: {0}")]
    Extension(String),
}

/// One SCRAM exchange as a client (no channel binding, as Kafka speaks it).
pub struct ScramClient {
    mechanism: ScramMechanism,
    password: Vec<u8>,
    client_nonce: String,
    client_first_bare: String,
    /// The server signature client-final's proof implies, checked against server-final.
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// An exchange for `user` with `password`; `nonce` is the caller's random printable
    /// nonce (no commas).
    pub fn new(mechanism: ScramMechanism, user: &str, password: &str, nonce: &str) -> Self {
        ScramClient {
            mechanism,
            password: password.as_bytes().to_vec(),
            client_nonce: nonce.to_owned(),
            client_first_bare: format!("n={},r={nonce}", encode_saslname(user)),
            expected_server_signature: None,
        }
    }

    /// The client-first message.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message answering `server_first`.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ClientError> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| ClientError::Malformed("not UTF-8".into()))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ClientError::Refused(e.to_owned()));
        }
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in text.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => {
                    salt = Some(BASE64.decode(v).map_err(|e| {
                        ClientError::Malformed(format!("salt s= is not base64: {e}"))
                    })?)
                }
                Some(("i", v)) => {
                    iterations = Some(v.parse::<u32>().map_err(|e| {
                        ClientError::Malformed(format!("iteration count i={v}: {e}"))
                    })?)
                }
                // RFC 5802: a mandatory extension the client does not support fails.
                Some(("m", v)) => return Err(ClientError::Extension(v.to_owned())),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(ClientError::Malformed(format!(
                "server-first lacks r=, s= or i=: {text}"
            )));
        };
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ClientError::Nonce);
        }
        let m = self.mechanism;
        if !(m.min_iterations()..=m.max_iterations()).contains(&iterations) {
            return Err(ClientError::Iterations(iterations));
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message: [&[u8]; 5] = [
            self.client_first_bare.as_bytes(),
            b",",
            server_first,
            b",",
            without_proof.as_bytes(),
        ];
        let salted = crypto::salted_password(m, &self.password, &salt, iterations);
        let client_key = crypto::hmac(m, &salted, &[b"Client Key"]);
        let (stored_key, server_key) = crypto::derive_keys(m, &salted);
        let signature = crypto::hmac(m, &stored_key, &auth_message);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.expected_server_signature = Some(crypto::hmac(m, &server_key, &auth_message));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proved it holds the credential.
    pub fn server_final(&self, message: &[u8]) -> Result<(), ClientError> {
        let text =
            std::str::from_utf8(message).map_err(|_| ClientError::Malformed("not UTF-8".into()))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ClientError::Refused(e.to_owned()));
        }
        let Some(v) = text.strip_prefix("v=") else {
            return Err(ClientError::Malformed(format!("server-final: {text}")));
        };
        let got = BASE64
            .decode(v.split(',').next().unwrap_or_default())
            .map_err(|e| ClientError::Malformed(format!("v= is not base64: {e}")))?;
        match &self.expected_server_signature {
            Some(want) if bool::from(crypto::ct_eq(want, &got)) => Ok(()),
            _ => Err(ClientError::ServerSignature),
        }
    }
}

/// The PLAIN message for `user` and `password` (no authorization id).
pub fn plain_message(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authenticator, CredentialStore, Mechanism, ScramCredential, Step};

    #[test]
    fn rfc7677_vector() {
        let mut c = ScramClient::new(
            ScramMechanism::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
        );
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            String::from_utf8(c.client_final(server_first).unwrap()).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        // A server that does not hold the credential cannot sign.
        assert_eq!(
            c.server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(ClientError::ServerSignature)
        );
    }

    fn exchange(password: &str) -> Result<(), String> {
        let m = ScramMechanism::Sha512;
        let mut store = CredentialStore::new();
        let cred = ScramCredential::from_password(m, b"secret", b"salt", 4096).unwrap();
        store.upsert("ad,min", cred);
        let mut server = Authenticator::new(Mechanism::Scram(m), "servernonce-0123456789".into());
        let mut client = ScramClient::new(m, "ad,min", password, "clientnonce");
        let Ok(Step::Challenge(first)) = server.step(&client.client_first(), &store) else {
            panic!("no server-first")
        };
        let last = client.client_final(&first).map_err(|e| e.to_string())?;
        match server.step(&last, &store) {
            Ok(Step::Done {
                user,
                final_message,
            }) => {
                assert_eq!(user, "ad,min");
                client
                    .server_final(&final_message)
                    .map_err(|e| e.to_string())
            }
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn exchanges_with_the_server_side() {
        exchange("secret").unwrap();
        assert!(exchange("wrong").is_err());
    }

    #[test]
    fn a_server_first_that_is_not_ours_is_refused() {
        let mut c = ScramClient::new(ScramMechanism::Sha256, "u", "p", "abc");
        assert_eq!(
            c.client_final(b"r=xyz123,s=c2FsdA==,i=4096"),
            Err(ClientError::Nonce)
        );
        assert_eq!(
            c.client_final(b"r=abcdef,s=c2FsdA==,i=10"),
            Err(ClientError::Iterations(10))
        );
        assert_eq!(
            c.client_final(b"r=abcdef,s=c2FsdA==,i=4294967295"),
            Err(ClientError::Iterations(u32::MAX))
        );
        assert_eq!(
            c.client_final(b"m=ext,r=abcdef,s=c2FsdA==,i=4096"),
            Err(ClientError::Extension("ext".into()))
        );
        assert!(matches!(
            c.client_final(b"r=abcdef,i=4096"),
            Err(ClientError::Malformed(_))
        ));
        assert_eq!(
            c.client_final(b"e=unknown-user"),
            Err(ClientError::Refused("unknown-user".into()))
        );
    }
}
