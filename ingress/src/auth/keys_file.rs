//! The keys file: the ingress's list of credentials, as JSON. It holds no secret, only each
//! API key's SHA-256, so it can be read by the ingress's user and shipped like any config.
//!
//! ```json
//! {
//!   "version": 1,
//!   "keys": [{
//!     "id": "3qjdk2s7xbrv5m4a", "name": "billing", "sha256": "…64 hex…",
//!     "scopes": ["customers:read", "customers:write"],
//!     "created_at": "2026-11-29T10:00:00Z", "expires_at": "2027-11-29T10:00:00Z",
//!     "rate_limit": {"per_second": 100, "burst": 200}
//!   }],
//!   "client_certificates": [{
//!     "id": "reporting", "subject": "reporting.internal", "scopes": ["customers:read"]
//!   }]
//! }
//! ```
//!
//! `expires_at`, `revoked_at` and `rate_limit` are optional (no expiry, active, the
//! ingress's default limit). A client certificate entry grants its scopes to a client whose
//! verified certificate names `subject` as a DNS or URI subject alternative name. Unknown
//! fields are refused, so a typo cannot silently widen or drop a grant. The `keys`
//! subcommand edits the file under a lock and replaces it atomically, so a reloading ingress
//! never reads half of it.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::auth::api_key::{self, Environment, MintedKey};
use crate::rate_limit::Policy;

/// The format this ingress reads and writes.
const VERSION: u32 = 1;

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
pub enum Scope {
    /// Reads: `GET /api/v1/customers` (lists and the change feed), `GET
    /// /api/v1/customers/search` and `GET /api/v1/customers/{id}`.
    #[serde(rename = "customers:read")]
    #[value(name = "customers:read")]
    Read,
    /// Changes: `POST /api/v1/customers`, and `PATCH` and `DELETE /api/v1/customers/{id}`.
    #[serde(rename = "customers:write")]
    #[value(name = "customers:write")]
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "customers:read",
            Self::Write => "customers:write",
        }
    }
}

/// A point in time, written as RFC 3339 in UTC (`2027-01-01T00:00:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UtcTime(pub SystemTime);

impl Serialize for UtcTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_seconds(self.0))
    }
}

impl<'de> Deserialize<'de> for UtcTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339(&text)
            .map(Self)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not RFC 3339 UTC: {e}")))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    pub version: u32,
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    #[serde(default)]
    pub client_certificates: Vec<ClientCertificateEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SHA-256 of the whole key, lower-case hex.
    pub sha256: String,
    pub scopes: Vec<Scope>,
    pub created_at: UtcTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UtcTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<UtcTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Policy>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificateEntry {
    pub id: String,
    /// A DNS name or URI (e.g. a SPIFFE id) the client's certificate must carry.
    pub subject: String,
    pub scopes: Vec<Scope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<UtcTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Policy>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    #[error("cannot read the keys file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the keys file {} is not valid: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write the keys file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no key or client certificate with id {0:?}")]
    UnknownId(String),
    #[error("cannot draw random bytes for a key: {0}")]
    Random(getrandom::Error),
}

impl KeysFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, KeysFileError> {
        let text = std::fs::read(path).map_err(|source| KeysFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| KeysFileError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let file: Self = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        file.check().map_err(invalid)?;
        Ok(file)
    }

