//! The server side of SCRAM (RFC 5802, RFC 7677) as Kafka speaks it: no channel binding,
//! `tokenauth` refused, user names in saslname form.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use subtle::Choice;

use crate::authenticator::Failure;
use crate::{CredentialStore, MAX_USER_NAME_LEN, ScramCredential, ScramMechanism, crypto};

/// Longest client message worth parsing; real ones are about 100 bytes.
const MAX_MESSAGE_LEN: usize = 4096;

/// Salt length of the decoy credential used for unknown users.
const DECOY_SALT_LEN: usize = 32;

/// RFC 5802 attribute letters; an extension may not reuse them, so an extra `p=` or
/// `r=` cannot hide among extensions.
const RESERVED_ATTRIBUTES: &str = "aceimnprsv";

/// What the server keeps between server-first and client-final.
pub(crate) struct AwaitingFinal {
    mechanism: ScramMechanism,
    user: String,
    /// The GS2 header exactly as sent; `c=` must decode to it.
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    /// Client nonce followed by server nonce.
    nonce: String,
    /// The client nonce alone.
    client_nonce: String,
    credential: ScramCredential,
    /// False when `credential` is a decoy: the proof then fails whatever it is.
    known_user: bool,
}

/// Handles client-first; returns the state for client-final and the server-first message.
pub(crate) fn client_first(
    mechanism: ScramMechanism,
    server_nonce: &str,
    unknown_user_secret: &[u8],
    message: &[u8],
    store: &CredentialStore,
) -> Result<(AwaitingFinal, Vec<u8>), Failure> {
    let text = to_text(message)?;
    let first = parse_client_first(text).map_err(Failure::Malformed)?;
    let (credential, known_user) = match store.get(&first.user, mechanism) {
        Some(c) => (c.clone(), true),
        None => (decoy(mechanism, &first.user, unknown_user_secret), false),
    };
    let nonce = format!("{}{server_nonce}", first.nonce);
    let server_first = format!(
        "r={nonce},s={},i={}",
        BASE64.encode(&credential.salt),
        credential.iterations
    );
    let state = AwaitingFinal {
        mechanism,
        user: first.user,
        gs2_header: first.gs2_header.to_owned(),
        client_first_bare: first.bare.to_owned(),
        server_first: server_first.clone(),
        nonce,
        client_nonce: first.nonce.to_owned(),
        credential,
        known_user,
    };
    Ok((state, server_first.into_bytes()))
}

/// Handles client-final; returns the user and the server-final message.
pub(crate) fn client_final(
    state: &AwaitingFinal,
    message: &[u8],
) -> Result<(String, Vec<u8>), Failure> {
    let text = to_text(message)?;
    let last = parse_client_final(text).map_err(Failure::Malformed)?;
    if last.channel_binding != state.gs2_header.as_bytes() {
        return Err(Failure::Malformed(
            "channel binding c= does not match the GS2 header of the first message".into(),
        ));
    }
    // librdkafka before 2.6.1 (Debian's kcat among its users) sends the client nonce twice:
    // client nonce + the full nonce. Kafka 3.8.1–3.9 accepted that; the server nonce is still
    // required, so replay protection holds. Any other nonce is refused.
    let legacy_librdkafka = last.nonce.len() == state.client_nonce.len() + state.nonce.len()
        && last.nonce.starts_with(&state.client_nonce)
        && last.nonce.ends_with(&state.nonce);
    if last.nonce != state.nonce && !legacy_librdkafka {
        return Err(Failure::Malformed(
            "nonce r= does not match the server nonce".into(),
        ));
    }
    let m = state.mechanism;
    if last.proof.len() != m.hash_len() {
        return Err(Failure::Malformed(format!(
            "proof p= is {} bytes, expected {}",
            last.proof.len(),
            m.hash_len()
        )));
    }
    let auth_message: [&[u8]; 5] = [
        state.client_first_bare.as_bytes(),
        b",",
        state.server_first.as_bytes(),
        b",",
        last.without_proof.as_bytes(),
    ];
    // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); valid if H(ClientKey) = StoredKey.
    let signature = crypto::hmac(m, &state.credential.stored_key, &auth_message);
    let client_key: Vec<u8> = last
        .proof
        .iter()
        .zip(&signature)
        .map(|(p, s)| p ^ s)
        .collect();
    let valid = crypto::ct_eq(&crypto::hash(m, &client_key), &state.credential.stored_key)
        & Choice::from(u8::from(state.known_user));
    if !bool::from(valid) {
        return Err(Failure::InvalidCredentials);
    }
    let server_signature = crypto::hmac(m, &state.credential.server_key, &auth_message);
    let server_final = format!("v={}", BASE64.encode(server_signature));
    Ok((state.user.clone(), server_final.into_bytes()))
}

