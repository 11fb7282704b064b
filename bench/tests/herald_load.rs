//! `herald-load` against the local stack, black-box: its report must count what a client that
//! behaves as client/herald.js does would hold. Herald closes a connection that a frame could not
//! reach (a post and its repost failed), for the client to resume; a client of the tool that
//! did not reconnect counted those frames as lost.

use std::process::Command;

use serde_json::Value;

#[test]
fn clients_whose_connection_the_server_closes_reconnect_and_lose_nothing() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e");
    std::fs::create_dir_all(&dir).expect("target/e2e");
    let report = dir.join(format!("herald-load-test-{}", std::process::id()));
    // Half the posts answer 429 while producing: a quarter of the frames fail twice, so almost
    // every client has its connection closed at least once.
    let out = Command::new(env!("CARGO_BIN_EXE_herald-load"))
        .args(["--clients", "24", "--tenants", "2", "--groups", "2", "--notifications", "12"])
        .args(["--rate", "6", "--post-faults", "0.5", "--max-seconds", "240", "--report"])
        .arg(&report)
        .output()
        .expect("herald-load runs");
    assert!(out.status.success(), "herald-load failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(report.with_extension("json")).expect("the JSON report");
    let r: Value = serde_json::from_str(&text).expect("a JSON report");
    assert!(
        r["reconnects"].as_u64().unwrap_or(0) > 0,
        "no connection was closed: the test tests nothing\n{text}"
    );
    assert_eq!(r["lostAfterResume"], 0, "{text}");
    assert_eq!(r["finalResumes"], 24, "{text}");
    assert_eq!(r["resumeErrors"], serde_json::json!([]), "{text}");
    assert_eq!(
        r["receivedLive"].as_u64().unwrap_or(0) + r["recoveredByResume"].as_u64().unwrap_or(0),
        r["expectedDeliveries"].as_u64().unwrap_or(u64::MAX),
        "{text}"
    );
}
