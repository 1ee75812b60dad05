//! Why the first connection to Redis failed, said plainly.
//!
//! Refused credentials and certificates the client does not trust are
//! configuration mistakes and are named as such; anything else is Redis
//! being unreachable. The URL's passwords are cut out of every message,
//! in case a server or library ever echoes one.
//!
//! On Sentinel fred tries each sentinel and, when none works, reports
//! only "Failed to connect to all sentinel nodes", dropping why. A probe
//! then connects to the first sentinel alone, with the same TLS and the
//! sentinel credentials, to find out.

use crate::backend::BackendError;
use fred::error::{Error, ErrorKind};
use fred::prelude::{Builder, ClientLike, Config as FredConfig};
use fred::types::config::ServerConfig;
use std::time::Duration;

/// The passwords of the URL (the server's, and on Sentinel the
/// sentinels'), which no message may repeat.
pub(super) fn url_secrets(config: &FredConfig) -> Vec<String> {
    let mut secrets: Vec<String> = config.password.iter().cloned().collect();
    if let ServerConfig::Sentinel {
        password: Some(p), ..
    } = &config.server
    {
        secrets.push(p.clone());
    }
    secrets.retain(|s| !s.is_empty());
    secrets
}

/// The start error for `e`, the failure of the first connection of a
/// client on `config`.
pub(super) async fn connect_error(
    config: &FredConfig,
    e: Error,
    timeout: Duration,
) -> BackendError {
    let mut message = match sentinel_failure(config, &e, timeout).await {
        Some((sentinel, reason)) => describe(Some(&sentinel), &reason),
        None => describe(None, &e),
    };
    for secret in url_secrets(config) {
        message = message.replace(secret.as_str(), "<redacted>");
    }
    BackendError::Unavailable(message)
}

/// The message for `e`, an error of the server or (`sentinel`: its
/// address) of a sentinel.
fn describe(sentinel: Option<&str>, e: &Error) -> String {
    let details = plain_details(e.details());
    let lower = details.to_ascii_lowercase();
    let place = sentinel.map_or(String::new(), |s| format!(" at sentinel {s}"));
    if *e.kind() == ErrorKind::Auth || lower.contains("wrongpass") || lower.contains("noauth") {
        let check = if sentinel.is_some() {
            "sentinelUsername and sentinelPassword"
        } else {
            "the user and password"
        };
        format!("redis authentication failed{place} (check {check} in redis_url): {details}")
    } else if lower.contains("invalidcertificate") || lower.contains("certificate verif") {
        format!(
            "TLS to redis failed{place}: the server's certificate was refused (is its CA in \
             redis_tls.ca, and its host name or address in the certificate?): {details}"
        )
    } else if lower.contains("certificaterequired") {
        format!(
            "TLS to redis failed{place}: the server requires a client certificate \
             (redis_tls.cert and redis_tls.key): {details}"
        )
    } else if *e.kind() == ErrorKind::Tls || lower.contains("alertreceived") {
        format!(
            "TLS to redis failed{place}: the server ended the handshake (does it require a \
             client certificate, or another one than redis_tls.cert?): {details}"
        )
    } else {
        format!("cannot connect to redis{place}: {e}")
    }
}

/// fred renders I/O errors with `Debug`
/// (`Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }`):
/// keep the inner error.
fn plain_details(details: &str) -> &str {
    details
        .split_once("error: ")
        .and_then(|(_, inner)| inner.strip_suffix(" }"))
        .unwrap_or(details)
}

/// When fred failed to reach any sentinel: the first sentinel and the
/// error of a connection to it alone.
async fn sentinel_failure(
    config: &FredConfig,
    e: &Error,
    timeout: Duration,
) -> Option<(String, Error)> {
    let ServerConfig::Sentinel {
        hosts,
        username,
        password,
        ..
    } = &config.server
    else {
        return None;
    };
    if *e.kind() != ErrorKind::Sentinel {
        return None;
    }
    let sentinel = hosts.first()?.clone();
    let probe = FredConfig {
        server: ServerConfig::Centralized {
            server: sentinel.clone(),
        },
        username: username.clone(),
        password: password.clone(),
        tls: config.tls.clone(),
        ..FredConfig::default()
    };
    let client = Builder::from_config(probe)
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
        })
        .build()
        .ok()?;
    let reason = match tokio::time::timeout(timeout, client.init()).await {
        Ok(Err(reason)) => reason,
        Ok(Ok(_)) => {
            let _ = client.quit().await;
            return None;
        }
        Err(_) => Error::new(ErrorKind::Timeout, "no answer"),
    };
    Some((format!("{}:{}", sentinel.host, sentinel.port), reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_failure_are_named() {
        let auth = Error::new(ErrorKind::Auth, "WRONGPASS invalid username-password pair");
        let text = describe(None, &auth);
        assert!(
            text.starts_with("redis authentication failed (check the user"),
            "{text}"
        );
        let text = describe(Some("h:1"), &auth);
        assert!(
            text.contains("at sentinel h:1 (check sentinelUsername"),
            "{text}"
        );
        let cert = Error::new(
            ErrorKind::IO,
            "Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }",
        );
        let text = describe(Some("h:1"), &cert);
        assert!(
            text.starts_with("TLS to redis failed at sentinel h:1"),
            "{text}"
        );
        assert!(
            text.ends_with(": InvalidCertificate(UnknownIssuer)"),
            "{text}"
        );
        let mtls = Error::new(
            ErrorKind::IO,
            "Custom { kind: InvalidData, error: AlertReceived(CertificateRequired) }",
        );
        let text = describe(None, &mtls);
        assert!(text.contains("requires a client certificate"), "{text}");
        let alert = Error::new(
            ErrorKind::IO,
            "Custom { kind: InvalidData, error: AlertReceived(BadCertificate) }",
        );
        let text = describe(None, &alert);
        assert!(text.contains("ended the handshake"), "{text}");
        let io = Error::new(ErrorKind::IO, "Connection refused (os error 111)");
        assert!(describe(None, &io).starts_with("cannot connect to redis: "));
    }

    #[tokio::test]
    async fn passwords_of_the_url_never_appear() {
        let url = "redis-sentinel://u:server-pw@127.0.0.1:1/0?sentinelServiceName=m\
                   &sentinelUsername=s&sentinelPassword=sentinel-pw";
        let config = FredConfig::from_url(url).unwrap();
        assert_eq!(url_secrets(&config), ["server-pw", "sentinel-pw"]);
        let echo = Error::new(ErrorKind::Auth, "no: server-pw / sentinel-pw");
        let text = connect_error(&config, echo, Duration::from_millis(10))
            .await
            .to_string();
        assert!(
            !text.contains("server-pw") && !text.contains("sentinel-pw"),
            "{text}"
        );
        assert!(text.contains("<redacted>"), "{text}");
    }
}
