//! Escalation end to end (DESIGN.md, "Reaching users who are not connected"): a notification
//! with `"escalate":{"afterSeconds":n}` that a targeted user has not read or acked by then goes
//! to the escalation queue, once per (notification, user); never for one read in time; and bad
//! `escalate` values are refused with their reason. The test stack lowers the 60 s minimum to
//! 1 s (`TEST_ENV`), so the deadlines here are seconds.
//!
//! Nothing consumes the escalation queue in the stack: the tests read it as the operator's
//! worker would (see [`escalations`]).

use std::sync::Mutex;

use herald_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

/// Every escalation message received so far by this test binary, by SQS message id.
static RECEIVED: Mutex<Vec<(String, Value)>> = Mutex::new(Vec::new());

/// Every message the escalation queue has held, as the operator's worker reads it: received
/// and deleted (a message received again and again without deleting would count toward the
/// queue's maxReceiveCount and move to its dead-letter queue), and kept for all the tests of
/// this binary, which run concurrently against one stack and pick theirs by id and user.
async fn escalations() -> Vec<Value> {
    let client = sqs().await;
    let url = queue("EscalationQueue");
    loop {
        let out = client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let body = serde_json::from_str(m.body().unwrap_or_default()).unwrap_or(Value::Null);
            if let Some(id) = m.message_id() {
                let mut received = RECEIVED.lock().unwrap_or_else(|e| e.into_inner());
                if !received.iter().any(|(seen, _)| seen == id) {
                    received.push((id.to_owned(), body));
                }
            }
            if let Some(receipt) = m.receipt_handle() {
                client
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .expect("delete");
            }
        }
    }
    RECEIVED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(_, b)| b.clone())
        .collect()
}

/// The escalation messages of notification `id` for `user`.
async fn escalations_of(id: &str, user: &str) -> Vec<Value> {
    escalations()
        .await
        .into_iter()
        .filter(|m| m["id"] == id && m["user"] == user)
        .collect()
}

/// Waits for the escalation of notification `id` for `user`.
async fn escalation_of(id: &str, user: &str) -> Value {
    eventually(&format!("the escalation of {id} for {user}"), || async {
        escalations_of(id, user).await.into_iter().next()
    })
    .await
}

/// Waits until the internal queue has nothing left: every check, and every copy of one, was
/// received, processed and deleted (a copy that met a live claim came back and was processed
/// too). After that, nothing more can reach the escalation queue for the checks sent so far.
async fn internal_queue_drained() {
    let client = sqs().await;
    let url = queue("InternalQueue");
    eventually("the internal queue drained", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let out = client
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
                .send()
                .await
                .ok()?;
            let attrs = out.attributes()?;
            let busy = [
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            ]
            .iter()
            .any(|name| attrs.get(name).is_some_and(|n| n != "0"));
            (!busy).then_some(())
        }
    })
    .await;
}

/// The frame a client received, as the escalation message's `notification` carries it.
fn without_type(frame: &Value) -> Value {
    let mut n = frame.clone();
    if let Some(m) = n.as_object_mut() {
        m.remove("type");
    }
    n
}

#[tokio::test]
async fn an_unread_notification_escalates_once_even_when_its_check_comes_three_times() {
    let tenant = unique("acme");
    let user = unique("u");
    let id = unique("grade");
    // Connected: delivered to a device is not read.
    let mut client = Client::connect(&user, &tenant, &[], &[]).await;
    client.catch_up().await;
    publish(json!({
        "id": id, "tenant": tenant, "to": {"user": user}, "event": "assignment.graded",
        "title": "Graded", "body": "Essay 2: A-", "escalate": {"afterSeconds": 3}
    }))
    .await;
    let frame = client.notification().await;
    assert_eq!(frame["id"], id.as_str());

    // Two more copies of the user's check, as SQS's at-least-once delivery may hand out: sent
    // now, due with the original, so at the deadline three copies race for the once-guard (and
    // any that meets a live claim is delivered once more after its lease).
    let check = herald::io::queue::EscalationCheck {
        tenant: tenant.clone(),
        id: id.clone(),
        user: user.clone(),
        cursor: frame["cursor"].as_str().expect("cursor").to_owned(),
        due: chrono::Utc::now().timestamp() + 3,
        notification: without_type(&frame),
        push: None,
    };
    let body = serde_json::to_string(&check).expect("check");
    let sqs = sqs().await;
    for _ in 0..2 {
        sqs.send_message()
            .queue_url(queue("InternalQueue"))
            .message_body(body.clone())
            .delay_seconds(3)
            .send()
            .await
            .expect("send a copy of the check");
    }

    let got = escalation_of(&id, &user).await;
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["tenant"], tenant.as_str());
    assert_eq!(got["user"], user.as_str());
    assert_eq!(got["notification"], without_type(&frame), "the notification as the device got it");
    assert_eq!(got.as_object().map(|o| o.len()), Some(4), "{got}");

    internal_queue_drained().await;
    assert_eq!(escalations_of(&id, &user).await.len(), 1, "one escalation for three checks");
    client.close().await;
}

