//! Each function run on its `events/` fixture (the files `sam local invoke -e` takes), through the
//! local stack's invoke endpoint, against moto — asserting stored state and the frames that reach
//! a real WebSocket client through the `@connections` endpoint.

use herald_e2e::*;
use serde_json::{Value, json};

fn body_json(resp: &Value) -> Value {
    serde_json::from_str(resp["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

#[tokio::test]
async fn authorizer_allows_a_valid_token_and_refuses_others() {
    let tenant = unique("acme");
    let jwt = token("u1", &tenant, &["student"], &["course:42"]);
    let text = fixture("authorizer.json").to_string().replace("REPLACE_WITH_JWT", &jwt);
    let resp = invoke("authorizer", &serde_json::from_str(&text).expect("json")).await;
    assert_eq!(resp["principalId"], "u1");
    assert_eq!(resp["policyDocument"]["Statement"][0]["Effect"], "Allow");
    assert_eq!(
        resp["policyDocument"]["Statement"][0]["Resource"],
        "arn:aws:execute-api:eu-west-1:123456789012:abc123/prod/$connect"
    );
    assert_eq!(
        resp["context"],
        json!({"user": "u1", "tenant": tenant, "roles": "student", "groups": "course:42"})
    );
    // The handshake's opt-in to batch frames rides along to every event of the connection.
    let mut opted_in: Value = serde_json::from_str(&text).expect("json");
    opted_in["queryStringParameters"]["batch"] = json!("1");
    let resp = invoke("authorizer", &opted_in).await;
    assert_eq!(resp["context"]["batch"], "1");

    let (status, err) = invoke_raw("authorizer", &fixture("authorizer.json")).await;
    assert_eq!(status, 502, "the placeholder is not a token");
    assert!(err.to_string().contains("Unauthorized"), "{err}");
}

#[tokio::test]
async fn connect_stores_memberships_and_disconnect_removes_them() {
    let tenant = unique("acme");
    let user = unique("u");
    let conn = unique("conn");
    // A durable subscription is joined automatically at connect.
    publish(json!({"control": "subscribe", "tenant": tenant, "user": user, "group": "course:9"})).await;
    eventually("subscription stored", || async {
        (!sort_keys("NotificationsTable", &format!("s#{tenant}#{user}")).await.is_empty()).then_some(())
    })
    .await;

    let event = as_caller(fixture("ws-connect.json"), &conn, &user, &tenant, "");
    let resp = invoke("ws-connect", &event).await;
    assert_eq!(resp["statusCode"], 200);
    assert_eq!(
        resp["headers"]["sec-websocket-protocol"]
            .as_str()
            .or(resp["headers"]["Sec-WebSocket-Protocol"].as_str()),
        Some("herald.v1")
    );
    assert_eq!(sort_keys("ConnectionsTable", &format!("c#{conn}")).await, vec!["#meta".to_owned()]);
    assert_eq!(
        groups_of(&conn).await,
        vec!["all".to_owned(), "course:9".into(), "tenant".into(), format!("user:{user}")]
    );
    assert_eq!(
        sort_keys("ConnectionsTable", &format!("g#{tenant}#user:{user}#0")).await,
        vec![conn.clone()]
    );
    let tenant_membership = memberships_of(&conn)
        .await
        .into_iter()
        .find(|m| m.starts_with("tenant#"))
        .expect("tenant membership");
    let shard = tenant_membership.trim_start_matches("tenant#").to_owned();
    assert_eq!(
        sort_keys("ConnectionsTable", &format!("g#{tenant}#tenant#{shard}")).await,
        vec![conn.clone()]
    );

    let event = as_caller(fixture("ws-disconnect.json"), &conn, &user, &tenant, "");
    assert_eq!(invoke("ws-disconnect", &event).await["statusCode"], 200);
    assert!(sort_keys("ConnectionsTable", &format!("c#{conn}")).await.is_empty());
    assert!(sort_keys("ConnectionsTable", &format!("g#{tenant}#user:{user}#0")).await.is_empty());
    // Idempotent: a repeated $disconnect is fine.
    assert_eq!(invoke("ws-disconnect", &event).await["statusCode"], 200);
}

#[tokio::test]
async fn join_and_leave_fixtures_change_memberships_of_a_live_connection() {
    let tenant = unique("acme");
    let user = unique("u");
    let mut client = Client::connect(&user, &tenant, &[], &["course:42"]).await;
    let conn = client.connection_id().await;

    let resp = invoke("ws-join", &as_caller(fixture("ws-join.json"), &conn, &user, &tenant, "course:42")).await;
    assert_eq!(body_json(&resp), json!({"type": "joined", "group": "course:42", "ref": "c1"}));
    let member = memberships_of(&conn)
        .await
        .into_iter()
        .find(|m| m.starts_with("course:42#"))
        .expect("membership recorded");
    let course_shard = format!("g#{tenant}#course:42#{}", member.trim_start_matches("course:42#"));
    assert!(sort_keys("ConnectionsTable", &course_shard).await.contains(&conn));
    publish(json!({"tenant": tenant, "to": {"group": "course:42"}, "event": "class.starting", "title": "now"})).await;
    assert_eq!(client.notification().await["topic"], "course:42");

    // Without the entitlement in the authorizer context, the same fixture is refused.
    let denied = invoke("ws-join", &as_caller(fixture("ws-join.json"), &conn, &user, &tenant, "")).await;
    let denied_body = body_json(&denied);
    assert_eq!(
        (denied_body["code"].as_str(), denied_body["ref"].as_str()),
        (Some("forbidden"), Some("c1"))
    );

    let resp = invoke("ws-join", &as_caller(fixture("ws-leave.json"), &conn, &user, &tenant, "course:42")).await;
    assert_eq!(body_json(&resp), json!({"type": "left", "group": "course:42", "ref": "c2"}));
    assert!(!groups_of(&conn).await.contains(&"course:42".to_owned()));
    assert!(!sort_keys("ConnectionsTable", &course_shard).await.contains(&conn));
}

#[tokio::test]
async fn message_fixtures_ping_ack_and_resume() {
    let tenant = unique("acme");
    let user = unique("u");
    let mut client = Client::connect(&user, &tenant, &[], &[]).await;
    client.catch_up().await;
    let conn = client.connection_id().await;

    let pong = invoke("ws-message", &as_caller(fixture("ws-message-ping.json"), &conn, &user, &tenant, "")).await;
    assert_eq!(body_json(&pong), json!({"type": "pong", "ref": "c5"}));

    let acked = invoke("ws-message", &as_caller(fixture("ws-message-ack.json"), &conn, &user, &tenant, "")).await;
    let acked = body_json(&acked);
    assert_eq!(
        (acked["type"].as_str(), acked["count"].as_u64(), acked["ref"].as_str()),
        (Some("acked"), Some(1), Some("c4")),
        "{acked}"
    );
    assert_eq!(acked["unread"], 0, "nothing else was logged for the user: {acked}");
    // The read mark, and the user's read sequence the count was taken under (#33).
    assert_eq!(
        sort_keys("NotificationsTable", &format!("r#{tenant}#{user}")).await,
        vec!["#seq".to_owned(), "m#n-1".to_owned()]
    );

    publish(json!({"tenant": tenant, "to": {"user": user}, "event": "e", "title": "one"})).await;
    let live = client.notification().await;
    // The resume runs on the user's other connection: this one would be spared what it got live.
    let mut other = Client::connect(&user, &tenant, &[], &[]).await;
    let other_id = connection_ids_of(&user)
        .await
        .into_iter()
        .find(|c| *c != conn)
        .expect("the second connection is registered before it opens");
    let read_from = herald::domain::cursor::now_millis();
    let resumed = invoke(
        "ws-message",
        &as_caller(fixture("ws-message-resume.json"), &other_id, &user, &tenant, ""),
    )
    .await;
    let read_by = herald::domain::cursor::now_millis();
    // The replayed frame went to the real connection through @connections ...
    let replayed = other.notification().await;
    assert_eq!(
        (replayed["id"].clone(), replayed["replayed"].clone()),
        (live["id"].clone(), json!(true))
    );
    // ... and the answer is the route response.
    let body = body_json(&resumed);
    assert_eq!(
        (body["type"].as_str(), body["count"].as_u64(), body["ref"].as_str()),
        (Some("resumed"), Some(1), Some("c3"))
    );
    // The resume point trails the visibility horizon (the clock at the read's start minus the
    // lag): behind a notification as fresh as this one, unless the machine is so slow that the
    // horizon passed it before the read. The read began between `read_from` and `read_by`.
    let parse = |v: &Value| v.as_str().and_then(|c| c.parse::<herald::domain::cursor::Cursor>().ok());
    let (position, newest) = (parse(&body["cursor"]).expect("a cursor"), parse(&live["cursor"]).expect("a cursor"));
    let horizon = herald::domain::horizon::Horizon::default();
    let since = herald::domain::cursor::Cursor::MIN; // the fixture's
    let (earliest, latest) = (horizon.cap(since, newest, read_from), horizon.cap(since, newest, read_by));
    assert!(earliest <= position && position <= latest, "{body} {live}");
    assert!(
        read_from >= newest.millis() + herald::domain::horizon::LAG_MS || position < newest,
        "{body} {live}"
    );
}

#[tokio::test]
async fn message_fixture_publish_reaches_the_other_member() {
    let tenant = unique("acme");
    let (alice, bob) = (unique("alice"), unique("bob"));
    let mut a = Client::connect(&alice, &tenant, &[], &["room:7"]).await;
    let mut b = Client::connect(&bob, &tenant, &[], &["room:7"]).await;
    a.join("room:7").await;
    b.join("room:7").await;
    let conn = a.connection_id().await;
    let resp = invoke(
        "ws-message",
        &as_caller(fixture("ws-message-publish.json"), &conn, &alice, &tenant, "room:7"),
    )
    .await;
    let published = body_json(&resp);
    assert_eq!(
        (published["type"].as_str(), published["ref"].as_str()),
        (Some("published"), Some("p1")),
        "{published}"
    );
    let got = b.notification().await;
    assert_eq!(got["id"], published["id"]);
    assert_eq!(got["from"], json!({"user": alice}));
    assert_eq!(got["body"], "Hello, room");
}

#[tokio::test]
async fn dispatch_fixture_delivers_logs_and_dead_letters_the_bad_record() {
    let tenant = unique("acme");
    let mut client = Client::connect("u1", &tenant, &[], &["course:42"]).await;
    client.join("course:42").await;
    let marker = unique("broken");
    let mut event = fixture("dispatch.json");
    for record in event["Records"].as_array_mut().expect("records") {
        let mut body: Value = serde_json::from_str(record["body"].as_str().expect("body")).expect("json");
        body["tenant"] = json!(tenant);
        if body["event"] == "broken" {
            body["event"] = json!(marker);
        }
        if body.get("id").is_some() {
            body["id"] = json!(unique("grade"));
        }
        record["messageId"] = json!(unique("msg"));
        record["body"] = json!(body.to_string());
    }
    let resp = invoke("dispatch", &event).await;
    assert_eq!(resp["batchItemFailures"], json!([]), "the bad record is not retried");
    let mut topics = vec![
        client.notification().await["topic"].clone(),
        client.notification().await["topic"].clone(),
    ];
    topics.sort_by_key(|t| t.to_string());
    assert_eq!(topics, vec![json!("course:42"), json!("user:u1")]);
    assert_eq!(
        sort_keys("NotificationsTable", &format!("n#{tenant}#user:u1")).await.len(),
        1,
        "logged"
    );
    let dead = find_message("DispatchDeadLetterQueue", &marker).await;
    let reason = dead
        .message_attributes()
        .and_then(|a| a.get("reason"))
        .and_then(|v| v.string_value())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(reason, "bad_request");
    let detail = dead
        .message_attributes()
        .and_then(|a| a.get("detail"))
        .and_then(|v| v.string_value())
        .unwrap_or_default()
        .to_owned();
    assert!(detail.starts_with("to.nobody"), "{detail}");
}

#[tokio::test]
async fn retry_fixture_reposts_to_the_listed_connection() {
    let tenant = unique("acme");
    let mut client = Client::connect(&unique("u"), &tenant, &[], &[]).await;
    let conn = client.connection_id().await;
    let mut event = fixture("retry.json");
    let mut job: Value = serde_json::from_str(event["Records"][0]["body"].as_str().expect("body")).expect("json");
    job["connections"] = json!([conn]);
    event["Records"][0]["body"] = json!(job.to_string());
    assert_eq!(invoke("retry", &event).await["batchItemFailures"], json!([]));
    let n = client.notification().await;
    assert_eq!(
        (n["id"].as_str(), n["title"].as_str()),
        (Some("grade-7781"), Some("Assignment graded"))
    );
}

#[tokio::test]
async fn reminder_fixture_fires_once() {
    let tenant = unique("acme");
    let mut client = Client::connect("u1", &tenant, &[], &["course:42"]).await;
    client.join("course:42").await;
    let mut input = fixture("reminder.json");
    input["tenant"] = json!(tenant);
    input["id"] = json!(unique("reminder"));
    assert_eq!(invoke("reminder", &input).await, json!({"fired": true}));
    assert_eq!(client.notification().await["title"], "Class starts in 5 minutes");
    // Scheduler delivers at least once: a second fire is skipped.
    assert_eq!(invoke("reminder", &input).await, json!({"fired": false, "reason": "already fired"}));
    client.expect_silence(std::time::Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn api_fixtures_publish_and_list_missed() {
    let tenant = unique("acme");
    let user = unique("u");
    let service = token("svc", &tenant, &["service"], &[]);
    let text = fixture("api-publish.json").to_string().replace("REPLACE_WITH_JWT", &service);
    let mut event: Value = serde_json::from_str(&text).expect("json");
    let id = unique("grade");
    event["body"] = json!(
        json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "assignment.graded", "title": "Assignment graded"}).to_string()
    );
    let resp = invoke("api", &event).await;
    assert_eq!(resp["statusCode"], 202, "{resp}");
    assert_eq!(body_json(&resp), json!({"id": id}));

    let text = fixture("api-missed.json")
        .to_string()
        .replace("REPLACE_WITH_JWT", &token(&user, &tenant, &[], &[]));
    let event: Value = serde_json::from_str(&text).expect("json");
    let body = eventually("published notification is missed", || async {
        let resp = invoke("api", &event).await;
        let body = body_json(&resp);
        (body["items"].as_array().map(Vec::len) == Some(1)).then_some(body)
    })
    .await;
    assert_eq!(body["items"][0]["id"], id.as_str());
    assert_eq!(body["next"], Value::Null);
}
