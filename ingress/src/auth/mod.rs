//! Who is calling and what they may do. A request to the customer endpoints carries an API
//! key (`Authorization: Bearer ck_…`, see [`api_key`]) or arrives on a TLS connection whose
//! verified client certificate the keys file grants ([`keys_file`]); either names a
//! [`Credential`] with scopes and a rate-limit bucket. The keys in force are an immutable
//! [`KeySet`] swapped whole on reload, so a request sees either the old set or the new one,
//! never a mix, and no request waits for a reload.
//!
//! With `--auth none` every caller is anonymous with every scope, rate-limited by address.

pub mod api_key;
pub mod keys_file;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use customers_shared::ApiError;
use http::HeaderValue;
use subtle::ConstantTimeEq;

use crate::rate_limit::{AddressBuckets, Bucket, Policy};
use api_key::PresentedKey;
use keys_file::{KeysFile, KeysFileError, Scope};

/// An authenticated caller.
#[derive(Debug)]
pub(crate) struct Credential {
    /// The key id, client certificate id, or `anonymous`: what logs and metrics name.
    pub(crate) id: Arc<str>,
    scopes: Vec<Scope>,
    pub(crate) bucket: Arc<Bucket>,
}

impl Credential {
    pub(crate) fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Why a request is not authenticated; each is a `401` (and a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// No `Authorization` header and no granted client certificate.
    Missing,
    /// An `Authorization` header of another scheme than `Bearer`.
    NotBearer,
    /// A bearer token that is not shaped like an API key.
    Malformed,
    /// An unknown key id or a wrong secret; which one is not said.
    Invalid,
    Revoked,
    Expired,
    /// A verified client certificate that the keys file does not grant.
    CertificateNotGranted,
}

impl AuthFailure {
    /// Every reason, for metrics that start at zero.
    pub(crate) const ALL: [Self; 7] = [
        Self::Missing,
        Self::NotBearer,
        Self::Malformed,
        Self::Invalid,
        Self::Revoked,
        Self::Expired,
        Self::CertificateNotGranted,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::NotBearer => "not_bearer",
            Self::Malformed => "malformed",
            Self::Invalid => "invalid",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::CertificateNotGranted => "certificate_not_granted",
        }
    }
}

impl From<AuthFailure> for ApiError {
    fn from(failure: AuthFailure) -> Self {
        let reason = match failure {
            AuthFailure::Missing => "send an API key: Authorization: Bearer <key>",
            AuthFailure::NotBearer => "the Authorization header must use the Bearer scheme",
            AuthFailure::Malformed => "the bearer token is not an API key",
            AuthFailure::Invalid => "the API key is not valid",
            AuthFailure::Revoked => "the API key has been revoked",
            AuthFailure::Expired => "the API key has expired",
            AuthFailure::CertificateNotGranted => {
                "the client certificate is not granted access; send an API key"
            }
        };
        ApiError::Unauthorized {
            reason,
            credential_presented: failure != AuthFailure::Missing,
        }
    }
}

/// What a request presents.
pub(crate) struct Caller<'a> {
    pub(crate) authorization: Option<&'a HeaderValue>,
    /// DNS and URI names of the connection's verified client certificate (empty without).
    pub(crate) certificate_names: &'a [String],
    pub(crate) address: IpAddr,
}

/// The credentials in force, compiled from a keys file.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, KeyRecord>,
    /// By certificate subject; revoked entries are left out.
    certificates: HashMap<String, Arc<Credential>>,
}

struct KeyRecord {
    digest: [u8; 32],
    expires_at: Option<SystemTime>,
    revoked: bool,
    credential: Arc<Credential>,
}

impl KeySet {
    /// Compiles `file`; a credential whose id and limit are unchanged keeps its bucket from
    /// `previous`, so a reload neither resets nor refills anyone's rate limit.
    fn compile(file: &KeysFile, default_policy: Policy, previous: &KeySet) -> Self {
        let previous_buckets: HashMap<&str, &Arc<Bucket>> = previous
            .keys
            .values()
            .map(|record| &record.credential)
            .chain(previous.certificates.values())
            .map(|credential| (&*credential.id, &credential.bucket))
            .collect();
        let credential = |id: &str, scopes: &[Scope], policy: Option<Policy>| {
            let policy = policy.unwrap_or(default_policy);
            let bucket = previous_buckets
                .get(id)
                .filter(|bucket| *bucket.policy() == policy)
                .map_or_else(|| Arc::new(Bucket::new(policy)), |bucket| (*bucket).clone());
            Arc::new(Credential {
                id: id.into(),
                scopes: scopes.to_vec(),
                bucket,
            })
        };
        let keys = file
            .keys
            .iter()
            .map(|key| {
                let mut digest = [0u8; 32];
                data_encoding::HEXLOWER_PERMISSIVE
                    .decode_mut(key.sha256.as_bytes(), &mut digest)
                    .expect("checked when the file was loaded");
                let record = KeyRecord {
                    digest,
                    expires_at: key.expires_at.map(|t| t.0),
                    revoked: key.revoked_at.is_some(),
                    credential: credential(&key.id, &key.scopes, key.rate_limit),
                };
                (key.id.clone(), record)
            })
            .collect();
        let certificates = file
            .client_certificates
            .iter()
            .filter(|client| client.revoked_at.is_none())
            .map(|client| {
                (
                    client.subject.clone(),
                    credential(&client.id, &client.scopes, client.rate_limit),
                )
            })
            .collect();
        Self { keys, certificates }
    }

