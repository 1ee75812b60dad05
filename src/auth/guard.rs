//! Request guards applied before authentication: the WebSocket `Origin`
//! allow-list and the resolution of the real client IP behind trusted
//! reverse proxies. Also home of the shared `*` wildcard matcher.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Whether `text` matches `pattern`, where `*` matches any run of
/// characters (including none) and everything else matches literally.
/// Case-sensitive; runs in O(len(pattern) × len(text)) at worst.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` seen and the text position it was tried at.
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                backtrack = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match backtrack {
                Some((star, start)) => {
                    pi = star + 1;
                    ti = start + 1;
                    backtrack = Some((star, start + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

/// The WebSocket `Origin` check (cross-site WebSocket hijacking defence).
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    patterns: Vec<String>,
}

impl OriginPolicy {
    /// `patterns` (`scheme://host[:port]`) may contain `*` wildcards; they
    /// match case-insensitively and part by part (see [`origin_matches`]).
    pub fn new(patterns: &[String]) -> Self {
        Self {
            patterns: patterns.iter().map(|p| p.to_ascii_lowercase()).collect(),
        }
    }

    /// No `Origin` header: allowed (non-browser clients). With patterns:
    /// the origin must match one. Without: the origin's `host[:port]` must
    /// equal the `Host` header (same origin; default ports are ignored).
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin.map(str::trim) else {
            return true;
        };
        let origin = origin.to_ascii_lowercase();
        if !self.patterns.is_empty() {
            return self.patterns.iter().any(|p| origin_matches(p, &origin));
        }
        host.is_some_and(|host| same_origin(&origin, host))
    }
}

/// Whether the (lower-cased) `origin` matches `pattern`, part by part: the
/// scheme, then the host label by label (a `*` never crosses a `.`, `/`,
/// `?`, `:` or `@`; a leading `*.` stands for one or more labels), then the
/// port (`:*` any, none: the scheme's default). `*` alone matches every
/// origin. An origin with a path, query, fragment or user info matches
/// nothing: browsers never send one.
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let (pattern_scheme, pattern_rest) = pattern.split_once("://").unwrap_or(("*", pattern));
    if !wildcard_match(pattern_scheme, scheme) || rest.contains(['/', '?', '#', '@']) {
        return false;
    }
    let Some(default) = default_port(scheme) else {
        return false;
    };
    let Some((host, port)) = split_host_port(rest, default) else {
        return false;
    };
    let (pattern_host, pattern_port) = match pattern_rest.rfind(':') {
        Some(i) if !pattern_rest[i..].contains(']') => {
            (&pattern_rest[..i], Some(&pattern_rest[i + 1..]))
        }
        _ => (pattern_rest, None),
    };
    let port_ok = match pattern_port {
        None => port == default,
        Some("*") => true,
        Some(p) => p.parse::<u16>() == Ok(port),
    };
    port_ok && host_matches(pattern_host, host)
}

/// Host `pattern` against `host`, label by label.
fn host_matches(pattern: &str, host: &str) -> bool {
    let labels = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
    let (pattern_labels, host_labels) = (labels(pattern), labels(host));
    let pairs_match = |p: &[String], h: &[String]| {
        p.len() == h.len()
            && p.iter()
                .zip(h)
                .all(|(p, h)| !h.is_empty() && wildcard_match(p, h))
    };
    match pattern_labels.split_first() {
        // `*.rest`: one or more labels, then `rest`.
        Some((first, rest)) if first == "*" && !rest.is_empty() => {
            host_labels.len() > rest.len()
                && host_labels[..host_labels.len() - rest.len()]
                    .iter()
                    .all(|l| !l.is_empty())
                && pairs_match(rest, &host_labels[host_labels.len() - rest.len()..])
        }
        _ => pairs_match(&pattern_labels, &host_labels),
    }
}

/// The `Host` allow-list: the DNS-rebinding defence. A page on an
/// attacker's name that resolves to this gateway's address sends its own
/// name as `Host` (and as `Origin`, so the same-origin check alone passes).
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// `None`: any name.
    names: Option<Vec<String>>,
}

/// The names a loopback-bound gateway answers to when none are configured.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl HostPolicy {
    /// `configured` names (`*` wildcards per label); when empty, the
    /// loopback names on a `loopback` bind, else any name.
    pub fn new(configured: &[String], loopback: bool) -> Self {
        let names = if !configured.is_empty() {
            Some(configured.iter().map(|n| n.to_ascii_lowercase()).collect())
        } else if loopback {
            Some(LOOPBACK_NAMES.iter().map(|n| n.to_string()).collect())
        } else {
            None
        };
        Self { names }
    }

    /// Whether a request for `host` (`name[:port]`, the port ignored) is
    /// for this gateway. A request without one is refused when names apply.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(names) = &self.names else {
            return true;
        };
        let Some(host) = host else {
            return false;
        };
        let host = host.trim().to_ascii_lowercase();
        let Some((name, _)) = split_host_port(&host, 0) else {
            return false;
        };
        names.iter().any(|pattern| host_matches(pattern, name))
    }
}

