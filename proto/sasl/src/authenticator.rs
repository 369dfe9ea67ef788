//! One server-side SASL exchange: feeds client messages in, says what to send back.

use std::fmt;

use crate::scram::{self, AwaitingFinal};
use crate::{CredentialStore, MIN_SERVER_NONCE_LEN, Mechanism, plain};

/// The server side of an exchange, one per connection per authentication.
pub struct Authenticator {
    mechanism: Mechanism,
    server_nonce: String,
    unknown_user_secret: Vec<u8>,
    state: State,
}

enum State {
    /// Waiting for the first client message.
    Start,
    /// SCRAM server-first sent; waiting for client-final.
    ScramFinal(Box<AwaitingFinal>),
    /// Succeeded or failed: nothing more is accepted.
    Finished,
}

/// What to do after a client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this to the client (SaslAuthenticate auth_bytes) and wait for its next message.
    Challenge(Vec<u8>),
    /// Authenticated as `user` (the authentication identity, without "User:"); send
    /// `final_message` to the client (empty for PLAIN; server-final-message "v=..." for SCRAM).
    Done {
        /// Authenticated user name, decoded from its SASL form.
        user: String,
        /// Last bytes to send in the successful SaslAuthenticate response.
        final_message: Vec<u8>,
    },
}

/// Why authentication failed. Display is the `error_message` for the client
/// (SASL_AUTHENTICATION_FAILED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Wrong password, unknown user, bad proof: the message sent to the client must not say which.
    #[error(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
    )]
    InvalidCredentials {
        /// Mechanism name, e.g. "SCRAM-SHA-256".
        mechanism: &'static str,
    },
    /// The client message does not parse or breaks the protocol (bad nonce, channel
    /// binding requested, wrong order, authzid != authcid ...).
    #[error("Authentication failed: invalid {mechanism} message: {reason}")]
    Malformed {
        /// Mechanism name, e.g. "PLAIN".
        mechanism: &'static str,
        /// What was wrong; says nothing about the user or password.
        reason: String,
    },
}

impl AuthError {
    /// Mechanism name the error belongs to.
    pub fn mechanism(&self) -> &'static str {
        match self {
            AuthError::InvalidCredentials { mechanism }
            | AuthError::Malformed { mechanism, .. } => mechanism,
        }
    }
}

/// The caller's server nonce is unusable (see [`Authenticator::new`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "SCRAM server nonce must be at least {MIN_SERVER_NONCE_LEN} printable ASCII characters (0x21..0x7e) other than ','"
)]
pub struct InvalidServerNonce;

/// Mechanism-independent failure, given its mechanism name by [`Authenticator::step`].
#[derive(Debug)]
pub(crate) enum Failure {
    InvalidCredentials,
    Malformed(String),
}

impl Authenticator {
    /// `server_nonce`: at least 18 random printable bytes from the caller (ASCII
    /// 0x21..0x7e except ','); the Authenticator appends them to the client's nonce.
    /// PLAIN ignores it (an empty string is fine).
    ///
    /// # Panics
    /// If the mechanism is SCRAM and `server_nonce` breaks those rules: that is a bug in
    /// the caller's nonce generator, never client input. See [`Authenticator::try_new`].
    pub fn new(mechanism: Mechanism, server_nonce: String) -> Self {
        match Self::try_new(mechanism, server_nonce) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Authenticator::new`] without the panic.
    pub fn try_new(mechanism: Mechanism, server_nonce: String) -> Result<Self, InvalidServerNonce> {
        if matches!(mechanism, Mechanism::Scram(_))
            && !scram::is_valid_server_nonce(&server_nonce, MIN_SERVER_NONCE_LEN)
        {
            return Err(InvalidServerNonce);
        }
        Ok(Authenticator {
            mechanism,
            server_nonce,
            unknown_user_secret: Vec::new(),
            state: State::Start,
        })
    }

    /// Keys the decoy salt shown for unknown SCRAM users. Without a secret the decoy salt
    /// is a public function of the user name, so someone who knows this code can tell
    /// unknown users apart; the broker should pass the same random bytes (e.g. 32 from
    /// its RNG at start-up) to every Authenticator so a user's decoy salt stays stable.
    pub fn with_unknown_user_secret(mut self, secret: &[u8]) -> Self {
        self.unknown_user_secret = secret.to_vec();
        self
    }

    /// The mechanism this exchange runs.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// True once the exchange succeeded or failed; further steps are errors.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// Feeds one client message. `store` is read-only; the authenticator keeps what it
    /// needs from it between steps (the credential found at client-first, or a decoy one
    /// for an unknown user so the failure comes at the proof, as RFC 5802 suggests,
    /// without revealing whether the user exists).
    ///
    /// Any error ends the exchange, as does `Done`; later calls return `Malformed`.
    /// PLAIN costs one PBKDF2 (up to 16384 HMACs); SCRAM steps cost a few HMACs.
    pub fn step(
        &mut self,
        client_message: &[u8],
        store: &CredentialStore,
    ) -> Result<Step, AuthError> {
        let state = std::mem::replace(&mut self.state, State::Finished);
        let result =
            match (self.mechanism, state) {
                (Mechanism::Plain, State::Start) => {
                    plain::authenticate(client_message, store).map(|user| Step::Done {
                        user,
                        final_message: Vec::new(),
                    })
                }
                (Mechanism::Scram(m), State::Start) => scram::client_first(
                    m,
                    &self.server_nonce,
                    &self.unknown_user_secret,
                    client_message,
                    store,
                )
                .map(|(next, server_first)| {
                    self.state = State::ScramFinal(Box::new(next));
                    Step::Challenge(server_first)
                }),
                (_, State::ScramFinal(awaiting)) => scram::client_final(&awaiting, client_message)
                    .map(|(user, server_final)| Step::Done {
                        user,
                        final_message: server_final,
                    }),
                (_, State::Finished) => Err(Failure::Malformed(
                    "the authentication exchange is already finished".into(),
                )),
            };
        let mechanism = self.mechanism.name();
        result.map_err(|failure| match failure {
            Failure::InvalidCredentials => AuthError::InvalidCredentials { mechanism },
            Failure::Malformed(reason) => AuthError::Malformed { mechanism, reason },
        })
    }
}

impl fmt::Debug for Authenticator {
    // Hand-written so the decoy secret and stored keys never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Start => "start",
            State::ScramFinal(_) => "awaiting client-final",
            State::Finished => "finished",
        };
        f.debug_struct("Authenticator")
            .field("mechanism", &self.mechanism)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
