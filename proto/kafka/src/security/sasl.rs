//! SASL on one connection: which requests may come when, the handshake, the exchange, and
//! re-authentication (KIP-368).
//!
//! A SASL listener serves nothing but ApiVersions and SaslHandshake until the client has
//! authenticated; anything else closes the connection, as Kafka does. SaslHandshake v1 is
//! followed by SaslAuthenticate requests; v0 by raw length-prefixed SASL tokens (the connection
//! asks [`ConnectionAuth::expects_raw_token`]).

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_sasl::{AuthError, Authenticator, CredentialStore, Mechanism, Step};

/// SASL settings of a listener.
#[derive(Debug, Clone)]
pub struct SaslSettings {
    /// Mechanisms offered, in the order SaslHandshake lists them.
    pub mechanisms: Vec<Mechanism>,
    /// Kafka's `connections.max.reauth.ms`: a session lives this long before the client must
    /// re-authenticate (0: forever).
    pub reauth_ms: i64,
    /// A secret of this broker's run: the decoy salt answered for unknown SCRAM users derives
    /// from it, so it does not reveal that the user does not exist.
    pub unknown_user_secret: Vec<u8>,
}

#[derive(Debug)]
enum State {
    /// No SASL on this listener: the principal is fixed (TLS certificate or anonymous).
    Fixed,
    /// Waiting for SaslHandshake.
    Handshake,
    /// Handshake done; the exchange starts with the next token.
    Exchange {
        authenticator: Box<Authenticator>,
        /// SaslHandshake v0: tokens come raw, not in SaslAuthenticate requests.
        raw: bool,
    },
    /// Authenticated.
    Authenticated {
        /// Session end (KIP-368), if re-authentication is on.
        expires_at_ms: Option<i64>,
    },
}

/// What an authentication step decided.
#[derive(Debug)]
pub enum Outcome {
    /// Keep going: send the response, wait for the next token.
    Continue,
    /// Authenticated as this principal: send the response.
    Authenticated(String),
    /// Authentication failed: send the response after the failure delay, then close.
    Failed(String),
}

/// Why a request is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A request other than ApiVersions and SaslHandshake before authentication.
    #[error("{0:?} request before SASL authentication completed")]
    Unauthenticated(ApiKey),
    /// The session lifetime passed without re-authentication.
    #[error(
        "SASL session expired (connections.max.reauth.ms) and the client did not re-authenticate"
    )]
    Expired,
}

/// SASL state of one connection.
#[derive(Debug)]
pub struct ConnectionAuth {
    settings: Option<SaslSettings>,
    state: State,
    principal: String,
    /// The user of the first authentication: re-authentication may not change it.
    user: Option<String>,
    /// Whether the client authenticated with SaslAuthenticate v1+ (and so knows about
    /// session lifetimes).
    lifetime_aware: bool,
    /// The mechanism of the last exchange.
    mechanism: Option<&'static str>,
}

impl ConnectionAuth {
    /// A connection on a listener with SASL (`settings`) or without (the principal is
    /// `fixed_principal`: from the client certificate, or anonymous).
    pub fn new(settings: Option<SaslSettings>, fixed_principal: String) -> Self {
        let state = if settings.is_some() {
            State::Handshake
        } else {
            State::Fixed
        };
        ConnectionAuth {
            settings,
            state,
            principal: fixed_principal,
            user: None,
            lifetime_aware: false,
            mechanism: None,
        }
    }

    /// The connection's principal (meaningful once authenticated).
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Whether the connection authenticated (always true without SASL).
    pub fn authenticated(&self) -> bool {
        matches!(self.state, State::Fixed | State::Authenticated { .. })
    }

