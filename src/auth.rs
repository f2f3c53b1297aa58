//! Secrets compared in constant time: the webhook secret in the URL and the read API's token.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// Shortest secret accepted: the URL secret is the webhook's only authentication.
pub const MIN_SECRET_LEN: usize = 16;

/// One or more accepted secrets (two during a rotation), kept only as SHA-256 digests.
///
/// Candidates are hashed before comparing, so the comparison takes the same time whatever the
/// candidate's length or content, and every accepted secret is checked on every call.
#[derive(Clone)]
pub struct SecretSet {
    digests: Vec<[u8; 32]>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("no secret given")]
    Empty,
    #[error("a secret must be at least {MIN_SECRET_LEN} characters long")]
    TooShort,
}

impl SecretSet {
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Result<Self, SecretError> {
        let mut digests = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.len() < MIN_SECRET_LEN {
                return Err(SecretError::TooShort);
            }
            digests.push(digest(secret));
        }
        if digests.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(SecretSet { digests })
    }

    pub fn matches(&self, candidate: &str) -> bool {
        let candidate = digest(candidate);
        self.digests
            .iter()
            .fold(Choice::from(0), |found, secret| {
                found | secret.ct_eq(&candidate)
            })
            .into()
    }
}

/// A tag over `message` keyed by one secret's digest: a console session proves that its holder
/// signed in with a valid token without keeping the token (it is never stored in the cookie).
type SessionMac = hmac::Hmac<Sha256>;

impl SecretSet {
    /// The tag of `message` under `candidate`, if `candidate` is one of the accepted secrets.
    pub fn session_tag(&self, candidate: &str, message: &[u8]) -> Option<[u8; 32]> {
        if !self.matches(candidate) {
            return None;
        }
        Some(tag(&digest(candidate), message))
    }

    /// Whether `tag` is `message`'s tag under one of the accepted secrets: a rotation that drops
    /// a token ends the sessions signed in with it.
    pub fn verify_session_tag(&self, message: &[u8], candidate_tag: &[u8]) -> bool {
        self.digests
            .iter()
            .fold(Choice::from(0), |found, secret| {
                found | tag(secret, message).as_slice().ct_eq(candidate_tag)
            })
            .into()
    }
}

fn tag(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = <SessionMac as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

impl std::fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretSet({} redacted)", self.digests.len())
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new random secret: 32 bytes from the OS, hex-encoded (64 characters).
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_listed_secrets() {
        let set = SecretSet::new(["0123456789abcdef-old", "0123456789abcdef-new"]).unwrap();
        assert!(set.matches("0123456789abcdef-old"));
        assert!(set.matches("0123456789abcdef-new"));
        assert!(!set.matches("0123456789abcdef"));
        assert!(!set.matches(""));
    }

    #[test]
    fn short_or_missing_secrets_are_refused() {
        assert_eq!(
            SecretSet::new(["short"]).unwrap_err(),
            SecretError::TooShort
        );
        assert_eq!(
            SecretSet::new(Vec::<String>::new()).unwrap_err(),
            SecretError::Empty
        );
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let (a, b) = (generate_secret().unwrap(), generate_secret().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn session_tags_are_made_only_for_accepted_secrets_and_checked_against_all() {
        let set = SecretSet::new(["0123456789abcdef-old", "0123456789abcdef-new"]).unwrap();
        assert_eq!(set.session_tag("0123456789abcdef-bad", b"m"), None);
        let old = set.session_tag("0123456789abcdef-old", b"m").unwrap();
        let new = set.session_tag("0123456789abcdef-new", b"m").unwrap();
        assert_ne!(old, new);
        assert!(set.verify_session_tag(b"m", &old) && set.verify_session_tag(b"m", &new));
        assert!(!set.verify_session_tag(b"other", &old));
        assert!(!set.verify_session_tag(b"m", &old[..31]));
        let rotated = SecretSet::new(["0123456789abcdef-new"]).unwrap();
        assert!(
            !rotated.verify_session_tag(b"m", &old),
            "a dropped token ends its sessions"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let set = SecretSet::new(["0123456789abcdef-secret"]).unwrap();
        assert!(!format!("{set:?}").contains("secret\""));
        assert!(!format!("{set:?}").contains("0123456789abcdef"));
    }
}
