//! The control UI over plain HTTP, as a browser and as other clients see
//! it: `index.html` for a browser's navigation (SPA fallback included)
//! with its security headers, the one-line answer for everyone else,
//! hashed assets cached for good and the rest revalidated by `ETag`, no
//! path out of the UI's files, the UI turned off, and the static
//! `/canvas/` directory. (A UI directory that does not exist is refused
//! by the config's validation: `config::validate`'s unit tests.)

mod common;

use common::*;

const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml");

/// The value of header `name` in a response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The script `index.html` loads.
fn script_of(index: &str) -> String {
    index
        .split('"')
        .find(|part| part.starts_with("/assets/app-") && part.ends_with(".js"))
        .expect("index.html names its script")
        .to_owned()
}

#[tokio::test]
async fn a_browser_gets_the_ui_and_other_clients_the_address() {
    let server = TestServer::default().await;
    let (status, head, index) = http(server.addr, "GET", "/", &[HTML], None).await;
    assert_eq!(status, 200);
    assert!(
        header(&head, "content-type")
            .unwrap()
            .starts_with("text/html"),
        "{head}"
    );
    let csp = header(&head, "content-security-policy").expect("a CSP");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&head, "cache-control"), Some("no-cache"));
    assert!(!index.contains("<script>"), "no inline script: {index}");
    // Not a browser: where to connect.
    let (status, _, text) = http(server.addr, "GET", "/", &[], None).await;
    assert_eq!(status, 200);
    assert!(text.contains("Connect a WebSocket client"), "{text}");
    // A view's address after a reload: the same index.html.
    let (status, _, again) = http(server.addr, "GET", "/approvals", &[HTML], None).await;
    assert_eq!((status, again.as_str()), (200, index.as_str()));
    // An API path or a non-browser stays 404.
    assert_eq!(
        http(server.addr, "GET", "/api/nothing", &[HTML], None)
            .await
            .0,
        404
    );
    assert_eq!(
        http(server.addr, "GET", "/approvals", &[], None).await.0,
        404
    );
    assert_eq!(
        http(server.addr, "POST", "/approvals", &[HTML], None)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn hashed_assets_are_immutable_and_the_rest_revalidates() {
    let server = TestServer::default().await;
    let (_, _, index) = http(server.addr, "GET", "/", &[HTML], None).await;
    let script = script_of(&index);
    let (status, head, body) = http(server.addr, "GET", &script, &[], None).await;
    assert_eq!(status, 200, "{script}");
    assert!(!body.is_empty());
    assert_eq!(
        header(&head, "content-type"),
        Some("text/javascript; charset=utf-8"),
        "{head}"
    );
    assert_eq!(
        header(&head, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let (_, head, _) = http(server.addr, "GET", "/", &[HTML], None).await;
    let etag = header(&head, "etag").expect("an ETag").to_owned();
    let (status, _, body) = http(
        server.addr,
        "GET",
        "/",
        &[HTML, ("if-none-match", etag.as_str())],
        None,
    )
    .await;
    assert_eq!((status, body.as_str()), (304, ""));
    for path in [
        "/assets/nope.js",
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/Cargo.toml",
    ] {
        assert_eq!(
            http(server.addr, "GET", path, &[], None).await.0,
            404,
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_ui_can_be_turned_off_and_canvas_serves_a_directory() {
    let dir = std::env::temp_dir().join(format!("canvas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("page.html"), "<p>canvas</p>").unwrap();
    let mut c = config();
    c.ui.enabled = false;
    c.ui.canvas_dir = Some(dir.clone());
    let server = TestServer::start(c).await;
    let (status, _, text) = http(server.addr, "GET", "/", &[HTML], None).await;
    assert_eq!(status, 200);
    assert!(text.contains("Connect a WebSocket client"), "{text}");
    assert_eq!(
        http(server.addr, "GET", "/assets/x.js", &[], None).await.0,
        404
    );
    let (status, head, body) = http(server.addr, "GET", "/canvas/page.html", &[], None).await;
    assert_eq!((status, body.as_str()), (200, "<p>canvas</p>"));
    assert!(
        header(&head, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let (status, _, _) = http(server.addr, "GET", "/canvas/../Cargo.toml", &[], None).await;
    assert_ne!(status, 200);
    std::fs::remove_dir_all(&dir).ok();
}