    /// The mechanism of the exchange in progress or last completed, for log lines.
    pub fn mechanism(&self) -> Option<&'static str> {
        match &self.state {
            State::Exchange { authenticator, .. } => Some(authenticator.mechanism().name()),
            _ => self.mechanism,
        }
    }

    /// After SaslHandshake v0 the next frame is a raw SASL token, not a request.
    pub fn expects_raw_token(&self) -> bool {
        matches!(self.state, State::Exchange { raw: true, .. })
    }

    /// Whether a request with `api_key` may be served now.
    pub fn admit(&self, api_key: ApiKey, now_ms: i64) -> Result<(), Refusal> {
        let sasl_api = matches!(
            api_key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        );
        match &self.state {
            State::Fixed => Ok(()),
            State::Authenticated {
                expires_at_ms: Some(at),
            } if now_ms >= *at && !sasl_api => Err(Refusal::Expired),
            State::Authenticated { .. } => Ok(()),
            _ if sasl_api => Ok(()),
            _ => Err(Refusal::Unauthenticated(api_key)),
        }
    }

    /// Answers SaslHandshake; `server_nonce` seeds a SCRAM exchange (random, printable, no
    /// commas). Returns the response and whether the connection must close after it.
    pub fn handshake(
        &mut self,
        req: &SaslHandshakeRequest,
        version: i16,
        server_nonce: String,
    ) -> (SaslHandshakeResponse, bool) {
        let Some(settings) = &self.settings else {
            return (
                SaslHandshakeResponse::default()
                    .with_error_code(ResponseError::IllegalSaslState.code()),
                false,
            );
        };
        let offered: Vec<StrBytes> = settings
            .mechanisms
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect();
        let response = SaslHandshakeResponse::default().with_mechanisms(offered);
        let reauth = matches!(self.state, State::Authenticated { .. });
        let expecting = matches!(self.state, State::Handshake) || (reauth && version >= 1);
        if !expecting {
            return (
                response.with_error_code(ResponseError::IllegalSaslState.code()),
                true,
            );
        }
        let wanted = req.mechanism.as_str();
        match Mechanism::from_name(wanted).filter(|m| settings.mechanisms.contains(m)) {
            Some(m) => {
                let authenticator = Authenticator::new(m, server_nonce)
                    .with_unknown_user_secret(&settings.unknown_user_secret);
                self.state = State::Exchange {
                    authenticator: Box::new(authenticator),
                    raw: version == 0,
                };
                (response, false)
            }
            None => (
                response.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
                true,
            ),
        }
    }

    /// Answers SaslAuthenticate.
    pub fn authenticate(
        &mut self,
        auth_bytes: &[u8],
        version: i16,
        store: &CredentialStore,
        now_ms: i64,
    ) -> (SaslAuthenticateResponse, Outcome) {
        if self.settings.is_none() {
            let r = SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::IllegalSaslState.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "SaslAuthenticate on a listener without SASL",
                )));
            return (r, Outcome::Failed("SaslAuthenticate without SASL".into()));
        }
        if !matches!(self.state, State::Exchange { raw: false, .. }) {
            let msg = "Unexpected SaslAuthenticate: no SaslHandshake v1 before it";
            let r = SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::IllegalSaslState.code())
                .with_error_message(Some(StrBytes::from_static_str(msg)));
            return (r, Outcome::Failed(msg.into()));
        }
        if version >= 1 {
            self.lifetime_aware = true;
        }
        match self.step(auth_bytes, store, now_ms) {
            Ok((bytes, outcome)) => {
                let mut r = SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes));
                if let (Outcome::Authenticated(_), Some(s)) = (&outcome, &self.settings)
                    && s.reauth_ms > 0
                    && version >= 1
                {
                    r.session_lifetime_ms = s.reauth_ms;
                }
                (r, outcome)
            }
            Err(message) => {
                let r = SaslAuthenticateResponse::default()
                    .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                    .with_error_message(Some(StrBytes::from_string(message.clone())));
                (r, Outcome::Failed(message))
            }
        }
    }

    /// Handles a raw SASL token (after SaslHandshake v0): the raw reply to send (possibly
    /// empty), or the failure (the connection closes without a reply, as Kafka does).
    pub fn raw_token(
        &mut self,
        token: &[u8],
        store: &CredentialStore,
        now_ms: i64,
    ) -> Result<(Vec<u8>, Outcome), String> {
        self.step(token, store, now_ms)
    }

    fn step(
        &mut self,
        token: &[u8],
        store: &CredentialStore,
        now_ms: i64,
    ) -> Result<(Vec<u8>, Outcome), String> {
        let State::Exchange { authenticator, .. } = &mut self.state else {
            return Err("no SASL exchange in progress".into());
        };
        self.mechanism = Some(authenticator.mechanism().name());
        let step = authenticator.step(token, store);
        match step {
            Ok(Step::Challenge(bytes)) => Ok((bytes, Outcome::Continue)),
            Ok(Step::Done {
                user,
                final_message,
            }) => {
                if let Some(first) = &self.user
                    && *first != user
                {
                    self.state = State::Handshake;
                    return Err(format!(
                        "Cannot change principals during re-authentication from User:{first} to User:{user}"
                    ));
                }
                let reauth_ms = self.settings.as_ref().map_or(0, |s| s.reauth_ms);
                let expires_at_ms = (reauth_ms > 0 && self.lifetime_aware)
                    .then(|| now_ms.saturating_add(reauth_ms));
                self.state = State::Authenticated { expires_at_ms };
                self.principal = format!("User:{user}");
                self.user = Some(user);
                Ok((
                    final_message,
                    Outcome::Authenticated(self.principal.clone()),
                ))
            }
            Err(e) => {
                self.state = State::Handshake;
                Err(auth_error_message(&e))
            }
        }
    }
}

