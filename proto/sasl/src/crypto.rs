//! Thin wrappers over the `hmac`, `sha2` and `pbkdf2` crates, chosen by [`ScramMechanism`]
//! at run time. No primitive is implemented here.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::{Choice, ConstantTimeEq};

use crate::ScramMechanism;

/// `HMAC(key, parts[0] || parts[1] || ...)`: saves building the AuthMessage just to sign it.
pub(crate) fn hmac(mechanism: ScramMechanism, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match mechanism {
        ScramMechanism::Sha256 => mac::<Hmac<Sha256>>(key, parts),
        ScramMechanism::Sha512 => mac::<Hmac<Sha512>>(key, parts),
    }
}

fn mac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC hashes or pads keys of any length, so this constructor cannot fail.
    let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        m.update(part);
    }
    m.finalize().into_bytes().to_vec()
}

/// `H(data)`.
pub(crate) fn hash(mechanism: ScramMechanism, data: &[u8]) -> Vec<u8> {
    match mechanism {
        ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
        ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
    }
}

/// `Hi(password, salt, i)` of RFC 5802, which is PBKDF2 with HMAC-H and dkLen = hash length.
pub(crate) fn salted_password(
    mechanism: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let mut out = vec![0u8; mechanism.hash_len()];
    match mechanism {
        ScramMechanism::Sha256 => {
            pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
        }
        ScramMechanism::Sha512 => {
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
        }
    }
    out
}

/// `(StoredKey, ServerKey)` from a SaltedPassword (RFC 5802 section 3).
pub(crate) fn derive_keys(mechanism: ScramMechanism, salted_password: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let client_key = hmac(mechanism, salted_password, &[b"Client Key"]);
    let stored_key = hash(mechanism, &client_key);
    let server_key = hmac(mechanism, salted_password, &[b"Server Key"]);
    (stored_key, server_key)
}

/// Constant-time equality; different lengths are unequal (lengths are not secret here).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> Choice {
    a.ct_eq(b)
}
