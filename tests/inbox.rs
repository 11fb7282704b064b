//! An inbox that stays true on every device (issue #33), end to end: read state reaches the
//! user's other connections with an exact unread count; producers update and recall what they
//! sent (versions, never overtaken by an older one; a recall does not escalate); users'
//! preferences per category and channel, with quiet hours and a `critical` override.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use herald_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

/// Frames of `type` a client receives until `done` says it has what it waits for.
async fn frames_until(client: &mut Client, kind: &str, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let mut got = Vec::new();
    while !done(&got) {
        let f = client.next().await;
        if f["type"] == kind {
            got.push(f);
        }
    }
    got
}

/// Publishes `n` notifications to `user` and waits until `clients` all received them.
async fn send_to(tenant: &str, user: &str, n: usize, clients: &mut [&mut Client]) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|_| unique("n")).collect();
    for id in &ids {
        publish(json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "grade.posted", "title": "t"})).await;
    }
    for c in clients.iter_mut() {
        frames_until(c, "notification", |got| {
            ids.iter().all(|id| got.iter().any(|f| f["id"] == id.as_str()))
        })
        .await;
    }
    ids
}

#[tokio::test]
async fn a_read_on_one_device_reaches_the_other_with_the_unread_count() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let mut a = Client::connect(&user, &tenant, &[], &[]).await;
    let mut b = Client::connect(&user, &tenant, &[], &[]).await;
    a.catch_up().await;
    b.catch_up().await;
    let ids = send_to(&tenant, &user, 3, &mut [&mut a, &mut b]).await;

    let acked = a.request(json!({"action": "ack", "ids": [ids[0]], "ref": "r1"}), "acked").await;
    assert_eq!(acked["unread"], 2, "{acked}");
    let read = frames_until(&mut b, "read", |got| !got.is_empty()).await.remove(0);
    assert_eq!((&read["ids"], &read["unread"]), (&json!([ids[0]]), &json!(2)), "{read}");
    assert!(read["seq"].as_u64().is_some(), "{read}");

    // Over HTTP (no connection of its own): every device hears of it.
    let cursor = {
        let (_, missed) = api(Method::GET, "/notifications/missed", &token(&user, &tenant, &[], &[]), None).await;
        missed["items"][1]["cursor"].as_str().map(str::to_owned)
    };
    if let Some(cursor) = cursor {
        let (status, body) = api(
            Method::POST,
            "/notifications/read",
            &token(&user, &tenant, &[], &[]),
            Some(json!({"upTo": cursor})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        for c in [&mut a, &mut b] {
            let read = frames_until(c, "read", |got| got.iter().any(|f| f.get("upTo").is_some())).await;
            let read = read.iter().find(|f| f.get("upTo").is_some()).cloned().unwrap_or_default();
            assert_eq!((&read["upTo"], &read["unread"]), (&json!(cursor), &body["unread"]), "{read}");
        }
        assert_eq!(body["unread"], 1, "{body}");
    }
}

#[tokio::test]
async fn two_devices_reading_at_once_end_with_the_exact_count() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let mut a = Client::connect(&user, &tenant, &[], &[]).await;
    let mut b = Client::connect(&user, &tenant, &[], &[]).await;
    a.catch_up().await;
    b.catch_up().await;
    let ids = send_to(&tenant, &user, 6, &mut [&mut a, &mut b]).await;
    for round in 0..3 {
        // Each device acks other ids at the same moment.
        let (mine, theirs) = (&ids[round * 2..round * 2 + 1], &ids[round * 2 + 1..round * 2 + 2]);
        a.send(json!({"action": "ack", "ids": mine, "ref": format!("a{round}")})).await;
        b.send(json!({"action": "ack", "ids": theirs, "ref": format!("b{round}")})).await;
        let expected = 6 - 2 * (round + 1);
        // Each device keeps the count of the highest `seq` it saw: its own answer, or the
        // other's read frame (as herald.js does).
        for client in [&mut a, &mut b] {
            let (mut own, mut other) = (None, None);
            while own.is_none() || other.is_none() {
                let f = client.next().await;
                match f["type"].as_str() {
                    Some("acked") => own = Some(f),
                    Some("read") => other = Some(f),
                    _ => {}
                }
            }
            let (own, other) = (own.unwrap_or_default(), other.unwrap_or_default());
            let last = if own["seq"].as_u64() > other["seq"].as_u64() {
                &own
            } else {
                &other
            };
            assert_eq!(last["unread"], expected, "round {round}: own {own}, other {other}");
        }
    }
    let (_, count) = api(Method::GET, "/notifications/unread-count", &token(&user, &tenant, &[], &[]), None).await;
    assert_eq!(count["count"], 0, "{count}");
}