/// The message a client sees: never whether the user exists.
fn auth_error_message(e: &AuthError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sasl::{ScramCredential, ScramMechanism};

    fn store() -> CredentialStore {
        let mut s = CredentialStore::default();
        s.upsert(
            "alice",
            ScramCredential::from_password(ScramMechanism::Sha512, b"secret", b"salt-salt", 4096)
                .unwrap(),
        );
        s
    }

    fn settings() -> SaslSettings {
        SaslSettings {
            mechanisms: vec![
                Mechanism::Plain,
                Mechanism::Scram(ScramMechanism::Sha256),
                Mechanism::Scram(ScramMechanism::Sha512),
            ],
            reauth_ms: 0,
            unknown_user_secret: b"test secret".to_vec(),
        }
    }

    fn handshake(a: &mut ConnectionAuth, mech: &str, v: i16) -> SaslHandshakeResponse {
        let req =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mech.into()));
        a.handshake(&req, v, "servernonce0123456789abcdef".into()).0
    }

    #[test]
    fn only_sasl_requests_before_authentication() {
        let a = ConnectionAuth::new(Some(settings()), crate::security::ANONYMOUS.into());
        assert!(a.admit(ApiKey::ApiVersions, 0).is_ok());
        assert!(a.admit(ApiKey::SaslHandshake, 0).is_ok());
        assert_eq!(
            a.admit(ApiKey::Metadata, 0),
            Err(Refusal::Unauthenticated(ApiKey::Metadata))
        );
        let plain = ConnectionAuth::new(None, crate::security::ANONYMOUS.into());
        assert!(plain.admit(ApiKey::Produce, 0).is_ok());
    }

    #[test]
    fn plain_success_and_failure() {
        let s = store();
        let mut a = ConnectionAuth::new(Some(settings()), crate::security::ANONYMOUS.into());
        assert_eq!(handshake(&mut a, "PLAIN", 1).error_code, 0);
        let (r, o) = a.authenticate(b"\0alice\0wrong", 2, &s, 0);
        assert_eq!(r.error_code, ResponseError::SaslAuthenticationFailed.code());
        assert!(matches!(o, Outcome::Failed(_)));
        assert!(a.admit(ApiKey::Metadata, 0).is_err());

        let mut a = ConnectionAuth::new(Some(settings()), crate::security::ANONYMOUS.into());
        handshake(&mut a, "PLAIN", 1);
        let (r, o) = a.authenticate(b"\0alice\0secret", 2, &s, 0);
        assert_eq!(r.error_code, 0);
        assert!(matches!(o, Outcome::Authenticated(ref p) if p == "User:alice"));
        assert_eq!(a.principal(), "User:alice");
        assert!(a.admit(ApiKey::Produce, 0).is_ok());
    }

    #[test]
    fn unknown_mechanism_is_refused_and_closes() {
        let mut a = ConnectionAuth::new(Some(settings()), crate::security::ANONYMOUS.into());
        let req =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("GSSAPI"));
        let (r, close) = a.handshake(&req, 1, "n".repeat(24));
        assert_eq!(r.error_code, ResponseError::UnsupportedSaslMechanism.code());
        assert_eq!(r.mechanisms.len(), 3);
        assert!(close);
    }

    #[test]
    fn session_expires_without_reauthentication_and_keeps_its_user() {
        let s = store();
        let mut st = settings();
        st.reauth_ms = 1000;
        let mut a = ConnectionAuth::new(Some(st), crate::security::ANONYMOUS.into());
        handshake(&mut a, "PLAIN", 1);
        let (r, _) = a.authenticate(b"\0alice\0secret", 1, &s, 10_000);
        assert_eq!(r.session_lifetime_ms, 1000);
        assert!(a.admit(ApiKey::Produce, 10_500).is_ok());
        assert_eq!(a.admit(ApiKey::Produce, 11_000), Err(Refusal::Expired));
        // Re-authenticate as the same user: the session is renewed.
        assert_eq!(handshake(&mut a, "PLAIN", 1).error_code, 0);
        let (r, _) = a.authenticate(b"\0alice\0secret", 1, &s, 11_000);
        assert_eq!(r.error_code, 0);
        assert!(a.admit(ApiKey::Produce, 11_500).is_ok());
    }

    #[test]
    fn raw_tokens_after_a_v0_handshake() {
        let s = store();
        let mut a = ConnectionAuth::new(Some(settings()), crate::security::ANONYMOUS.into());
        handshake(&mut a, "PLAIN", 0);
        assert!(a.expects_raw_token());
        let (reply, o) = a.raw_token(b"\0alice\0secret", &s, 0).unwrap();
        assert!(reply.is_empty());
        assert!(matches!(o, Outcome::Authenticated(_)));
        assert!(!a.expects_raw_token());
    }
}
