//! Where credentials come from.
//!
//! At the WebSocket upgrade ([`extract`]) a client may present, in order of
//! precedence:
//!
//! 1. `Authorization: Bearer <token>`
//! 2. `X-API-Key: <key>`
//! 3. `Sec-WebSocket-Protocol: bearer.<token>, switchyard.v1` — for browsers,
//!    which cannot set headers on a WebSocket. The `bearer.` entry is never
//!    selected as the subprotocol; [`Extracted::selected_protocol`] is the
//!    first other offered protocol. Browsers fail the handshake when they
//!    offered protocols and the server selects none, so such clients should
//!    offer a real protocol next to the token.
//! 4. `?token=<token>` in the query string (percent-decoded; `+` is kept
//!    as is). Query strings end up in logs; prefer the other carriers.
//!
//! A client that presents nothing may authenticate in-band with the `auth`
//! object of `connect` / `auth` ([`from_params`]), where a device token
//! (`deviceToken`) may come with its `signature` of the connection's
//! challenge.

use super::{AuthError, Credential};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use serde_json::Value;

/// The result of inspecting an upgrade request.
#[derive(Debug, Default)]
pub struct Extracted {
    /// The credential found, if any.
    pub credential: Option<Credential>,
    /// The subprotocol to echo in the upgrade response, if any.
    pub selected_protocol: Option<String>,
}

/// Finds the credential and the subprotocol in an upgrade request.
/// A present but malformed `Authorization` header is an error rather than
/// being silently skipped.
pub fn extract(headers: &HeaderMap, query: Option<&str>) -> Result<Extracted, AuthError> {
    let protocols = offered_protocols(headers)?;
    let (protocol_token, selected_protocol) = split_protocols(&protocols);
    let credential = match authorization(headers)? {
        Some(token) => Some(Credential::Bearer(token)),
        None => match api_key(headers)? {
            Some(key) => Some(Credential::ApiKey(key)),
            None => match protocol_token {
                Some(token) => Some(Credential::Bearer(token)),
                None => query_token(query)?.map(Credential::Bearer),
            },
        },
    };
    Ok(Extracted {
        credential,
        selected_protocol,
    })
}

/// Turns the in-band `auth` object (`{"token": …}`, `{"apiKey": …}` or
/// `{"password": …}`) into a credential. Exactly one of them must be given.
pub fn from_params(v: &Value) -> Result<Credential, AuthError> {
    let object = match v {
        Value::Null => return Err(AuthError::Missing),
        Value::Object(object) => object,
        _ => return Err(AuthError::Malformed),
    };
    let mut found = None;
    for (field, make) in PARAM_FIELDS {
        let Some(value) = object.get(*field) else {
            continue;
        };
        let secret = value
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::Malformed)?;
        if found.is_some() {
            return Err(AuthError::Malformed);
        }
        found = Some(make(secret.to_string()));
    }
    // A device proves possession of its key with `signature`.
    if let Some(Credential::Device { signature, .. }) = &mut found
        && let Some(value) = object.get("signature")
    {
        let given = value.as_str().filter(|s| !s.is_empty());
        *signature = Some(given.ok_or(AuthError::Malformed)?.to_owned());
    }
    found.ok_or(AuthError::Missing)
}

/// The fields [`from_params`] reads a credential from.
pub fn param_names() -> impl Iterator<Item = &'static str> {
    PARAM_FIELDS.iter().map(|(name, _)| *name)
}

type MakeCredential = fn(String) -> Credential;

const PARAM_FIELDS: &[(&str, MakeCredential)] = &[
    ("token", Credential::Bearer),
    ("apiKey", Credential::ApiKey),
    ("api_key", Credential::ApiKey),
    ("password", Credential::Password),
    ("deviceToken", device_token),
];

fn device_token(token: String) -> Credential {
    Credential::Device {
        token,
        signature: None,
    }
}

/// The token of `Authorization: Bearer <token>`, if the header is present.
fn authorization(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::Malformed);
    }
    let value = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(AuthError::Malformed);
    }
    Ok(Some(token.to_string()))
}