#[tokio::test]
async fn a_notification_read_or_acked_in_time_does_not_escalate() {
    let tenant = unique("acme");
    let (by_id, by_ack, by_cursor, unread) = (unique("id"), unique("ack"), unique("cur"), unique("unread"));
    let id = unique("grade");
    let mut acker = Client::connect(&by_ack, &tenant, &[], &[]).await;
    let mut reader = Client::connect(&by_cursor, &tenant, &[], &[]).await;
    reader.catch_up().await;
    // A deadline far enough away for the reads below to come first on a busy machine; the
    // unread user shows the checks did fire.
    publish(json!({
        "id": id, "tenant": tenant, "to": {"users": [by_id, by_ack, by_cursor, unread]},
        "event": "assignment.graded", "escalate": {"afterSeconds": 20}
    }))
    .await;
    // Read by id over HTTP (no device needs to have seen it).
    let (s, _) = api(
        Method::POST,
        "/notifications/read",
        &token(&by_id, &tenant, &[], &[]),
        Some(json!({"ids": [id]})),
    )
    .await;
    assert_eq!(s, 200);
    // Acked on the socket that received it.
    let f = acker.notification().await;
    assert_eq!(f["id"], id.as_str());
    let acked = acker.request(json!({"action": "ack", "ids": [id], "ref": "a1"}), "acked").await;
    assert_eq!(acked["type"], "acked", "{acked}");
    // Read by moving the read cursor up to it.
    let f = reader.notification().await;
    let (s, _) = api(
        Method::POST,
        "/notifications/read",
        &token(&by_cursor, &tenant, &[], &[]),
        Some(json!({"upTo": f["cursor"]})),
    )
    .await;
    assert_eq!(s, 200);

    escalation_of(&id, &unread).await;
    internal_queue_drained().await;
    for user in [&by_id, &by_ack, &by_cursor] {
        assert!(escalations_of(&id, user).await.is_empty(), "{user} read it, yet it escalated");
    }
    assert_eq!(escalations_of(&id, &unread).await.len(), 1);
    acker.close().await;
    reader.close().await;
}

#[tokio::test]
async fn bad_escalate_values_are_rejected_with_their_reason() {
    let tenant = unique("acme");
    let user = unique("u");
    let service = token("svc", &tenant, &["service"], &[]);
    let cases = [
        // Below the minimum (the test stack's 1 s; 60 s in production) and above 7 days.
        (json!({"user": user}), json!({"afterSeconds": 0}), "escalate.afterSeconds"),
        (json!({"user": user}), json!({"afterSeconds": 604_801}), "escalate.afterSeconds"),
        (json!({"user": user}), json!({"afterSeconds": "900"}), "escalate.afterSeconds"),
        (json!({"user": user}), json!({"after": 900}), "escalate.after"),
        (
            json!({"group": "course:1"}),
            json!({"afterSeconds": 900}),
            "only notifications to users",
        ),
        (json!({"tenant": true}), json!({"afterSeconds": 900}), "only notifications to users"),
    ];
    for (to, escalate, reason) in cases {
        // HTTP: 400 with the reason.
        let msg = json!({"tenant": tenant, "to": to, "event": "e", "escalate": escalate});
        let (s, b) = api(Method::POST, "/notifications", &service, Some(msg.clone())).await;
        assert_eq!(s, 400, "{msg}: {b}");
        assert_eq!(b["error"]["code"], "bad_request", "{b}");
        assert!(b["error"]["message"].as_str().is_some_and(|m| m.contains(reason)), "{msg}: {b}");
        // SQS: the dead-letter queue, with the reason.
        let marker = unique("bad-escalate");
        let mut sqs_msg = msg;
        sqs_msg["id"] = json!(marker);
        publish(sqs_msg).await;
        let dead = find_message("DispatchDeadLetterQueue", &marker).await;
        let attrs = dead.message_attributes().expect("attributes");
        assert_eq!(attrs.get("reason").and_then(|a| a.string_value()), Some("bad_request"));
        let detail = attrs.get("detail").and_then(|a| a.string_value()).unwrap_or_default();
        assert!(detail.contains(reason), "{detail}");
    }
}

#[tokio::test]
async fn a_wait_beyond_15_minutes_is_a_schedule_whose_check_escalates_when_it_fires() {
    let tenant = unique("acme");
    let user = unique("u");
    let id = unique("grade");
    publish(json!({
        "id": id, "tenant": tenant, "to": {"user": user}, "event": "assignment.graded",
        "escalate": {"afterSeconds": 1200}
    }))
    .await;
    // Twenty minutes is beyond SQS's delay: a one-time schedule whose input is the check.
    let name = herald::services::escalation::schedule_name_for(&tenant, &id, &user);
    let schedule = eventually("the escalation's schedule", || schedule_named(&name)).await;
    assert_eq!(schedule.action_after_completion().map(|a| a.as_str()), Some("DELETE"));
    let target = schedule.target().expect("target").clone();
    let mut input: Value = serde_json::from_str(target.input().unwrap_or("{}")).expect("input");
    let due = input["escalationCheck"]["due"].as_i64().expect("a check with its due time");
    assert!(due >= chrono::Utc::now().timestamp() + 1000, "due in twenty minutes: {input}");

    // Time travel: the check is due now, and the schedule fires in two seconds.
    let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
    input["escalationCheck"]["due"] = json!(chrono::Utc::now().timestamp());
    reschedule(&name, &target, &input, soon).await;
    let got = escalation_of(&id, &user).await;
    assert_eq!(got["notification"]["event"], "assignment.graded");
    // Scheduler delivers at least once: the same input fired again escalates nothing more.
    assert_eq!(invoke("reminder", &input).await["fired"], true, "forwarded to the internal queue");
    internal_queue_drained().await;
    assert_eq!(escalations_of(&id, &user).await.len(), 1);
}
