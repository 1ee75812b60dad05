//! The control UI and the static directories.
//!
//! The UI is a single-page application built into `ui/dist` (an
//! `index.html` and its files under `assets/`), compiled into the binary
//! with `rust-embed` so it works offline with nothing beside the binary,
//! or read from `ui.dir` when that is set. A browser asking for `/` (its
//! `Accept` names `text/html`) gets `index.html`; any other client still
//! gets the one-line answer of where to connect. Unknown paths a browser
//! asks for (a view's address after a reload) get `index.html` too, so
//! the application routes them; other unknown paths stay 404.
//!
//! Files whose name carries a content hash (`app-3f2a9c1e.js`) are cached
//! for a year as immutable; `index.html` and the rest are revalidated with
//! their `ETag`. The security headers (CSP without inline script,
//! `frame-ancestors 'none'`, `nosniff`) come from `headers::secure`.
//!
//! `ui.canvas_dir` and `ui.a2ui_dir` are served as they are under
//! `/canvas/` and `/a2ui/` (tower-http's `ServeDir`: no path outside the
//! directory is reachable).

use super::App;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::borrow::Cow;
use tower_http::services::ServeDir;

#[derive(rust_embed::Embed)]
#[folder = "ui/dist"]
struct Embedded;

/// Cache policy of a file named with its content hash.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache policy of everything else: keep, but ask every time.
const REVALIDATE: &str = "no-cache";

/// Add the UI's routes and the static directories to `router`.
pub fn routes(app: &App, mut router: Router<App>) -> Router<App> {
    let ui = &app.config.ui;
    if let Some(dir) = &ui.canvas_dir {
        router = router.nest_service("/canvas", ServeDir::new(dir));
    }
    if let Some(dir) = &ui.a2ui_dir {
        router = router.nest_service("/a2ui", ServeDir::new(dir));
    }
    if !ui.enabled {
        return router;
    }
    router
        .route("/assets/{*path}", get(asset))
        .fallback(fallback)
}

/// Whether the request is a browser's navigation (it accepts HTML).
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// `index.html`, as a navigation to the UI gets it.
pub async fn index(app: &App, headers: &HeaderMap) -> Response {
    serve(app, "index.html", headers).await
}

async fn asset(State(app): State<App>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&app, &format!("assets/{path}"), &headers).await
}

/// Unknown paths: `index.html` for a browser's navigation outside the
/// API, 404 otherwise.
async fn fallback(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let api = [
        "/api/",
        "/v1/",
        "/tools/",
        "/hooks/",
        "/mcp",
        "/a2a",
        "/.well-known/",
    ]
    .iter()
    .any(|p| uri.path().starts_with(p));
    if (method == Method::GET || method == Method::HEAD) && !api && wants_html(&headers) {
        return index(&app, &headers).await;
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// One file of the UI: from `ui.dir` when set, else the embedded copy.
async fn serve(app: &App, path: &str, headers: &HeaderMap) -> Response {
    let found = match &app.config.ui.dir {
        Some(dir) => from_dir(dir, path).await,
        None => Embedded::get(path).map(|f| (f.data, hex(&f.metadata.sha256_hash()))),
    };
    let Some((body, hash)) = found else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let etag = format!("\"{}\"", &hash[..32]);
    let cache = if hashed_name(path) {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_owned().into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.essence_str()) {
        let text = mime.type_() == mime_guess::mime::TEXT
            || matches!(mime.subtype().as_str(), "javascript" | "json");
        let v = if text {
            HeaderValue::from_str(&format!("{}; charset=utf-8", mime.essence_str())).unwrap_or(v)
        } else {
            v
        };
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    response
}

/// A file of `dir`, never outside it: `path` comes from the UI's own
/// routes, and anything but plain names is refused.
async fn from_dir(dir: &std::path::Path, path: &str) -> Option<(Cow<'static, [u8]>, String)> {
    let plain = path
        .split('/')
        .all(|part| !part.is_empty() && part != ".." && part != "." && !part.contains('\\'));
    if !plain {
        return None;
    }
    let data = tokio::fs::read(dir.join(path)).await.ok()?;
    let hash = ring::digest::digest(&ring::digest::SHA256, &data);
    Some((Cow::Owned(data), hex(hash.as_ref())))
}

/// Whether a file name carries a content hash: `name-<8+ hex or
/// base32-ish characters>.ext`, as bundlers write them.
fn hashed_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.split('.').next().unwrap_or(name);
    stem.rsplit_once('-').is_some_and(|(_, hash)| {
        hash.len() >= 8
            && hash.chars().all(|c| c.is_ascii_alphanumeric())
            && hash.chars().any(|c| c.is_ascii_digit())
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_are_told_apart() {
        assert!(hashed_name("assets/app-3f2a9c1e.js"));
        assert!(hashed_name("assets/index-B4xk29Qa.css"));
        assert!(!hashed_name("index.html"));
        assert!(!hashed_name("assets/logo.svg"));
        assert!(!hashed_name("assets/control-panel.js"));
    }

    #[test]
    fn only_plain_relative_paths_are_read_from_a_directory() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = std::env::temp_dir();
        for bad in [
            "../etc/passwd",
            "assets/../../x",
            "/etc/passwd",
            "a//b",
            "a\\..\\b",
        ] {
            assert!(rt.block_on(from_dir(&dir, bad)).is_none(), "{bad}");
        }
    }
}