/// Whether the (lower-cased) origin names the same host and port as `host`.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let Some(default_port) = default_port(scheme) else {
        return false;
    };
    let host = host.trim().to_ascii_lowercase();
    match (
        split_host_port(authority, default_port),
        split_host_port(&host, default_port),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `host[:port]` (with `[v6]` literals) into host and port, the port
/// defaulting to `default_port`.
fn split_host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then_some((host, port))
}

/// Works out the client address behind trusted reverse proxies.
#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
}

impl ClientIpResolver {
    pub fn new(trusted: &[IpNet]) -> Self {
        Self {
            trusted: trusted.to_vec(),
        }
    }

    /// The peer address, unless the peer is a trusted proxy: then the
    /// right-most `X-Forwarded-For` entry that is not itself trusted, else
    /// `X-Real-IP`, else the peer. Unparsable headers are ignored.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        self.forwarded_for_ip(headers)
            .or_else(|| real_ip(headers))
            .unwrap_or(peer)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Walks `X-Forwarded-For` (all headers, in order) from the right and
    /// returns the first untrusted address. Garbage before such an address
    /// is found makes the whole header unusable.
    fn forwarded_for_ip(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut entries = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            entries.extend(value.to_str().ok()?.split(',').map(str::trim));
        }
        for entry in entries.into_iter().rev() {
            let ip = parse_ip(entry)?;
            if !self.is_trusted(ip) {
                return Some(ip);
            }
        }
        None
    }
}

fn real_ip(headers: &HeaderMap) -> Option<IpAddr> {
    parse_ip(headers.get("x-real-ip")?.to_str().ok()?.trim())
}