fn service(tenant: &str) -> String {
    token(&unique("svc"), tenant, &["service"], &[])
}

/// The dispatch queue has nothing in flight: every message sent so far was processed.
async fn dispatch_drained() {
    let client = sqs().await;
    let url = queue("DispatchQueue");
    eventually("the dispatch queue drained", || {
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

async fn missed_of(user: &str, tenant: &str, id: &str) -> Vec<Value> {
    let (_, missed) = api(Method::GET, "/notifications/missed", &token(user, tenant, &[], &[]), None).await;
    missed["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i["id"] == id)
        .collect()
}

#[tokio::test]
async fn an_update_reaches_live_clients_and_replaces_the_entry_in_missed_and_resume() {
    let (tenant, user, id) = (unique("acme"), unique("u"), unique("deadline"));
    let mut live = Client::connect(&user, &tenant, &[], &[]).await;
    live.catch_up().await;
    publish(json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "deadline.set", "title": "Due Friday", "body": "Essay"}))
        .await;
    assert_eq!(live.notification().await["id"], id.as_str());
    // Over HTTP, as a service: checked, then applied by dispatch.
    let (status, body) = api(
        Method::POST,
        "/notifications",
        &service(&tenant),
        Some(json!({"update": id, "tenant": tenant, "version": 2, "title": "Due Monday"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let v2 = live.notification().await;
    assert_eq!(
        (&v2["id"], &v2["version"], &v2["title"], &v2["body"]),
        (&json!(id), &json!(2), &json!("Due Monday"), &json!("Essay"))
    );
    // One entry, the new version, in `missed` and in a resume from the beginning.
    let items = missed_of(&user, &tenant, &id).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!((&items[0]["version"], &items[0]["title"]), (&json!(2), &json!("Due Monday")));
    let mut other = Client::connect(&user, &tenant, &[], &[]).await;
    other.send(json!({"action": "resume", "ref": "r"})).await;
    let mut replayed = Vec::new();
    loop {
        let f = other.next().await;
        if f["type"] == "resumed" {
            break;
        }
        if f["id"] == id.as_str() {
            replayed.push(f);
        }
    }
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(replayed[0]["version"], 2);
    // A device holding the first version (`have`) still gets the second.
    let mut holder = Client::connect(&user, &tenant, &[], &[]).await;
    holder.send(json!({"action": "resume", "have": [id], "ref": "h"})).await;
    let mut got = false;
    loop {
        let f = holder.next().await;
        if f["type"] == "resumed" {
            break;
        }
        got |= f["id"] == id.as_str() && f["version"] == 2;
    }
    assert!(got, "an update is not spared by `have`");
}

#[tokio::test]
async fn a_late_older_update_does_not_overwrite_a_newer_one() {
    let (tenant, user, id) = (unique("acme"), unique("u"), unique("n"));
    let mut live = Client::connect(&user, &tenant, &[], &[]).await;
    live.catch_up().await;
    publish(json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "e", "title": "v1"})).await;
    live.notification().await;
    publish(json!({"update": id, "tenant": tenant, "version": 3, "title": "v3"})).await;
    assert_eq!(live.notification().await["title"], "v3");
    publish(json!({"update": id, "tenant": tenant, "version": 2, "title": "v2"})).await;
    dispatch_drained().await;
    let items = missed_of(&user, &tenant, &id).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!((&items[0]["title"], &items[0]["version"]), (&json!("v3"), &json!(3)));
    live.expect_silence(Duration::from_millis(500)).await;
}

/// A latest-value stream keeps one entry per key through an update: the updated value is the
/// key's latest, so the next value of the key replaces it in the log as it would the original.
#[tokio::test]
async fn an_updated_latest_value_is_replaced_by_the_next_value_of_its_key() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let (first, second) = (unique("progress"), unique("progress"));
    let mut live = Client::connect(&user, &tenant, &[], &[]).await;
    live.catch_up().await;
    let to = json!({"user": user});
    publish(json!({"id": first, "tenant": tenant, "to": to, "event": "job.progress", "title": "10 %", "collapse": "job-7"})).await;
    assert_eq!(live.notification().await["id"], first.as_str());
    publish(json!({"update": first, "tenant": tenant, "version": 2, "title": "20 %"})).await;
    assert_eq!(live.notification().await["title"], "20 %");
    publish(json!({"id": second, "tenant": tenant, "to": to, "event": "job.progress", "title": "30 %", "collapse": "job-7"})).await;
    assert_eq!(live.notification().await["id"], second.as_str());
    dispatch_drained().await;

    let (_, missed) = api(Method::GET, "/notifications/missed", &token(&user, &tenant, &[], &[]), None).await;
    let titles: Vec<&Value> = missed["items"]
        .as_array()
        .map(|a| a.iter().map(|i| &i["title"]).collect())
        .unwrap_or_default();
    assert_eq!(titles, [&json!("30 %")], "one entry of the key, its latest value: {missed}");
}

/// Every escalation message received by this binary (received and deleted, as the operator's
/// worker would).
static ESCALATIONS: Mutex<Vec<Value>> = Mutex::new(Vec::new());

async fn escalations_of(id: &str) -> Vec<Value> {
    let client = sqs().await;
    let url = queue("EscalationQueue");
    loop {
        let out = client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let body: Value = serde_json::from_str(m.body().unwrap_or_default()).unwrap_or(Value::Null);
            ESCALATIONS.lock().unwrap_or_else(|e| e.into_inner()).push(body);
            if let Some(r) = m.receipt_handle() {
                client
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(r)
                    .send()
                    .await
                    .expect("delete");
            }
        }
    }
    ESCALATIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|m| m["id"] == id)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_recall_reaches_live_clients_disappears_from_replays_and_does_not_escalate() {
    let (tenant, user, id) = (unique("acme"), unique("u"), unique("grade"));
    let mut live = Client::connect(&user, &tenant, &[], &[]).await;
    live.catch_up().await;
    publish(
        json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "grade.posted", "title": "F", "escalate": {"afterSeconds": 3}}),
    )
    .await;
    live.notification().await;
    publish(json!({"recall": id, "tenant": tenant})).await;
    let recalled = frames_until(&mut live, "recalled", |got| !got.is_empty()).await.remove(0);
    assert_eq!(recalled["id"], id.as_str());
    // Replays carry the tombstone, never the notification.
    let items = missed_of(&user, &tenant, &id).await;
    assert!(items.iter().all(|i| i["type"] == "recalled"), "{items:?}");
    assert!(!items.is_empty(), "the tombstone tells devices that were away");
    let (_, count) = api(Method::GET, "/notifications/unread-count", &token(&user, &tenant, &[], &[]), None).await;
    assert_eq!(count["count"], 0, "{count}");
    // Its check came back at the deadline and found it recalled (dispatch logs the decision),
    // and nothing reached the escalation queue.
    eventually("the escalation check to find it recalled", || async {
        let log = std::fs::read_to_string(&stack().log).unwrap_or_default();
        log.lines()
            .any(|l| l.contains("recalled: not escalated") && l.contains(id.as_str()))
            .then_some(())
    })
    .await;
    assert!(escalations_of(&id).await.is_empty(), "a recalled notification escalated");
    // Nothing changes it any more, and an update of it is refused over HTTP.
    let (status, _) = api(
        Method::POST,
        "/notifications",
        &service(&tenant),
        Some(json!({"update": id, "tenant": tenant, "version": 2, "title": "A"})),
    )
    .await;
    assert_eq!(status, 409);
}