/// The `X-API-Key` header; an empty value counts as absent.
fn api_key(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    let Some(value) = headers.get("x-api-key") else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
    Ok((!key.is_empty()).then(|| key.to_string()))
}

/// Every offered subprotocol, across repeated headers, in order.
fn offered_protocols(headers: &HeaderMap) -> Result<Vec<String>, AuthError> {
    let mut protocols = Vec::new();
    for value in headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        let value = value.to_str().map_err(|_| AuthError::Malformed)?;
        protocols.extend(
            value
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        );
    }
    Ok(protocols)
}

/// Splits the offered protocols into the `bearer.<token>` credential (the
/// first one) and the first other protocol.
fn split_protocols(protocols: &[String]) -> (Option<String>, Option<String>) {
    let mut token = None;
    let mut selected = None;
    for protocol in protocols {
        match bearer_protocol(protocol) {
            Some(t) => {
                if token.is_none() && !t.is_empty() {
                    token = Some(t.to_string());
                }
            }
            None => {
                if selected.is_none() {
                    selected = Some(protocol.clone());
                }
            }
        }
    }
    (token, selected)
}

fn bearer_protocol(protocol: &str) -> Option<&str> {
    const PREFIX: &str = "bearer.";
    let head = protocol.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    protocol.get(PREFIX.len()..)
}

/// The percent-decoded `token` query parameter; empty counts as absent.
fn query_token(query: Option<&str>) -> Result<Option<String>, AuthError> {
    let Some(query) = query else {
        return Ok(None);
    };
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(name)? == "token" {
            let token = percent_decode(value)?;
            return Ok((!token.is_empty()).then_some(token));
        }
    }
    Ok(None)
}

