//! The client libraries' own suites, run against this build's gateway
//! binary: `clients/python` (pytest), `clients/js` (Node's test runner)
//! and the control UI (`ui/test`: Playwright driving Debian's headless
//! Chromium, screenshots of every view in `target/ui-screenshots`). Each
//! suite starts its own `redis-server` and gateway processes on free
//! ports (standalone and a 2-instance cluster) and kills them at the end.
//!
//! Not a behaviour test: the suites pick their backends themselves.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Run `program args` in the checkout with the gateway binary named in
/// `SWITCHYARD_BIN`; its output when it succeeds.
fn suite(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(ROOT)
        .env("SWITCHYARD_BIN", BIN)
        .env("SWITCHYARD_SCREENSHOTS", screenshots())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

/// Where the UI suite saves its screenshots.
fn screenshots() -> String {
    format!("{ROOT}/target/ui-screenshots")
}

/// Node's major version (Node >= 20 is required).
fn node_major() -> u32 {
    let version = Command::new("node")
        .arg("--version")
        .output()
        .expect("node runs (Node >= 20)");
    let version = String::from_utf8_lossy(&version.stdout);
    let major = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("a node version");
    assert!(major >= 20, "Node >= 20 is needed, found {version}");
    major
}

/// Passed and failed counts from Node's test runner output.
fn node_counts(out: &str) -> (String, String) {
    let line = |key: &str| {
        out.lines()
            .find(|l| l.contains(key))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let (passed, failed) = (line("ℹ pass"), line("ℹ fail"));
    assert!(
        failed.ends_with(" 0") && !passed.ends_with(" 0") && !passed.is_empty(),
        "{out}"
    );
    (passed, failed)
}

#[test]
fn the_python_sdk_suite_passes() {
    assert!(Path::new(ROOT).join("clients/python/tests").is_dir());
    let out = suite(
        "python3",
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "clients/python/tests",
        ],
    );
    let summary = out
        .lines()
        .rev()
        .find(|l| l.contains(" passed"))
        .unwrap_or("");
    assert!(
        summary.contains("passed") && !summary.contains("failed"),
        "{out}"
    );
    println!("clients/python: {summary}");
}

#[test]
fn the_javascript_client_suite_passes() {
    // Node 20 has a global WebSocket only behind a flag.
    let mut args = vec![];
    if node_major() < 22 {
        args.push("--experimental-websocket");
    }
    args.extend(["--test", "--test-reporter=spec", "clients/js/test/"]);
    let (passed, failed) = node_counts(&suite("node", &args));
    println!("clients/js: {passed} / {failed}");
}

#[test]
fn the_control_ui_suite_passes_in_a_real_browser() {
    node_major();
    assert!(
        std::path::Path::new(ROOT)
            .join("ui/node_modules/playwright-core")
            .is_dir(),
        "run `npm ci` in ui (scripts/test-deps.sh does)"
    );
    let out = suite("node", &["--test", "--test-reporter=spec", "ui/test/"]);
    let (passed, failed) = node_counts(&out);
    println!("ui: {passed} / {failed}; screenshots in {}", screenshots());
}
