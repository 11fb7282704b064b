//! IAM as the local stack enforces it (infra/herald_local/access.py): each function calls AWS
//! with its own role from the template. The same steps on the real template and on one with a
//! grant removed show the grant is what makes them work; and a reminder whose function keeps
//! failing ends in the reminder DLQ, sent there with the reminder's role.

use std::path::PathBuf;
use std::time::Duration;

use herald_e2e::*;
use serde_json::{Value, json};

/// template.yaml without the policy statement `sid` (its `- Sid:` line and everything indented
/// under it), written where a stack of its own can load it.
fn template_without(sid: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).expect("template.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let start = lines
        .iter()
        .position(|l| l.trim_start().starts_with(&format!("- Sid: {sid}")))
        .unwrap_or_else(|| panic!("no statement {sid} in template.yaml"));
    let end = (start + 1..lines.len())
        .find(|&i| !lines[i].trim().is_empty() && indent(lines[i]) <= indent(lines[start]))
        .unwrap_or(lines.len());
    let trimmed = [&lines[..start], &lines[end..]].concat().join("\n");
    assert!(!trimmed.contains(sid) && trimmed.len() < text.len());
    let dir = repo_root()
        .join("target/e2e")
        .join(format!("iam-template-{}-{sid}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("template dir");
    let path = dir.join("template.yaml");
    std::fs::write(&path, trimmed).expect("write template");
    path
}

/// Two notifications reach a user live (dispatch posts them); a second connection of theirs then
/// resumes from the first one's cursor, which replays the second through ws-message's posts. The
/// replayed frame, if one arrives within `wait`.
async fn resume_after_two_notifications(stack: &Stack, wait: Duration) -> Option<Value> {
    let tenant = unique("iam");
    let user = unique("u");
    let mut live = stack.client(&user, &tenant).await;
    live.catch_up().await;
    let note = |title: &str| json!({"tenant": tenant, "to": {"user": user}, "event": "iam.check", "title": title});
    stack.publish(note("first")).await;
    let first = live.notification().await;
    // Over a second later, so that the first one's fan-out ended well before the second's cursor.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    stack.publish(note("replay me")).await;
    assert_eq!(live.notification().await["title"], "replay me");
    let mut again = stack.client(&user, &tenant).await;
    again
        .send(json!({"action": "resume", "since": first["cursor"], "have": [first["id"]], "ref": "r1"}))
        .await;
    let deadline = tokio::time::Instant::now() + wait;
    // Raw frames: with its posts refused, what ws-message answers need not be a JSON frame.
    while let Some(text) = again
        .next_text_within(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if frame["type"] == "notification" {
            return Some(frame);
        }
    }
    None
}

#[tokio::test]
async fn resume_replays_with_the_templates_grants() {
    let replayed = resume_after_two_notifications(stack(), WAIT)
        .await
        .expect("a replayed notification");
    assert_eq!(
        (replayed["title"].as_str(), replayed["replayed"].as_bool()),
        (Some("replay me"), Some(true))
    );
}

#[tokio::test]
async fn without_its_connections_grant_ws_message_replays_nothing() {
    let template = template_without("PostToAndCloseConnections");
    let trimmed = start_stack_on(&template, TEST_ENV);
    assert_eq!(resume_after_two_notifications(&trimmed, Duration::from_secs(10)).await, None);
    // The stack log names the function, its role, the action and the resource refused.
    let line = eventually("the refusal in the stack log", || {
        let text = trimmed.log_text();
        async move {
            text.lines()
                .find(|l| l.contains("IAM: ws-message (WsMessageRole) denied execute-api:ManageConnections"))
                .map(str::to_owned)
        }
    })
    .await;
    assert!(line.contains("/prod/POST/@connections/"), "{line}");
    assert!(line.contains("no identity-based policy allows"), "{line}");
}

#[tokio::test]
async fn a_reminder_that_keeps_failing_ends_in_the_reminder_dlq() {
    let tenant = unique("acme");
    let id = unique("rem");
    let at = chrono::Utc::now() + chrono::Duration::minutes(20);
    publish(json!({"id": id, "tenant": tenant, "to": {"user": "u"}, "event": "iam.reminder",
                   "title": "never delivered", "deliverAt": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}))
    .await;
    let name = herald::services::schedule::schedule_name(&tenant, &id);
    let schedule = eventually("schedule created", || schedule_named(&name)).await;
    let target = schedule.target().expect("target").clone();
    // Every invocation carrying this reminder dies (the first attempt and Lambda's two retries).
    control(
        reqwest::Method::POST,
        "/faults/kill",
        Some(json!({"function": "reminder", "match": id, "count": 3})),
    )
    .await;
    let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
    let mut input: Value = serde_json::from_str(target.input().unwrap_or("{}")).expect("input");
    input["deliverAt"] = json!(soon.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    reschedule(&name, &target, &input, soon).await;

    let message = find_message("ReminderDeadLetterQueue", &id).await;
    let record: Value = serde_json::from_str(message.body().unwrap_or("{}")).expect("record");
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["requestPayload"], input);
    assert!(
        record["responsePayload"]["errorType"].as_str().is_some_and(|t| !t.is_empty()),
        "{record}"
    );
}