/// A subscription of the local push service, registered for `user`.
async fn push_subscription(user: &str, tenant: &str) -> Value {
    let url = format!("{}/subscriptions", stack().ready.push_service_url);
    let sub: Value = http().post(&url).send().await.expect("push service").json().await.expect("JSON");
    let wire = json!({"endpoint": sub["endpoint"], "expirationTime": null, "keys": sub["keys"]});
    let (status, body) = api(Method::PUT, "/push/subscriptions", &token(user, tenant, &[], &[]), Some(wire)).await;
    assert_eq!(status, 201, "{body}");
    sub
}

async fn pushed(sub: &Value) -> Vec<Value> {
    let url = format!(
        "{}/subscriptions/{}/messages",
        stack().ready.push_service_url,
        sub["id"].as_str().unwrap_or_default()
    );
    let body: Value = http().get(&url).send().await.expect("push service").json().await.expect("JSON");
    body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m["json"].clone())
        .collect()
}

#[tokio::test]
async fn a_category_turned_off_for_push_sends_no_push_but_still_logs_in_app() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let me = token(&user, &tenant, &[], &[]);
    let (status, body) = api(Method::PUT, "/preferences", &me, Some(json!({"off": {"push": ["forum.*"]}}))).await;
    assert_eq!(status, 200, "{body}");
    let sub = push_subscription(&user, &tenant).await;
    let (forum, grade) = (unique("forum"), unique("grade"));
    publish(json!({"id": forum, "tenant": tenant, "to": {"user": user}, "event": "forum.reply", "title": "Re:", "push": true})).await;
    publish(json!({"id": grade, "tenant": tenant, "to": {"user": user}, "event": "grade.posted", "title": "A", "push": true})).await;
    eventually("the grade's push", || async {
        pushed(&sub).await.iter().any(|m| m["id"] == grade.as_str()).then_some(())
    })
    .await;
    dispatch_drained().await;
    assert!(
        !pushed(&sub).await.iter().any(|m| m["id"] == forum.as_str()),
        "forum.* is off for push"
    );
    assert_eq!(missed_of(&user, &tenant, &forum).await.len(), 1, "still in the inbox");
}

