//! TLS to the database (rustls with the *ring* provider).
//!
//! What the URL's `sslmode` means here (as `tokio-postgres` parses it):
//!
//! * `disable`: no TLS.
//! * `prefer` (the default): TLS when the server offers it. As in libpq,
//!   the server's certificate is not checked (the session is safe from
//!   listening, not from an impostor) unless root certificates were given
//!   ([`PostgresOptions::with_root_certificates`]): then it is verified.
//! * `require`: TLS, and the certificate verified against the roots and
//!   the host name of the URL, as libpq's `verify-full`. The roots are those
//!   given, or else the system's.
//!
//! The system's roots (`rustls-native-certs`) rather than a compiled-in
//! list (`webpki-roots`): a database inside an organisation carries a
//! certificate from the organisation's own CA, which admins install in the
//! system store; the public Web PKI list rarely signs one, and would take a
//! rebuild to change.
//!
//! [`PostgresOptions::with_root_certificates`]: super::PostgresOptions::with_root_certificates

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;

/// The connector for `mode`, verifying against `roots_pem` (PEM
/// certificates) or the system's roots as the module documentation says.
pub(super) fn connector(
    mode: SslMode,
    roots_pem: Option<&[u8]>,
) -> Result<MakeRustlsConnect, StoreError> {
    // rustls 0.23.48 deprecates *ring* for lacking post-quantum key
    // exchange; aws-lc-rs, which has it, needs a C toolchain with cmake to
    // build. The classical key exchanges (X25519, P-256) remain.
    #[allow(deprecated, reason = "ring: no cmake or nasm to build")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("TLS set-up: {e}")))?;
    let config = match (mode, roots_pem) {
        (SslMode::Disable, _) | (SslMode::Prefer, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
        (_, roots) => builder
            .with_root_certificates(root_store(roots)?)
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The given PEM certificates, or the system's.
fn root_store(pem: Option<&[u8]>) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    if let Some(pem) = pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert
                .map_err(|e| StoreError::Backend(format!("TLS root certificates: bad PEM: {e}")))?;
            store.add(cert).map_err(|e| {
                StoreError::Backend(format!("TLS root certificates: bad certificate: {e}"))
            })?;
        }
        if store.is_empty() {
            return Err(StoreError::Backend(
                "TLS root certificates: no certificate in the PEM given".into(),
            ));
        }
    } else {
        let found = rustls_native_certs::load_native_certs();
        store.add_parsable_certificates(found.certs);
        if store.is_empty() {
            let why = found
                .errors
                .first()
                .map_or_else(|| "none installed".to_owned(), ToString::to_string);
            return Err(StoreError::Backend(format!(
                "TLS: sslmode=require needs root certificates, and the system has none \
                 ({why}); give the database's CA"
            )));
        }
    }
    Ok(store)
}

/// Encryption without authentication (libpq's `prefer`): any certificate
/// is taken, but the handshake's signatures are still checked against it.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
