//! `customers-ingress keys …`: edits the keys file. `mint` prints the new key on stdout (and
//! nothing else there, so `> file` captures exactly it) and a summary on stderr; the key is
//! not stored and cannot be shown again. A running ingress picks every change up by itself.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use crate::auth::api_key::Environment;
use crate::auth::keys_file::{ClientCertificateEntry, KeysFile, KeysFileError, Scope, UtcTime};
use crate::rate_limit::Policy;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Mint an API key and print it once on stdout.
    Mint {
        /// What the key is for (shown by `list`).
        #[arg(long)]
        name: Option<String>,
        /// A scope the key grants; repeat for several.
        #[arg(long = "scope", required = true, value_enum)]
        scopes: Vec<Scope>,
        /// Lifetime, e.g. `90d`; no expiry when unset.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        /// The label in the key's prefix (`ck_live_…` or `ck_test_…`).
        #[arg(long, value_enum, default_value_t = Environment::Live)]
        environment: Environment,
        #[command(flatten)]
        rate_limit: RateLimitArgs,
    },
    /// Grant a client certificate subject (DNS or URI name) scopes, for mTLS callers.
    GrantCertificate {
        /// The id that logs and metrics show.
        #[arg(long)]
        id: String,
        /// A DNS name or URI the client's certificate carries as subject alternative name.
        #[arg(long)]
        subject: String,
        #[arg(long = "scope", required = true, value_enum)]
        scopes: Vec<Scope>,
        #[command(flatten)]
        rate_limit: RateLimitArgs,
    },
    /// Revoke a key or client certificate by id; effective at the ingress's next reload.
    Revoke { id: String },
    /// List keys and client certificates (ids, names, scopes, dates; never secrets).
    List,
}

/// A credential's own rate limit, instead of the ingress's default.
#[derive(Debug, Clone, clap::Args)]
pub struct RateLimitArgs {
    /// Sustained requests per second (with --rate-limit-burst).
    #[arg(long, requires = "rate_limit_burst")]
    rate_limit_per_second: Option<f64>,
    /// Requests at once after a pause (with --rate-limit-per-second).
    #[arg(long, requires = "rate_limit_per_second")]
    rate_limit_burst: Option<u32>,
}

impl RateLimitArgs {
    fn policy(&self) -> Option<Policy> {
        Some(Policy {
            per_second: self.rate_limit_per_second?,
            burst: self.rate_limit_burst?,
        })
    }
}

/// Runs `command` on `keys_file`; the exit code for `main`.
pub fn run(command: KeysCommand, keys_file: Option<&Path>) -> ExitCode {
    let Some(path) = keys_file else {
        eprintln!("customers-ingress keys: pass --keys-file (or set CUSTOMERS_KEYS_FILE)");
        return ExitCode::from(2);
    };
    match execute(command, path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("customers-ingress keys: {e}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: KeysCommand, path: &Path) -> Result<(), KeysFileError> {
    match command {
        KeysCommand::Mint {
            name,
            scopes,
            expires_in,
            environment,
            rate_limit,
        } => {
            let expires_at = expires_in.map(|lifetime| SystemTime::now() + lifetime);
            let minted = KeysFile::edit(path, |file| {
                file.mint(environment, name, scopes, expires_at, rate_limit.policy())
            })?;
            let mut stdout = std::io::stdout().lock();
            let printed = writeln!(stdout, "{}", minted.key).and_then(|()| stdout.flush());
            if let Err(source) = printed {
                return Err(KeysFileError::Write {
                    path: "<stdout>".into(),
                    source,
                });
            }
            eprintln!(
                "minted key {} into {}; it is shown only this once",
                minted.id,
                path.display()
            );
        }
        KeysCommand::GrantCertificate {
            id,
            subject,
            scopes,
            rate_limit,
        } => {
            KeysFile::edit(path, |file| {
                file.client_certificates.push(ClientCertificateEntry {
                    id: id.clone(),
                    subject,
                    scopes,
                    revoked_at: None,
                    rate_limit: rate_limit.policy(),
                });
                Ok(())
            })?;
            eprintln!("granted client certificate {id} in {}", path.display());
        }
        KeysCommand::Revoke { id } => {
            KeysFile::edit(path, |file| file.revoke(&id))?;
            eprintln!("revoked {id} in {}", path.display());
        }
        KeysCommand::List => {
            let file = KeysFile::load(path)?;
            for key in &file.keys {
                println!(
                    "key {}\tname={}\tscopes={}\tcreated={}\texpires={}\trevoked={}",
                    key.id,
                    key.name.as_deref().unwrap_or("-"),
                    scope_list(&key.scopes),
                    when(Some(key.created_at), "-"),
                    when(key.expires_at, "never"),
                    when(key.revoked_at, "no"),
                );
            }
            for client in &file.client_certificates {
                println!(
                    "certificate {}\tsubject={}\tscopes={}\trevoked={}",
                    client.id,
                    client.subject,
                    scope_list(&client.scopes),
                    when(client.revoked_at, "no"),
                );
            }
        }
    }
    Ok(())
}

fn when(time: Option<UtcTime>, otherwise: &str) -> String {
    time.map_or_else(
        || otherwise.to_owned(),
        |time| humantime::format_rfc3339_seconds(time.0).to_string(),
    )
}

fn scope_list(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|scope| scope.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
