//! TLS to Redis: the rustls client configuration behind `rediss://`,
//! `rediss-cluster://` and `rediss-sentinel://` URLs.
//!
//! fred would build one itself from the scheme (the system roots, no
//! client certificate); this one trusts the same system roots plus the CA
//! bundle of `redis_tls.ca`, and presents `redis_tls.cert` when set. fred
//! uses it for every connection the client opens: the server of a
//! `rediss://` URL, every node of a cluster, and on Sentinel both the
//! sentinels and the master they point to. The crypto provider is always
//! ring.

use crate::backend::{BackendError, BackendResult};
use crate::config::RedisTlsConfig;
use fred::rustls::pki_types::pem::PemObject;
use fred::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use fred::rustls::{ClientConfig, RootCertStore};
use fred::types::config::TlsConnector;
use std::path::Path;
use std::sync::Arc;

/// Whether fred connects to `url` over TLS.
pub(super) fn url_uses_tls(url: &str) -> bool {
    url.starts_with("rediss")
}

/// `url` with its `rediss` scheme turned into the matching `redis` one,
/// so that fred parses it without building a TLS configuration of its
/// own (which would load the system roots a second time and pick the
/// process-wide crypto provider).
pub(super) fn plain_scheme(url: &str) -> String {
    match url.strip_prefix("rediss") {
        Some(rest) => format!("redis{rest}"),
        None => url.to_owned(),
    }
}

/// The connector for `settings`: system roots plus `ca`, and the client
/// certificate when one is configured.
pub(super) fn connector(settings: &RedisTlsConfig) -> BackendResult<TlsConnector> {
    let provider = Arc::new(fred::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_setup(format!("protocol versions: {e}")))?
        .with_root_certificates(roots(settings.ca.as_deref())?);
    let config = match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, "redis_tls.cert")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_setup(format!("redis_tls.key: {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_setup(format!("redis_tls.cert / redis_tls.key: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(config))
}

/// The system roots (as fred loads them, through rustls-native-certs)
/// and the configured CA bundle. Without a CA, a failure to read the
/// system store fails the start, as it does in fred; with one, it is
/// logged and the CA alone is trusted.
fn roots(ca: Option<&Path>) -> BackendResult<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let system = fred::rustls_native_certs::load_native_certs();
    if let Some(error) = system.errors.first() {
        if ca.is_none() {
            return Err(tls_setup(format!("system certificate store: {error}")));
        }
        tracing::warn!(%error, "system certificate store unreadable; trusting redis_tls.ca only");
    }
    roots.add_parsable_certificates(system.certs);
    if let Some(ca) = ca {
        let certs = certificates(ca, "redis_tls.ca")?;
        let (added, ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(tls_setup(format!(
                "redis_tls.ca: {}: no certificate usable as a trust anchor",
                ca.display()
            )));
        }
        if ignored > 0 {
            tracing::warn!(ignored, path = %ca.display(), "redis_tls.ca: certificates skipped");
        }
    }
    Ok(roots)
}

/// Every certificate of a PEM file; none at all is an error.
fn certificates(path: &Path, field: &str) -> BackendResult<Vec<CertificateDer<'static>>> {
    let read = |e: &dyn std::fmt::Display| tls_setup(format!("{field}: {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(&e))?;
    if certs.is_empty() {
        return Err(read(&"no PEM certificate in the file"));
    }
    Ok(certs)
}

fn tls_setup(message: String) -> BackendError {
    BackendError::Internal(format!("redis TLS setup: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rediss_schemes_use_tls_and_lose_one_s() {
        for (url, tls, plain) in [
            ("rediss://u:p@h:1", true, "redis://u:p@h:1"),
            ("rediss-cluster://h:1", true, "redis-cluster://h:1"),
            (
                "rediss-sentinel://h:1/0?sentinelServiceName=m",
                true,
                "redis-sentinel://h:1/0?sentinelServiceName=m",
            ),
            ("redis://h:1", false, "redis://h:1"),
            ("redis-cluster://h:1", false, "redis-cluster://h:1"),
        ] {
            assert_eq!(url_uses_tls(url), tls, "{url}");
            assert_eq!(plain_scheme(url), plain, "{url}");
        }
    }

    #[test]
    fn unusable_pem_files_name_the_setting() {
        let dir = std::env::temp_dir().join(format!("sy-redis-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = |settings: RedisTlsConfig| match connector(&settings) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{settings:?} was accepted"),
        };
        let msg = err(RedisTlsConfig {
            ca: Some(empty.clone()),
            ..Default::default()
        });
        assert!(msg.contains("redis_tls.ca"), "{msg}");
        let msg = err(RedisTlsConfig {
            ca: Some(dir.join("missing.pem")),
            ..Default::default()
        });
        assert!(
            msg.contains("redis_tls.ca") && msg.contains("missing.pem"),
            "{msg}"
        );
        let msg = err(RedisTlsConfig {
            cert: Some(empty.clone()),
            key: Some(empty.clone()),
            ..Default::default()
        });
        assert!(msg.contains("redis_tls.cert"), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
