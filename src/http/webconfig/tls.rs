//! `tls_server_config`: certificate, key, client CA, client auth type and versions, turned into
//! a rustls `ServerConfig` (ring provider). Rebuilt whole when any named file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::Deserialize;

use super::{RawFile, WebConfigError};
use crate::config::read;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
}

/// A TLS protocol version rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    None,
    Request,
    RequireAny,
    VerifyIfGiven,
    RequireAndVerify,
}

fn version(key: &str, v: &str) -> Result<Version, String> {
    match v {
        "TLS12" => Ok(Version::Tls12),
        "TLS13" => Ok(Version::Tls13),
        "TLS10" | "TLS11" => Err(format!(
            "tls_server_config.{key}: {v} is not supported (TLS 1.2 and 1.3 only)"
        )),
        _ => Err(format!(
            "tls_server_config.{key}: unknown TLS version {v:?} (expected TLS12 or TLS13)"
        )),
    }
}

fn client_auth(v: Option<&str>) -> Result<ClientAuth, String> {
    Ok(match v.unwrap_or("NoClientCert") {
        "" | "NoClientCert" => ClientAuth::None,
        "RequestClientCert" => ClientAuth::Request,
        "RequireAnyClientCert" => ClientAuth::RequireAny,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: invalid {other:?} (expected NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            ));
        }
    })
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// The certificate, key and CA files the web config names (for change detection). Empty when
/// the file does not parse.
pub(super) fn named_files(path: &Path) -> Vec<PathBuf> {
    let Ok(text) = read::read_text(path, read::MAX_WEB_FILE_BYTES) else {
        return Vec::new();
    };
    let Ok(raw) = serde_saphyr::from_str::<RawFile>(&text) else {
        return Vec::new();
    };
    let base = path.parent().unwrap_or(Path::new("."));
    raw.tls_server_config
        .map(|t| {
            [t.cert_file, t.key_file, t.client_ca_file]
                .into_iter()
                .flatten()
                .map(|p| resolve(base, &p))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the server config; every file is read now.
pub(super) fn build(
    raw: RawTls,
    base: &Path,
    file: &Path,
) -> Result<rustls::ServerConfig, WebConfigError> {
    let invalid = |message: String| WebConfigError::Invalid {
        path: file.to_owned(),
        message,
    };
    let (Some(cert), Some(key)) = (&raw.cert_file, &raw.key_file) else {
        return Err(invalid(
            "tls_server_config: both cert_file and key_file are required".into(),
        ));
    };
    let min =
        version("min_version", raw.min_version.as_deref().unwrap_or("TLS12")).map_err(invalid)?;
    let max =
        version("max_version", raw.max_version.as_deref().unwrap_or("TLS13")).map_err(invalid)?;
    if min > max {
        return Err(invalid(
            "tls_server_config: min_version is above max_version".into(),
        ));
    }
    let auth = client_auth(raw.client_auth_type.as_deref()).map_err(invalid)?;
    let verifying = matches!(
        auth,
        ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify
    );
    if verifying && raw.client_ca_file.is_none() {
        return Err(invalid(format!(
            "tls_server_config: client_auth_type {:?} needs client_ca_file",
            raw.client_auth_type.unwrap_or_default()
        )));
    }
    if raw.client_ca_file.is_some() && auth == ClientAuth::None {
        return Err(invalid(
            "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert".into(),
        ));
    }
    let cert_path = resolve(base, cert);
    let key_path = resolve(base, key);
    let certs = read_certs(&cert_path)?;
    let key_pem = read_bounded(&key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| WebConfigError::Invalid {
        path: key_path.clone(),
        message: format!("no usable private key: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (Version::Tls12, &rustls::version::TLS12),
        (Version::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (min..=max).contains(v))
    .map(|(_, p)| p)
    .collect();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| invalid(format!("tls_server_config: {e}")))?;
    let verifier: Arc<dyn ClientCertVerifier> = match auth {
        ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::Request | ClientAuth::RequireAny => Arc::new(AnyClientCert {
            mandatory: auth == ClientAuth::RequireAny,
            provider: provider.clone(),
        }),
        ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify => {
            let ca_path = resolve(base, raw.client_ca_file.as_deref().unwrap_or(Path::new("")));
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(&ca_path)? {
                roots.add(c).map_err(|e| WebConfigError::Invalid {
                    path: ca_path.clone(),
                    message: format!("unusable CA certificate: {e}"),
                })?;
            }
            let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let b = if auth == ClientAuth::VerifyIfGiven {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build().map_err(|e| WebConfigError::Invalid {
                path: ca_path.clone(),
                message: format!("client CA: {e}"),
            })?
        }
    };
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| WebConfigError::Invalid {
            path: cert_path,
            message: format!("certificate and key do not form a usable pair: {e}"),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A certificate, key or CA file, read with the web config's bound.
fn read_bounded(path: &Path) -> Result<Vec<u8>, WebConfigError> {
    read::read_bytes(path, read::MAX_WEB_FILE_BYTES).map_err(|e| WebConfigError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let bad = |message: String| WebConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let pem = read_bounded(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(certs)
}

/// `RequestClientCert` / `RequireAnyClientCert`: a client certificate is asked for but not
/// verified against any CA (what those toolkit modes mean). Its handshake signature is checked.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