    /// Every rule the ingress relies on, or the first broken one.
    fn check(&self) -> Result<(), String> {
        if self.version != VERSION {
            return Err(format!(
                "version {} is not supported (expected {VERSION})",
                self.version
            ));
        }
        let mut ids = HashSet::new();
        for key in &self.keys {
            if !api_key::is_key_id(&key.id) {
                return Err(format!("key id {:?} is not 16 base32 characters", key.id));
            }
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("key {}: sha256 must be 64 hex digits", key.id));
            }
            check_grant(&key.id, &key.scopes, key.rate_limit.as_ref())?;
            if !ids.insert(key.id.as_str()) {
                return Err(format!("id {:?} appears twice", key.id));
            }
        }
        let mut subjects = HashSet::new();
        for client in &self.client_certificates {
            let valid_id = !client.id.is_empty()
                && client.id.len() <= 64
                && client
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid_id {
                return Err(format!(
                    "client certificate id {:?} must be 1-64 letters, digits, '-', '_' or '.'",
                    client.id
                ));
            }
            if client.subject.is_empty() {
                return Err(format!("client certificate {}: empty subject", client.id));
            }
            check_grant(&client.id, &client.scopes, client.rate_limit.as_ref())?;
            if !ids.insert(client.id.as_str()) {
                return Err(format!("id {:?} appears twice", client.id));
            }
            if !subjects.insert(client.subject.as_str()) {
                return Err(format!("subject {:?} appears twice", client.subject));
            }
        }
        Ok(())
    }

    /// Reads `path` under an exclusive lock (an empty file when it does not exist yet), lets
    /// `edit` change it, and replaces the file atomically and durably.
    pub fn edit<T>(
        path: &Path,
        edit: impl FnOnce(&mut Self) -> Result<T, KeysFileError>,
    ) -> Result<T, KeysFileError> {
        let write_error = |source| KeysFileError::Write {
            path: path.to_owned(),
            source,
        };
        let lock_path = with_suffix(path, ".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(write_error)?;
        lock.lock().map_err(write_error)?;
        let mut file = match Self::load(path) {
            Err(KeysFileError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Self {
                    version: VERSION,
                    ..Self::default()
                }
            }
            other => other?,
        };
        let result = edit(&mut file)?;
        file.check().map_err(|reason| KeysFileError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        file.save(path).map_err(write_error)?;
        Ok(result)
    }

    /// Writes a temporary file beside `path` (with the mode and owner of the file it replaces;
    /// owner-only for a new one), syncs it, renames it over `path` and syncs the directory.
    fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
        let temporary = with_suffix(path, &format!(".tmp-{}", std::process::id()));
        let existing = match std::fs::metadata(path) {
            Ok(metadata) => Some(metadata),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mode = existing
            .as_ref()
            .map_or(0o600, |m| m.permissions().mode() & 0o7777);
        let mut out = File::options()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&temporary)?;
        if let Some(existing) = &existing {
            // The umask may have narrowed the mode, and the owner is whoever runs this.
            out.set_permissions(std::fs::Permissions::from_mode(mode))?;
            std::os::unix::fs::fchown(&out, Some(existing.uid()), Some(existing.gid()))?;
        }
        let mut text = serde_json::to_vec_pretty(self).expect("the keys file serialises");
        text.push(b'\n');
        out.write_all(&text)?;
        out.sync_all()?;
        std::fs::rename(&temporary, path)?;
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(directory)?.sync_all()
    }

    /// Adds a new key and returns it; its secret exists nowhere else.
    pub fn mint(
        &mut self,
        environment: Environment,
        name: Option<String>,
        scopes: Vec<Scope>,
        expires_at: Option<SystemTime>,
        rate_limit: Option<Policy>,
    ) -> Result<MintedKey, KeysFileError> {
        let minted = MintedKey::generate(environment).map_err(KeysFileError::Random)?;
        self.keys.push(KeyEntry {
            id: minted.id.clone(),
            name,
            sha256: data_encoding::HEXLOWER.encode(&minted.digest),
            scopes,
            created_at: UtcTime(SystemTime::now()),
            expires_at: expires_at.map(UtcTime),
            revoked_at: None,
            rate_limit,
        });
        Ok(minted)
    }

    /// Marks the key or client certificate `id` revoked (kept, so that the id is not reused
    /// and the file tells when).
    pub fn revoke(&mut self, id: &str) -> Result<(), KeysFileError> {
        let now = Some(UtcTime(SystemTime::now()));
        if let Some(key) = self.keys.iter_mut().find(|key| key.id == id) {
            key.revoked_at = key.revoked_at.or(now);
            return Ok(());
        }
        if let Some(client) = self.client_certificates.iter_mut().find(|c| c.id == id) {
            client.revoked_at = client.revoked_at.or(now);
            return Ok(());
        }
        Err(KeysFileError::UnknownId(id.to_owned()))
    }
}

