//! Security headers on every HTTP response, in one layer: no MIME
//! sniffing, no referrer, nothing cached unless the handler said otherwise
//! (API answers, status and errors are per caller), and HTML that may not
//! be framed and loads nothing from elsewhere.

use axum::http::{HeaderValue, header};
use axum::response::Response;

/// The policy of any HTML the server answers with.
const HTML_POLICY: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                           base-uri 'none'; form-action 'self'; object-src 'none'";

/// Add the security headers to `response` (an `axum::middleware::map_response`).
pub async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(HTML_POLICY),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::{Html, IntoResponse};

    #[tokio::test]
    async fn html_may_not_be_framed_and_nothing_is_cached_by_default() {
        let page = secure(Html("<p>hi</p>").into_response()).await;
        let h = page.headers();
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert!(
            h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        let mut cached = "asset".into_response();
        cached.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
        let cached = secure(cached).await;
        assert_eq!(
            cached.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable",
            "a handler's own caching is kept"
        );
        assert!(
            !cached
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
        );
    }
}