/// A stand-in for a missing user (RFC 5802 section 5.1): the salt depends only on the
/// user name and the caller's secret, so repeated probes see a stable answer.
fn decoy(mechanism: ScramMechanism, user: &str, secret: &[u8]) -> ScramCredential {
    let mut salt = crypto::hmac(
        mechanism,
        secret,
        &[b"sluice-sasl decoy salt\0", user.as_bytes()],
    );
    salt.truncate(DECOY_SALT_LEN);
    ScramCredential {
        mechanism,
        salt,
        stored_key: vec![0; mechanism.hash_len()],
        server_key: vec![0; mechanism.hash_len()],
        iterations: mechanism.min_iterations(),
    }
}

fn to_text(message: &[u8]) -> Result<&str, Failure> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(Failure::Malformed(format!(
            "message of {} bytes is longer than the maximum {MAX_MESSAGE_LEN}",
            message.len()
        )));
    }
    std::str::from_utf8(message)
        .map_err(|_| Failure::Malformed("message is not valid UTF-8".into()))
}

/// The parts of client-first the server needs.
#[derive(Debug, PartialEq)]
struct ClientFirst<'a> {
    /// `n,,` / `y,,` / `n,a=user,` exactly as sent.
    gs2_header: &'a str,
    /// client-first-message-bare, part of the AuthMessage.
    bare: &'a str,
    /// Decoded user name.
    user: String,
    /// Client nonce.
    nonce: &'a str,
}

fn parse_client_first(text: &str) -> Result<ClientFirst<'_>, String> {
    let (flag, rest) = text.split_once(',').ok_or("missing GS2 header")?;
    match flag {
        // `y`: the client could bind but believes we cannot, which is true.
        "n" | "y" => {}
        _ if flag.starts_with("p=") => {
            return Err("channel binding (p=) is not supported".into());
        }
        _ => return Err("GS2 channel-binding flag must be n or y".into()),
    }
    let (authzid_field, bare) = rest
        .split_once(',')
        .ok_or("missing GS2 authorization id field")?;
    let gs2_header = &text[..text.len() - bare.len()];
    let authzid = if authzid_field.is_empty() {
        None
    } else {
        let name = authzid_field
            .strip_prefix("a=")
            .ok_or("GS2 authorization id must be a=")?;
        Some(decode_saslname(name)?)
    };

    let mut attrs = bare.split(',');
    let name_attr = attrs.next().unwrap_or_default();
    if name_attr.starts_with("m=") {
        return Err("mandatory extension m= is not supported".into());
    }
    let user = decode_saslname(
        name_attr
            .strip_prefix("n=")
            .ok_or("expected n= user name")?,
    )?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or("expected r= client nonce after the user name")?;
    if nonce.is_empty() || !nonce.bytes().all(is_nonce_char) {
        return Err("client nonce must be printable ASCII other than ','".into());
    }
    for attr in attrs {
        let (key, value) = parse_extension(attr)?;
        // Kafka's flag for delegation-token logins (Boolean.parseBoolean semantics).
        if key == "tokenauth" && value.eq_ignore_ascii_case("true") {
            return Err("delegation token authentication is not supported".into());
        }
    }
    if authzid.as_ref().is_some_and(|a| *a != user) {
        return Err(
            "client requested an authorization id that is different from the user name".into(),
        );
    }
    Ok(ClientFirst {
        gs2_header,
        bare,
        user,
        nonce,
    })
}

/// The parts of client-final the server needs.
#[derive(Debug, PartialEq)]
struct ClientFinal<'a> {
    /// Decoded `c=`.
    channel_binding: Vec<u8>,
    /// `r=`: client nonce + server nonce.
    nonce: &'a str,
    /// Decoded `p=`.
    proof: Vec<u8>,
    /// client-final-message-without-proof, part of the AuthMessage.
    without_proof: &'a str,
}

fn parse_client_final(text: &str) -> Result<ClientFinal<'_>, String> {
    let (without_proof, proof_attr) = text
        .rsplit_once(',')
        .ok_or("expected c=, r= and p= attributes")?;
    let proof = proof_attr
        .strip_prefix("p=")
        .ok_or("the last attribute must be the proof p=")?;
    let mut attrs = without_proof.split(',');
    let channel_binding = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or("expected c= channel binding first")?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or("expected r= nonce after c=")?;
    for attr in attrs {
        parse_extension(attr)?;
    }
    Ok(ClientFinal {
        channel_binding: BASE64
            .decode(channel_binding)
            .map_err(|_| "channel binding c= is not valid base64")?,
        nonce,
        proof: BASE64
            .decode(proof)
            .map_err(|_| "proof p= is not valid base64")?,
        without_proof,
    })
}

/// An extension attribute `key=value` (Kafka uses multi-letter keys such as `tokenauth`).
fn parse_extension(attr: &str) -> Result<(&str, &str), String> {
    let (key, value) = attr.split_once('=').ok_or("extension must be key=value")?;
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("extension name must be ASCII letters and digits".into());
    }
    if key.len() == 1 && RESERVED_ATTRIBUTES.contains(key) {
        return Err(format!("unexpected attribute {key}="));
    }
    if value.contains('\0') {
        return Err("extension value contains NUL".into());
    }
    Ok((key, value))
}

