//! The client libraries' own suites, run against this build's gateway
//! binary: `clients/python` (pytest) and `clients/js` (Node's test
//! runner). Each suite starts its own `redis-server` and gateway
//! processes on free ports (standalone and a 2-instance cluster) and
//! kills them at the end.
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
    let version = Command::new("node")
        .arg("--version")
        .output()
        .expect("node runs (Node >= 20)");
    let version = String::from_utf8_lossy(&version.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("a node version");
    assert!(major >= 20, "Node >= 20 is needed, found {version}");
    // Node 20 has a global WebSocket only behind a flag.
    let mut args = vec![];
    if major < 22 {
        args.push("--experimental-websocket");
    }
    args.extend(["--test", "--test-reporter=spec", "clients/js/test/"]);
    let out = suite("node", &args);
    let passed = out.lines().find(|l| l.contains("ℹ pass")).unwrap_or("");
    let failed = out.lines().find(|l| l.contains("ℹ fail")).unwrap_or("");
    assert!(
        failed.trim_end().ends_with(" 0") && !passed.trim_end().ends_with(" 0"),
        "{out}"
    );
    println!("clients/js: {} / {}", passed.trim(), failed.trim());
}