/// A user's preferences were read with a batch read that drops the keys DynamoDB leaves
/// unprocessed when throttled: the user's own document then passed for none, the tenant's
/// defaults (here: everything on) applied, and a category the user turned off reached their
/// inbox and their push service. Every key is now asked again until answered.
#[tokio::test]
async fn preferences_hold_when_their_batch_read_is_throttled() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let me = token(&user, &tenant, &[], &[]);
    let off = json!({"off": {"inapp": ["forum.*"], "push": ["forum.*"]}});
    let (status, body) = api(Method::PUT, "/preferences", &me, Some(off)).await;
    assert_eq!(status, 200, "{body}");
    let sub = push_subscription(&user, &tenant).await;
    // The next two batch reads of this user's document answer every key unprocessed.
    let throttled = json!({"target": "BatchGetItem", "match": format!("pf#{tenant}#{user}"), "unprocessed": true, "count": 2});
    control(Method::POST, "/faults/aws", Some(throttled)).await;
    let forum = unique("forum");
    publish(json!({"id": forum, "tenant": tenant, "to": {"user": user}, "event": "forum.reply", "title": "Re:", "push": true})).await;
    dispatch_drained().await;
    let grade = unique("grade");
    publish(json!({"id": grade, "tenant": tenant, "to": {"user": user}, "event": "grade.posted", "title": "A", "push": true})).await;
    eventually("the grade's push", || async {
        pushed(&sub).await.iter().any(|m| m["id"] == grade.as_str()).then_some(())
    })
    .await;
    let faults = control(Method::GET, "/faults", None).await;
    assert!(
        faults["injected"]["aws:BatchGetItem:unprocessed"].as_u64() >= Some(2),
        "the reads met the fault: {faults}"
    );
    assert!(missed_of(&user, &tenant, &forum).await.is_empty(), "forum.* is off in-app");
    assert!(
        !pushed(&sub).await.iter().any(|m| m["id"] == forum.as_str()),
        "forum.* is off for push"
    );
}