/// printable in RFC 5802: %x21-2B / %x2D-7E.
fn is_nonce_char(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

/// Checks a caller-supplied server nonce (printable, no ',').
pub(crate) fn is_valid_server_nonce(nonce: &str, min_len: usize) -> bool {
    nonce.len() >= min_len && nonce.bytes().all(is_nonce_char)
}

/// saslname to user name: `=2C` is ',', `=3D` is '=', any other '=' is an error.
fn decode_saslname(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("user name is empty".into());
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("user name has an '=' that is not =2C or =3D".into()),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.contains('\0') {
        return Err("user name contains NUL".into());
    }
    if out.len() > MAX_USER_NAME_LEN {
        return Err(format!(
            "user name is longer than {MAX_USER_NAME_LEN} bytes"
        ));
    }
    Ok(out)
}

/// User name to saslname (the client's side).
pub(crate) fn encode_saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saslname_decoding() {
        assert_eq!(decode_saslname("user").unwrap(), "user");
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert_eq!(decode_saslname("=3D=3D").unwrap(), "==");
        assert_eq!(decode_saslname("\u{e9}t\u{e9}").unwrap(), "\u{e9}t\u{e9}");
        for bad in [
            "",
            "a=",
            "a=2",
            "a=2c",
            "a=41",
            "=",
            "a\0b",
            "=\u{e9}\u{e9}",
        ] {
            assert!(decode_saslname(bad).is_err(), "{bad:?}");
        }
        assert!(decode_saslname(&"u".repeat(MAX_USER_NAME_LEN)).is_ok());
        assert!(decode_saslname(&"u".repeat(MAX_USER_NAME_LEN + 1)).is_err());
        for user in ["plain", "a,b", "x=y", "=,=,", "\u{e9}"] {
            assert_eq!(decode_saslname(&encode_saslname(user)).unwrap(), user);
        }
    }

    #[test]
    fn client_first_parsing() {
        let f = parse_client_first("n,,n=user,r=abc").unwrap();
        assert_eq!(f.gs2_header, "n,,");
        assert_eq!(f.bare, "n=user,r=abc");
        assert_eq!(f.user, "user");
        assert_eq!(f.nonce, "abc");

        let f = parse_client_first("y,a=a=2Cb,n=a=2Cb,r=x,tokenauth=false,ext=1").unwrap();
        assert_eq!(f.gs2_header, "y,a=a=2Cb,");
        assert_eq!(f.user, "a,b");

        for bad in [
            "",
            "n",
            "n,",
            "n,,",
            "x,,n=user,r=abc",
            "p=tls-unique,,n=user,r=abc",
            "n,b=user,n=user,r=abc",
            "n,a=other,n=user,r=abc",
            "n,,m=ext,n=user,r=abc",
            "n,,r=abc,n=user",
            "n,,n=user",
            "n,,n=user,r=",
            "n,,n=user,r=a b",
            "n,,n=,r=abc",
            "n,,n=user,r=abc,tokenauth=true",
            "n,,n=user,r=abc,tokenauth=TRUE",
            "n,,n=user,r=abc,noequals",
            "n,,n=user,r=abc,r=def",
            "n,,n=user,r=abc,",
        ] {
            assert!(parse_client_first(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_final_parsing() {
        let f = parse_client_final("c=biws,r=abc,p=AAEC").unwrap();
        assert_eq!(f.channel_binding, b"n,,");
        assert_eq!(f.nonce, "abc");
        assert_eq!(f.proof, vec![0, 1, 2]);
        assert_eq!(f.without_proof, "c=biws,r=abc");
        assert!(parse_client_final("c=biws,r=abc,ext=1,p=AAEC").is_ok());
        for bad in [
            "",
            "c=biws,r=abc",
            "r=abc,c=biws,p=AAEC",
            "c=biws,p=AAEC",
            "c=biws,r=abc,p=AAEC,x=1",
            "c=biws,r=abc,p=AAEC,p=AAEC",
            "c=biws,r=abc,p=!!!!",
            "c=bi*s,r=abc,p=AAEC",
            "c=biws,r=abc,p=AAE",
        ] {
            assert!(parse_client_final(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_nonce_check() {
        assert!(is_valid_server_nonce("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", 18));
        assert!(!is_valid_server_nonce("short", 18));
        assert!(!is_valid_server_nonce("aaaaaaaaaaaaaaaaaa,", 18));
        assert!(!is_valid_server_nonce("aaaaaaaaaaaaaaaaaa ", 18));
        assert!(!is_valid_server_nonce("aaaaaaaaaaaaaaaaaa\u{e9}", 18));
    }
}
