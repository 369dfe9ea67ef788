//! SASL/PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`, checked in one step.

use crate::authenticator::Failure;
use crate::{CredentialStore, MAX_PASSWORD_LEN, MAX_USER_NAME_LEN};

/// Longest message worth parsing: both names at their limit, the password and two NULs.
const MAX_MESSAGE_LEN: usize = 2 * MAX_USER_NAME_LEN + MAX_PASSWORD_LEN + 2;

/// Runs the whole exchange: returns the authenticated user.
pub(crate) fn authenticate(message: &[u8], store: &CredentialStore) -> Result<String, Failure> {
    let (user, password) = parse(message).map_err(Failure::Malformed)?;
    if store.verify_plain(user, password.as_bytes()) {
        Ok(user.to_owned())
    } else {
        Err(Failure::InvalidCredentials)
    }
}

/// Splits and checks the message; returns (authcid, passwd).
fn parse(message: &[u8]) -> Result<(&str, &str), String> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(format!(
            "message of {} bytes is longer than the maximum {MAX_MESSAGE_LEN}",
            message.len()
        ));
    }
    let text = std::str::from_utf8(message).map_err(|_| "message is not valid UTF-8".to_owned())?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected exactly two NUL separators: [authzid] NUL authcid NUL passwd".into());
    };
    if authcid.is_empty() {
        return Err("user name not specified".into());
    }
    if authcid.len() > MAX_USER_NAME_LEN {
        return Err(format!(
            "user name is longer than {MAX_USER_NAME_LEN} bytes"
        ));
    }
    if password.is_empty() {
        return Err("password not specified".into());
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(format!("password is longer than {MAX_PASSWORD_LEN} bytes"));
    }
    // Kafka has no proxy authorization: the authorization id may only repeat the user.
    if !authzid.is_empty() && authzid != authcid {
        return Err(
            "client requested an authorization id that is different from the user name".into(),
        );
    }
    Ok((authcid, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_authzid() {
        assert_eq!(parse(b"\0alice\0pw"), Ok(("alice", "pw")));
        assert_eq!(parse(b"alice\0alice\0pw"), Ok(("alice", "pw")));
        assert_eq!(
            parse("\0\u{e9}l\u{e8}ve\0m\u{f6}t".as_bytes()),
            Ok(("\u{e9}l\u{e8}ve", "m\u{f6}t"))
        );
    }

    #[test]
    fn refuses_bad_shapes() {
        for bad in [
            &b""[..],
            b"alice",
            b"\0alice",
            b"\0alice\0",
            b"\0\0pw",
            b"\0alice\0pw\0",
            b"\0al\0ice\0pw",
            b"bob\0alice\0pw",
            b"\0alice\0p\xffw",
            b"\xff\0alice\0pw",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn size_limits() {
        let user = "u".repeat(MAX_USER_NAME_LEN);
        let pw = "p".repeat(MAX_PASSWORD_LEN);
        let ok = format!("{user}\0{user}\0{pw}");
        assert!(parse(ok.as_bytes()).is_ok());
        assert!(parse(format!("\0{user}u\0pw").as_bytes()).is_err());
        assert!(parse(format!("\0u\0{pw}p").as_bytes()).is_err());
        assert!(parse(&vec![b'a'; 1 << 20]).is_err());
    }
}