#[tokio::test]
async fn quiet_hours_delay_push_and_escalation_and_critical_passes() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let me = token(&user, &tenant, &[], &[]);
    // Quiet from this minute to two minutes on (UTC): ends within 2 minutes.
    let now = chrono::Utc::now();
    let hm = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
    let quiet = json!({"quietHours": {"start": hm(now), "end": hm(now + chrono::Duration::minutes(2)), "timeZone": "UTC"}});
    let (status, body) = api(Method::PUT, "/preferences", &me, Some(quiet)).await;
    assert_eq!(status, 200, "{body}");
    let sub = push_subscription(&user, &tenant).await;
    let (held, critical) = (unique("held"), unique("critical"));
    for (id, crit) in [(&held, false), (&critical, true)] {
        publish(
            json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "grade.posted", "title": "t",
            "push": true, "escalate": {"afterSeconds": 2}, "critical": crit}),
        )
        .await;
    }
    eventually("the critical push", || async {
        pushed(&sub).await.iter().any(|m| m["id"] == critical.as_str()).then_some(())
    })
    .await;
    eventually("the critical escalation", || async {
        (!escalations_of(&critical).await.is_empty()).then_some(())
    })
    .await;
    // Both were due together; the other waits for the end of the quiet hours.
    assert!(
        !pushed(&sub).await.iter().any(|m| m["id"] == held.as_str()),
        "pushed during quiet hours"
    );
    assert!(escalations_of(&held).await.is_empty(), "escalated during quiet hours");
    let deadline = Instant::now() + Duration::from_secs(200);
    loop {
        let push = pushed(&sub).await.iter().any(|m| m["id"] == held.as_str());
        let escalated = !escalations_of(&held).await.is_empty();
        if push && escalated {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not pushed ({push}) or escalated ({escalated}) after the quiet hours"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(chrono::Utc::now() >= now + chrono::Duration::seconds(50), "it waited");
}

#[tokio::test]
async fn bad_preferences_and_revisions_are_refused_and_change_nothing() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let me = token(&user, &tenant, &[], &[]);
    let (status, _) = api(Method::PUT, "/preferences", &me, Some(json!({"off": {"push": ["forum.*"]}}))).await;
    assert_eq!(status, 200);
    for (doc, field) in [
        (json!({"off": {"sms": ["forum.*"]}}), "off.sms"),
        (
            json!({"quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Mars/Olympus"}}),
            "quietHours.timeZone",
        ),
        (
            json!({"quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Europe/Berlin"}, "x": 1}),
            "x",
        ),
    ] {
        let (status, body) = api(Method::PUT, "/preferences", &me, Some(doc.clone())).await;
        assert_eq!(status, 400, "{doc}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().starts_with(field), "{body}");
    }
    let (_, now) = api(Method::GET, "/preferences", &me, None).await;
    assert_eq!(
        (&now["off"], &now["source"]),
        (&json!({"push": ["forum.*"]}), &json!("user")),
        "{now}"
    );
    // Tenant defaults are an admin's.
    let (status, _) = api(Method::PUT, "/preferences/tenant", &me, Some(json!({}))).await;
    assert_eq!(status, 403);

    // Another tenant's notification: 404 over HTTP, DLQ `not_found` on the queue.
    let (other, id) = (unique("other"), unique("theirs"));
    publish(json!({"id": id, "tenant": other, "to": {"user": user}, "event": "e", "title": "theirs"})).await;
    dispatched(&other, &id).await;
    let (status, body) = api(
        Method::POST,
        "/notifications",
        &service(&tenant),
        Some(json!({"update": id, "tenant": tenant, "version": 2, "title": "mine"})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api(
        Method::POST,
        "/notifications",
        &service(&tenant),
        Some(json!({"recall": id, "tenant": other})),
    )
    .await;
    assert_eq!(status, 403);
    publish(json!({"recall": id, "tenant": tenant})).await;
    let m = find_message("DispatchDeadLetterQueue", &format!("\"recall\":\"{id}\"")).await;
    let reason = m
        .message_attributes()
        .and_then(|a| a.get("reason"))
        .and_then(|v| v.string_value())
        .unwrap_or_default();
    assert_eq!(reason, "not_found");
    let items = missed_of(&user, &other, &id).await;
    assert_eq!((items.len(), &items[0]["title"]), (1, &json!("theirs")), "unchanged");
    // A plain user cannot mark a reminder critical.
    let (status, body) = api(
        Method::POST,
        "/reminders",
        &me,
        Some(json!({"id": unique("r"), "tenant": tenant, "to": {"user": user}, "event": "e", "deliverAt": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(), "critical": true})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
}