    /// The id of every credential, revoked and expired ones included.
    pub(crate) fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys
            .values()
            .map(|record| &*record.credential.id)
            .chain(self.certificates.values().map(|credential| &*credential.id))
    }

    /// Keys neither revoked nor expired, and granted client certificates.
    pub(crate) fn active(&self) -> usize {
        let now = SystemTime::now();
        let keys = self
            .keys
            .values()
            .filter(|key| !key.revoked && key.expires_at.is_none_or(|t| t > now))
            .count();
        keys + self.certificates.len()
    }
}

/// Compared against when a key id is unknown, so that an unknown id costs the same as a
/// wrong secret.
const NO_DIGEST: [u8; 32] = [0; 32];

/// Authenticates requests against the keys in force (or, with `--auth none`, lets everyone
/// in, rate-limited by address).
pub(crate) struct Authenticator {
    mode: Mode,
    default_policy: Policy,
}

enum Mode {
    Keys {
        path: PathBuf,
        keys: RwLock<Arc<KeySet>>,
    },
    Open {
        addresses: AddressBuckets,
        anonymous: Arc<str>,
    },
}

impl Authenticator {
    /// Loads the keys file at `path`; starting without valid keys is an error.
    pub(crate) fn with_keys_file(
        path: &Path,
        default_policy: Policy,
    ) -> Result<Self, KeysFileError> {
        let file = KeysFile::load(path)?;
        let keys = KeySet::compile(&file, default_policy, &KeySet::default());
        Ok(Self {
            mode: Mode::Keys {
                path: path.to_owned(),
                keys: RwLock::new(Arc::new(keys)),
            },
            default_policy,
        })
    }

    /// No authentication: every caller may do everything.
    pub(crate) fn open(default_policy: Policy) -> Self {
        Self {
            mode: Mode::Open {
                addresses: AddressBuckets::new(default_policy),
                anonymous: "anonymous".into(),
            },
            default_policy,
        }
    }

    /// The keys file, unless authentication is off.
    pub(crate) fn keys_file(&self) -> Option<&Path> {
        match &self.mode {
            Mode::Keys { path, .. } => Some(path),
            Mode::Open { .. } => None,
        }
    }

    /// The keys in force (empty with `--auth none`).
    pub(crate) fn key_set(&self) -> Arc<KeySet> {
        match &self.mode {
            Mode::Keys { keys, .. } => keys.read().expect("key set").clone(),
            Mode::Open { .. } => Arc::default(),
        }
    }

    /// Reads the keys file again and puts it in force; on error the keys in force stay.
    /// Returns the keys now in force.
    pub(crate) fn reload(&self) -> Result<Arc<KeySet>, KeysFileError> {
        let Mode::Keys { path, keys } = &self.mode else {
            return Ok(Arc::default());
        };
        let file = KeysFile::load(path)?;
        let compiled = Arc::new(KeySet::compile(&file, self.default_policy, &self.key_set()));
        *keys.write().expect("key set") = compiled.clone();
        Ok(compiled)
    }

    /// What the metrics name the credentials by: every key and certificate id in force, or
    /// `anonymous` without authentication.
    pub(crate) fn credential_ids(&self) -> Vec<Arc<str>> {
        match &self.mode {
            Mode::Keys { .. } => self.key_set().ids().map(Arc::from).collect(),
            Mode::Open { anonymous, .. } => vec![anonymous.clone()],
        }
    }

    pub(crate) fn authenticate(&self, caller: &Caller<'_>) -> Result<Arc<Credential>, AuthFailure> {
        let keys = match &self.mode {
            Mode::Keys { keys, .. } => keys.read().expect("key set").clone(),
            Mode::Open {
                addresses,
                anonymous,
            } => {
                return Ok(Arc::new(Credential {
                    id: anonymous.clone(),
                    scopes: vec![Scope::Read, Scope::Write],
                    bucket: addresses.bucket(caller.address),
                }));
            }
        };
        let Some(authorization) = caller.authorization else {
            if caller.certificate_names.is_empty() {
                return Err(AuthFailure::Missing);
            }
            return caller
                .certificate_names
                .iter()
                .find_map(|name| keys.certificates.get(name))
                .cloned()
                .ok_or(AuthFailure::CertificateNotGranted);
        };
        let token = authorization
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or(AuthFailure::NotBearer)?;
        let presented = PresentedKey::parse(token).ok_or(AuthFailure::Malformed)?;
        let record = keys.keys.get(presented.id);
        let expected = record.map_or(&NO_DIGEST, |record| &record.digest);
        let matches = bool::from(expected.ct_eq(&presented.digest));
        let record = record.filter(|_| matches).ok_or(AuthFailure::Invalid)?;
        if record.revoked {
            return Err(AuthFailure::Revoked);
        }
        if record
            .expires_at
            .is_some_and(|expires_at| expires_at <= SystemTime::now())
        {
            return Err(AuthFailure::Expired);
        }
        Ok(record.credential.clone())
    }
}

/// The token of a `Bearer` credential (the scheme is case-insensitive, RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