/// An address as proxies write it: `1.2.3.4`, `::1`, `1.2.3.4:5678` or
/// `[::1]:5678`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("abc", "abc"));
        assert!(!wildcard_match("abc", "abcd"));
        assert!(!wildcard_match("abcd", "abc"));
        assert!(wildcard_match("a*c", "abbbc"));
        assert!(wildcard_match("a*c", "ac"));
        assert!(!wildcard_match("a*c", "abcd"));
        assert!(wildcard_match("a*b*c", "a-b-x-b-c"));
        assert!(wildcard_match("private:team-*", "private:team-red"));
        assert!(!wildcard_match("private:team-*", "private:other"));
        assert!(wildcard_match("**x", "yyx"));
        assert!(!wildcard_match("", "x"));
        assert!(!wildcard_match("A", "a"), "case-sensitive");
        let long = "a".repeat(200);
        assert!(!wildcard_match("*a*a*a*a*a*b", &long));
    }

    fn policy(patterns: &[&str]) -> OriginPolicy {
        OriginPolicy::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn origin_without_header_is_allowed() {
        assert!(policy(&[]).allows(None, None));
        assert!(policy(&["https://a.example"]).allows(None, Some("x")));
    }

    #[test]
    fn origin_patterns() {
        let p = policy(&["https://*.example.com", "http://localhost:*"]);
        assert!(p.allows(Some("https://app.example.com"), None));
        assert!(p.allows(Some("HTTPS://App.Example.COM"), None));
        assert!(p.allows(Some("http://localhost:3000"), None));
        assert!(!p.allows(Some("https://example.com.evil.net"), None));
        assert!(!p.allows(Some("http://app.example.com"), None));
        assert!(!p.allows(Some("https://evil.net"), Some("evil.net")));
        assert!(!p.allows(Some("null"), None));
    }

    #[test]
    fn hosts_default_to_the_loopback_names_on_a_loopback_bind() {
        let loopback = HostPolicy::new(&[], true);
        for good in [
            "localhost",
            "localhost:18789",
            "127.0.0.1:80",
            "[::1]:8080",
            "LOCALHOST",
        ] {
            assert!(loopback.allows(Some(good)), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:18789",
            "localhost.evil.example",
            "127.0.0.2",
        ] {
            assert!(!loopback.allows(Some(bad)), "{bad}");
        }
        assert!(!loopback.allows(None));
        let any = HostPolicy::new(&[], false);
        assert!(any.allows(Some("whatever.example")) && any.allows(None));
        let named = HostPolicy::new(&["gw.example.com".into(), "*.corp.example".into()], true);
        assert!(named.allows(Some("gw.example.com:443")));
        assert!(named.allows(Some("a.corp.example")));
        assert!(
            !named.allows(Some("localhost")),
            "the configured list replaces the default"
        );
        assert!(!named.allows(Some("corp.example")));
    }

    /// A wildcard stands for labels of a host, never for a path, query,
    /// port or user-info trick that ends in the trusted name.
    #[test]
    fn origin_wildcards_match_per_host_label() {
        let p = policy(&[
            "https://*.trusted.example",
            "https://app-*.corp.example:8443",
        ]);
        for good in [
            "https://a.trusted.example",
            "https://a.b.trusted.example",
            "https://app-1.corp.example:8443",
        ] {
            assert!(p.allows(Some(good), None), "{good}");
        }
        for bad in [
            "https://evil.example/.trusted.example",
            "https://evil.example?.trusted.example",
            "https://evil.example#.trusted.example",
            "https://evil.example:.trusted.example",
            "https://x@evil.example/.trusted.example",
            "https://trusted.example",
            "https://.trusted.example",
            "https://evil.trusted.example.attacker.net",
            "http://a.trusted.example",
            "https://a.trusted.example:444",
            "https://app-1.x.corp.example:8443",
            "https://app-1.corp.example",
        ] {
            assert!(!p.allows(Some(bad), None), "{bad}");
        }
        assert!(policy(&["*"]).allows(Some("https://anything.example"), None));
    }

    #[test]
    fn same_origin_without_patterns() {
        let p = policy(&[]);
        assert!(p.allows(Some("https://gw.example.com"), Some("gw.example.com")));
        assert!(p.allows(Some("https://gw.example.com"), Some("GW.example.com:443")));
        assert!(p.allows(Some("http://127.0.0.1:18789"), Some("127.0.0.1:18789")));
        assert!(p.allows(Some("http://[::1]:8080"), Some("[::1]:8080")));
        assert!(!p.allows(Some("http://127.0.0.1:3000"), Some("127.0.0.1:18789")));
        assert!(!p.allows(Some("https://evil.net"), Some("gw.example.com")));
        assert!(!p.allows(Some("https://gw.example.com"), None));
        assert!(!p.allows(Some("null"), Some("gw.example.com")));
        assert!(!p.allows(Some("file://gw.example.com"), Some("gw.example.com")));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn resolver() -> ClientIpResolver {
        ClientIpResolver::new(&["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()])
    }

    #[test]
    fn untrusted_peer_headers_ignored() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "2.2.2.2")]);
        assert_eq!(resolver().client_ip(ip("8.8.8.8"), &h), ip("8.8.8.8"));
        let none = ClientIpResolver::new(&[]);
        assert_eq!(none.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn trusted_proxy_forwarded_for() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(resolver().client_ip(ip("10.0.0.1"), &h), ip("1.1.1.1"));
        let h = headers(&[("x-forwarded-for", "1.1.1.1:4444")]);
        assert_eq!(resolver().client_ip(ip("::1"), &h), ip("1.1.1.1"));
    }

    #[test]
    fn multi_hop_forwarded_for() {
        // spoofed, real client, then two internal proxies
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 1.1.1.1"),
            ("x-forwarded-for", "10.0.0.7, 10.0.0.8"),
        ]);
        assert_eq!(resolver().client_ip(ip("10.0.0.9"), &h), ip("1.1.1.1"));
        // all trusted: fall back to X-Real-IP, then the peer
        let h = headers(&[("x-forwarded-for", "10.0.0.7"), ("x-real-ip", "3.3.3.3")]);
        assert_eq!(resolver().client_ip(ip("10.0.0.9"), &h), ip("3.3.3.3"));
        let h = headers(&[("x-forwarded-for", "10.0.0.7")]);
        assert_eq!(resolver().client_ip(ip("10.0.0.9"), &h), ip("10.0.0.9"));
    }

    #[test]
    fn real_ip_fallback() {
        let h = headers(&[("x-real-ip", " 2001:db8::1 ")]);
        assert_eq!(resolver().client_ip(ip("10.0.0.1"), &h), ip("2001:db8::1"));
    }

    #[test]
    fn garbage_headers_fall_back() {
        let h = headers(&[("x-forwarded-for", "not-an-ip"), ("x-real-ip", "2.2.2.2")]);
        assert_eq!(resolver().client_ip(ip("10.0.0.1"), &h), ip("2.2.2.2"));
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, garbage"),
            ("x-real-ip", "junk"),
        ]);
        assert_eq!(resolver().client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(resolver().client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peer_is_canonicalised() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        let mapped = ip("::ffff:10.0.0.1");
        assert_eq!(resolver().client_ip(mapped, &h), ip("1.1.1.1"));
        let untrusted = ip("::ffff:8.8.8.8");
        assert_eq!(resolver().client_ip(untrusted, &h), ip("8.8.8.8"));
    }
}