fn check_grant(id: &str, scopes: &[Scope], rate_limit: Option<&Policy>) -> Result<(), String> {
    if scopes.is_empty() {
        return Err(format!("{id}: no scopes"));
    }
    if let Some(policy) = rate_limit {
        policy
            .check()
            .map_err(|reason| format!("{id}: rate_limit: {reason}"))?;
    }
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("keys.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn edits_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let minted = KeysFile::edit(&path, |file| {
            file.mint(
                Environment::Test,
                Some("billing".into()),
                vec![Scope::Read, Scope::Write],
                None,
                Some(Policy {
                    per_second: 5.0,
                    burst: 10,
                }),
            )
        })
        .unwrap();
        let file = KeysFile::load(&path).unwrap();
        assert_eq!(file.keys.len(), 1);
        assert_eq!(file.keys[0].id, minted.id);
        assert!(
            !std::fs::read_to_string(&path)
                .unwrap()
                .contains(&minted.key)
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        KeysFile::edit(&path, |file| file.revoke(&minted.id)).unwrap();
        assert!(KeysFile::load(&path).unwrap().keys[0].revoked_at.is_some());
        let unknown = KeysFile::edit(&path, |file| file.revoke("nope"));
        assert!(matches!(unknown, Err(KeysFileError::UnknownId(_))));
    }

    #[test]
    fn invalid_files_are_refused_with_the_reason() {
        let key = |id: &str, extra: &str| {
            format!(
                r#"{{"id":"{id}","sha256":"{}","scopes":["customers:read"],"created_at":"2026-01-01T00:00:00Z"{extra}}}"#,
                "a".repeat(64)
            )
        };
        let id = "abcdefghijklmnop";
        let cases = [
            ("not JSON", "{".to_owned(), "EOF"),
            ("no version", r#"{"keys":[]}"#.to_owned(), "version"),
            ("another version", r#"{"version":2}"#.to_owned(), "version 2"),
            (
                "an unknown field",
                r#"{"version":1,"key":[]}"#.to_owned(),
                "unknown field",
            ),
            (
                "a misspelt key field",
                format!(r#"{{"version":1,"keys":[{}]}}"#, key(id, r#","scope":[]"#)),
                "unknown field",
            ),
            (
                "a short id",
                format!(r#"{{"version":1,"keys":[{}]}}"#, key("abc", "")),
                "16 base32",
            ),
            (
                "a duplicate id",
                format!(r#"{{"version":1,"keys":[{},{}]}}"#, key(id, ""), key(id, "")),
                "twice",
            ),
            (
                "an unknown scope",
                format!(r#"{{"version":1,"keys":[{}]}}"#, key(id, "")).replace(
                    "customers:read",
                    "customers:admin",
                ),
                "unknown variant",
            ),
            (
                "no scopes",
                format!(r#"{{"version":1,"keys":[{}]}}"#, key(id, "")).replace(
                    r#"["customers:read"]"#,
                    "[]",
                ),
                "no scopes",
            ),
            (
                "a zero rate",
                format!(
                    r#"{{"version":1,"keys":[{}]}}"#,
                    key(id, r#","rate_limit":{"per_second":0,"burst":1}"#)
                ),
                "positive",
            ),
            (
                "a local time",
                format!(r#"{{"version":1,"keys":[{}]}}"#, key(id, "")).replace('Z', "+01:00"),
                "RFC 3339",
            ),
            (
                "a client certificate without subject",
                r#"{"version":1,"client_certificates":[{"id":"a","subject":"","scopes":["customers:read"]}]}"#.to_owned(),
                "empty subject",
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (description, text, expected) in cases {
            let path = write(dir.path(), &text);
            match KeysFile::load(&path) {
                Err(KeysFileError::Invalid { reason, .. }) => {
                    assert!(reason.contains(expected), "{description}: {reason}");
                }
                other => panic!("{description}: {other:?}"),
            }
        }
        let valid = write(
            dir.path(),
            &format!(r#"{{"version":1,"keys":[{}]}}"#, key(id, "")),
        );
        assert!(KeysFile::load(&valid).is_ok());
    }
}
