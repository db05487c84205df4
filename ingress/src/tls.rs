//! TLS at the ingress (rustls, TLS 1.2 and 1.3, ALPN `http/1.1`): a certificate chain and
//! key from PEM files and, optionally, a CA whose client certificates are verified (mTLS).
//! Clients without a certificate are still served (they use API keys); a client that
//! presents one must present a valid one. The files are read again on reload; the new
//! configuration applies to new connections, open ones keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    pub(crate) certificate: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("invalid client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// The TLS configuration in force, replaced whole on reload.
pub(crate) struct Tls {
    files: TlsFiles,
    config: RwLock<Arc<rustls::ServerConfig>>,
}

impl Tls {
    pub(crate) fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = server_config(&files)?;
        Ok(Self {
            files,
            config: RwLock::new(config),
        })
    }

    /// The files, for the reload watcher.
    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.files.certificate.clone(), self.files.key.clone()];
        paths.extend(self.files.client_ca.clone());
        paths
    }

    /// Reads the files again; on error the configuration in force stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        *self.config.write().expect("TLS configuration") = config;
        Ok(())
    }

    /// An acceptor with the configuration in force.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.read().expect("TLS configuration").clone())
    }
}

fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Read {
        path: files.key.clone(),
        source,
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path)? {
        roots.add(certificate)?;
    }
    Ok(
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()?,
    )
}

/// The DNS and URI subject alternative names of a connection's verified client certificate.
pub(crate) fn client_certificate_names(connection: &rustls::ServerConnection) -> Vec<String> {
    let Some(certificate) = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
    else {
        return Vec::new();
    };
    match webpki::EndEntityCert::try_from(certificate) {
        Ok(parsed) => parsed
            .valid_dns_names()
            .chain(parsed.valid_uri_names())
            .map(str::to_owned)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the client certificate's names");
            Vec::new()
        }
    }
}
