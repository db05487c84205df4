//! API keys: `ck_{environment}_{id}_{secret}`, e.g. `ck_live_3q…_7m…`. The visible prefix says
//! what the string is (to people, log scrubbers and secret scanners); the 16-character id
//! names the key in the keys file, logs and metrics; the 52-character secret is 256 bits from
//! the operating system's CSPRNG. The ingress stores only the SHA-256 of the whole key: with
//! that much entropy a fast hash is safe, and checking a request costs under a microsecond.

use sha2::{Digest, Sha256};

const PREFIX: &str = "ck";
/// Characters of the id (10 random bytes in base32).
pub const ID_LEN: usize = 16;
/// Characters of the secret (32 random bytes in base32).
const SECRET_LEN: usize = 52;

/// Which kind of deployment a key is for; only a label (both are accepted everywhere), so
/// that a test key pasted into a production config stands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }
}

/// A key as presented by a client: well-formed, not yet checked against the keys file.
#[derive(Debug, PartialEq, Eq)]
pub struct PresentedKey<'a> {
    pub id: &'a str,
    /// SHA-256 of the whole key.
    pub digest: [u8; 32],
}

impl<'a> PresentedKey<'a> {
    /// `None` when `token` is not shaped like a key.
    pub fn parse(token: &'a str) -> Option<Self> {
        let mut parts = token.split('_');
        let (prefix, environment, id, secret) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let well_formed = prefix == PREFIX
            && parts.next().is_none()
            && matches!(environment, "live" | "test")
            && is_base32(id, ID_LEN)
            && is_base32(secret, SECRET_LEN);
        well_formed.then(|| Self {
            id,
            digest: digest(token),
        })
    }
}

/// A newly minted key: the secret string, shown once, and what the keys file keeps.
pub struct MintedKey {
    pub key: String,
    pub id: String,
    pub digest: [u8; 32],
}

impl MintedKey {
    pub fn generate(environment: Environment) -> Result<Self, getrandom::Error> {
        let id = random_base32::<10>()?;
        let secret = random_base32::<32>()?;
        let key = format!("{PREFIX}_{}_{id}_{secret}", environment.as_str());
        Ok(Self {
            digest: digest(&key),
            key,
            id,
        })
    }
}

/// A key id as minted: 16 lower-case base32 characters.
pub fn is_key_id(id: &str) -> bool {
    is_base32(id, ID_LEN)
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn random_base32<const N: usize>() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(data_encoding::BASE32_NOPAD
        .encode(&bytes)
        .to_ascii_lowercase())
}

fn is_base32(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_parse_to_their_id_and_digest() {
        for environment in [Environment::Live, Environment::Test] {
            let minted = MintedKey::generate(environment).unwrap();
            let presented = PresentedKey::parse(&minted.key).expect("a minted key parses");
            assert_eq!(presented.id, minted.id);
            assert_eq!(presented.digest, minted.digest);
            assert!(is_key_id(&minted.id));
        }
        let a = MintedKey::generate(Environment::Live).unwrap();
        let b = MintedKey::generate(Environment::Live).unwrap();
        assert_ne!(a.key, b.key);
    }

    #[test]
    fn malformed_keys() {
        let key = MintedKey::generate(Environment::Live).unwrap().key;
        let cases = [
            ("empty", String::new()),
            ("another prefix", key.replacen("ck_", "sk_", 1)),
            ("unknown environment", key.replacen("_live_", "_prod_", 1)),
            ("secret cut short", key[..key.len() - 1].to_owned()),
            ("an extra part", format!("{key}_x")),
            ("upper case", key.to_ascii_uppercase()),
            (
                "a character outside base32",
                format!("{}1", &key[..key.len() - 1]),
            ),
            ("whitespace", format!(" {key}")),
        ];
        for (description, text) in cases {
            assert_eq!(PresentedKey::parse(&text), None, "{description}");
        }
    }
}