/// Decodes `%XX` escapes; invalid escapes or UTF-8 are malformed.
fn percent_decode(input: &str) -> Result<String, AuthError> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|&c| hex_value(c));
            let lo = bytes.get(i + 2).and_then(|&c| hex_value(c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(AuthError::Malformed);
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| AuthError::Malformed)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn secret(c: &Option<Credential>) -> Option<(&'static str, String)> {
        c.as_ref().map(|c| match c {
            Credential::Bearer(s) => ("bearer", s.clone()),
            Credential::ApiKey(s) => ("api_key", s.clone()),
            Credential::Password(s) => ("password", s.clone()),
            Credential::Device { token, .. } => ("device", token.clone()),
        })
    }

    fn extracted(pairs: &[(&'static str, &str)], query: Option<&str>) -> Extracted {
        extract(&headers(pairs), query).unwrap()
    }

    #[test]
    fn authorization_bearer() {
        let e = extracted(&[("authorization", "Bearer abc.def.ghi")], None);
        assert_eq!(
            secret(&e.credential),
            Some(("bearer", "abc.def.ghi".into()))
        );
        let e = extracted(&[("authorization", "bearer   tok ")], None);
        assert_eq!(secret(&e.credential), Some(("bearer", "tok".into())));
    }

    #[test]
    fn malformed_authorization() {
        for bad in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "tok",
            "Bearer a b",
        ] {
            let result = extract(&headers(&[("authorization", bad)]), None);
            assert!(matches!(result, Err(AuthError::Malformed)), "{bad}");
        }
        let twice = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert!(matches!(extract(&twice, None), Err(AuthError::Malformed)));
    }

    #[test]
    fn api_key_header() {
        let e = extracted(&[("x-api-key", "k-123")], None);
        assert_eq!(secret(&e.credential), Some(("api_key", "k-123".into())));
        let e = extracted(&[("x-api-key", "")], None);
        assert!(e.credential.is_none());
    }

    #[test]
    fn subprotocol_token_and_selection() {
        let e = extracted(
            &[(
                "sec-websocket-protocol",
                "bearer.tok-1, switchyard.v1, other",
            )],
            None,
        );
        assert_eq!(secret(&e.credential), Some(("bearer", "tok-1".into())));
        assert_eq!(e.selected_protocol.as_deref(), Some("switchyard.v1"));

        let e = extracted(&[("sec-websocket-protocol", "bearer.tok-1")], None);
        assert_eq!(secret(&e.credential), Some(("bearer", "tok-1".into())));
        assert_eq!(e.selected_protocol, None);

        let e = extracted(
            &[
                ("sec-websocket-protocol", "switchyard.v1"),
                ("sec-websocket-protocol", "bearer.tok-2"),
            ],
            None,
        );
        assert_eq!(secret(&e.credential), Some(("bearer", "tok-2".into())));
        assert_eq!(e.selected_protocol.as_deref(), Some("switchyard.v1"));

        let e = extracted(&[("sec-websocket-protocol", "switchyard.v1")], None);
        assert!(e.credential.is_none());
        assert_eq!(e.selected_protocol.as_deref(), Some("switchyard.v1"));
    }

    #[test]
    fn query_token_percent_decoded() {
        let e = extracted(&[], Some("a=1&token=ab%2Bc%3D%3D+d&b=2"));
        assert_eq!(secret(&e.credential), Some(("bearer", "ab+c==+d".into())));
        let e = extracted(&[], Some("tok%65n=x"));
        assert_eq!(secret(&e.credential), Some(("bearer", "x".into())));
        let e = extracted(&[], Some("token="));
        assert!(e.credential.is_none());
        let e = extracted(&[], Some("other=1"));
        assert!(e.credential.is_none());
        assert!(matches!(
            extract(&HeaderMap::new(), Some("token=%zz")),
            Err(AuthError::Malformed)
        ));
        assert!(matches!(
            extract(&HeaderMap::new(), Some("token=%ff")),
            Err(AuthError::Malformed)
        ));
        assert!(matches!(
            extract(&HeaderMap::new(), Some("token=abc%4")),
            Err(AuthError::Malformed)
        ));
    }

    #[test]
    fn nothing_presented() {
        let e = extracted(&[], None);
        assert!(e.credential.is_none());
        assert!(e.selected_protocol.is_none());
    }

    #[test]
    fn precedence() {
        let all = [
            ("authorization", "Bearer from-header"),
            ("x-api-key", "from-key"),
            (
                "sec-websocket-protocol",
                "bearer.from-protocol, switchyard.v1",
            ),
        ];
        let q = Some("token=from-query");
        let e = extracted(&all, q);
        assert_eq!(
            secret(&e.credential),
            Some(("bearer", "from-header".into()))
        );
        assert_eq!(e.selected_protocol.as_deref(), Some("switchyard.v1"));
        let e = extracted(&all[1..], q);
        assert_eq!(secret(&e.credential), Some(("api_key", "from-key".into())));
        let e = extracted(&all[2..], q);
        assert_eq!(
            secret(&e.credential),
            Some(("bearer", "from-protocol".into()))
        );
        let e = extracted(&[], q);
        assert_eq!(secret(&e.credential), Some(("bearer", "from-query".into())));
    }

    #[test]
    fn params() {
        let c = Some(from_params(&json!({"token": "t"})).unwrap());
        assert_eq!(secret(&c), Some(("bearer", "t".into())));
        let c = Some(from_params(&json!({"apiKey": "k"})).unwrap());
        assert_eq!(secret(&c), Some(("api_key", "k".into())));
        let c = Some(from_params(&json!({"password": "p", "extra": 1})).unwrap());
        assert_eq!(secret(&c), Some(("password", "p".into())));

        match from_params(&json!({"deviceToken": "d", "signature": "s"})).unwrap() {
            Credential::Device { token, signature } => {
                assert_eq!((token.as_str(), signature.as_deref()), ("d", Some("s")));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            from_params(&json!({"deviceToken": "d"})),
            Ok(Credential::Device {
                signature: None,
                ..
            })
        ));
        assert!(matches!(
            from_params(&json!({"deviceToken": "d", "signature": 5})),
            Err(AuthError::Malformed)
        ));
        assert!(matches!(from_params(&json!(null)), Err(AuthError::Missing)));
        assert!(matches!(from_params(&json!({})), Err(AuthError::Missing)));
        for bad in [
            json!("t"),
            json!({"token": 5}),
            json!({"token": ""}),
            json!({"token": "t", "password": "p"}),
        ] {
            assert!(
                matches!(from_params(&bad), Err(AuthError::Malformed)),
                "{bad}"
            );
        }
    }
}
