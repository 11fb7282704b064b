//! The connection layer end to end: handshake auth, join/leave authorization, resume, limits and
//! the `@connections` API, against the local stack.

use std::time::Duration;

use herald::io::delivery::PostOutcome;
use herald_e2e::*;
use serde_json::{Value, json};

fn note(tenant: &str, to: Value, title: &str) -> Value {
    json!({"tenant": tenant, "to": to, "event": "test.event", "title": title})
}

#[tokio::test]
async fn connect_join_publish_receive() {
    let tenant = unique("acme");
    let group = format!("course:{}", unique("c"));
    let mut alice = Client::connect(&unique("alice"), &tenant, &[], &[&group]).await;
    let joined = alice
        .request(json!({"action": "join", "group": group, "ref": "c1"}), "joined")
        .await;
    assert_eq!(joined, json!({"type": "joined", "group": group, "ref": "c1"}));
    alice.catch_up().await;

    publish(note(&tenant, json!({"group": group}), "Class starts in 5 minutes")).await;
    let n = alice.notification().await;
    assert_eq!(n["topic"], group.as_str());
    assert_eq!(n["title"], "Class starts in 5 minutes");
    assert_eq!(n["event"], "test.event");
    assert!(n["id"].is_string() && n["cursor"].as_str().is_some_and(|c| c.len() == 26));
    assert!(n.get("replayed").is_none());
}

#[tokio::test]
async fn personal_and_tenant_groups_are_joined_automatically() {
    let tenant = unique("acme");
    let user = unique("bob");
    let mut bob = Client::connect(&user, &tenant, &[], &[]).await;
    publish(note(&tenant, json!({"user": user}), "just you")).await;
    assert_eq!(bob.notification().await["topic"], format!("user:{user}"));
    publish(note(&tenant, json!({"tenant": true}), "everyone")).await;
    assert_eq!(bob.notification().await["topic"], "tenant");
}

#[tokio::test]
async fn disconnect_then_resume_returns_missed_exactly_once() {
    let tenant = unique("acme");
    let user = unique("carol");
    let mut carol = Client::connect(&user, &tenant, &[], &[]).await;
    carol.catch_up().await;
    publish(note(&tenant, json!({"user": user}), "first")).await;
    let first = carol.notification().await;
    carol.close().await;
    eventually("connection removed", || async {
        connection_ids_of(&user).await.is_empty().then_some(())
    })
    .await;

    // Over a second later, so that `first`'s fan-out ended well before this one's cursor.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    publish(note(&tenant, json!({"user": user}), "while away")).await;
    // Wait until dispatch has logged it (through the HTTP API), so the reconnect below cannot
    // receive it live: it must come from `resume`.
    let since = first["cursor"].as_str().unwrap_or_default().to_owned();
    let tok = token(&user, &tenant, &[], &[]);
    let logged = eventually("logged", || async {
        let v = api(reqwest::Method::GET, &format!("/notifications/missed?since={since}"), &tok, None)
            .await
            .1;
        // From `first`'s cursor the read starts a lag before it, but `first` itself, whose
        // frame carried that cursor, is read past.
        let titles: Vec<Value> = v["items"].as_array().into_iter().flatten().map(|i| i["title"].clone()).collect();
        (titles == [json!("while away")]).then_some(v)
    })
    .await;
    assert_eq!(logged["items"][0]["title"], "while away");
    // A read hands out only cursors claimed more than the clock skew before it began (newer
    // entries go out without one): past that, the replayed frame below carries its cursor.
    tokio::time::sleep(Duration::from_millis(herald::domain::horizon::SKEW_MS + 50)).await;

    let mut again = Client::connect(&user, &tenant, &[], &[]).await;
    // Any cursor is a resume point: the read starts a lag before it, so entries the client
    // holds (`first` here) would come again; `have` spares them.
    again
        .send(json!({"action": "resume", "since": first["cursor"], "have": [first["id"]], "ref": "r1"}))
        .await;
    let replayed = again.next().await;
    assert_eq!(replayed["type"], "notification");
    assert_eq!(replayed["title"], "while away");
    assert_eq!(replayed["replayed"], true);
    let resumed = again.next().await;
    assert_eq!(resumed["type"], "resumed");
    assert_eq!(resumed["count"], 1);
    assert_eq!(resumed["more"], false);
    assert_eq!(resumed["ref"], "r1");
    // The resume point never passes the visibility horizon (10 s behind the clock): it stays
    // at `since` here, behind the fresh entry, which a later resume would send again...
    assert_eq!(resumed["cursor"], first["cursor"]);
    // ... unless the client says it has it: read past, not posted again.
    let r = again
        .request(
            json!({"action": "resume", "since": resumed["cursor"], "have": [first["id"], replayed["id"]]}),
            "resumed",
        )
        .await;
    assert_eq!((r["count"].clone(), r["more"].clone()), (json!(0), json!(false)));
    again.expect_silence(Duration::from_millis(300)).await;

    // Resuming from the newest cursor, holding both, returns nothing, and the position stays
    // there. Without `have` too: the cursor itself shows the client holds both (`first` was
    // posted to every member before `while away` was claimed; `while away` carried it).
    let r = again
        .request(
            json!({"action": "resume", "since": replayed["cursor"], "have": [first["id"], replayed["id"]]}),
            "resumed",
        )
        .await;
    assert_eq!((r["count"].clone(), r["cursor"].clone()), (json!(0), replayed["cursor"].clone()));
    let r = again
        .request(json!({"action": "resume", "since": replayed["cursor"]}), "resumed")
        .await;
    assert_eq!((r["count"].clone(), r["cursor"].clone()), (json!(0), replayed["cursor"].clone()));
}

/// A connection that opted in (`?batch=1`) gets a resume page packed into messages of at most
/// 32 KB, `{"type":"batch","frames":[…]}`, holding the same frames in the same order as one
/// that did not; that one still gets one message per frame. A full page of 200 two-KB entries
/// is at most 15 messages (issue #31's bound) instead of 200.
#[tokio::test]
async fn a_resume_packs_its_frames_into_batch_messages_only_for_connections_that_opted_in() {
    let tenant = unique("acme");
    let user = unique("reader");
    let body = "b".repeat(1_700);
    let mut ids = Vec::new();
    for i in 0..200 {
        let id = unique("batched");
        publish(json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "t.batch", "title": format!("n{i}"), "body": body}))
            .await;
        ids.push(id);
    }
    for id in &ids {
        posted(&tenant, id).await;
    }
    tokio::time::sleep(Duration::from_millis(herald::domain::horizon::SKEW_MS + 50)).await;

    // Every message up to `resumed`, as it came.
    async fn resume_messages(client: &mut Client) -> Vec<String> {
        client.send(json!({"action": "resume", "ref": "r"})).await;
        let mut messages = Vec::new();
        loop {
            let text = client.next_text_within(Duration::from_secs(20)).await.expect("a frame");
            if text.contains(r#""type":"resumed""#) {
                return messages;
            }
            messages.push(text);
        }
    }
    let mut plain = Client::connect(&user, &tenant, &[], &[]).await;
    let one_each = resume_messages(&mut plain).await;
    let mut batched = Client::connect_batched(&user, &tenant).await;
    let packed = resume_messages(&mut batched).await;

    assert_eq!(one_each.len(), 200, "one message per frame without the opt-in");
    assert!(one_each.iter().all(|m| m.contains(r#""type":"notification""#)));
    let bytes: usize = one_each.iter().map(String::len).sum();
    assert!(
        packed.len() <= 15 && packed.len() >= bytes.div_ceil(32 * 1024),
        "{} messages for {bytes} bytes",
        packed.len()
    );
    assert!(packed.iter().all(|m| m.len() <= 32 * 1024));
    let unpacked: Vec<Value> = packed.iter().flat_map(|m| unpack(m).expect("JSON")).collect();
    let plain_frames: Vec<Value> = one_each.iter().map(|m| serde_json::from_str(m).expect("JSON")).collect();
    assert_eq!(unpacked, plain_frames, "the same frames, in the same order");
}

/// A resume spares what a fan-out posted to this very connection after its join: the client
/// got it live. What was logged before the join is sent, and so is everything for another
/// connection of the same user that joins later (`replay::spare`).
#[tokio::test]
async fn a_resume_spares_what_was_posted_live_to_the_connection_since_its_join() {
    let tenant = unique("acme");
    let user = unique("kim");
    let room = format!("course:{}", unique("c"));
    let send = |title: &str, to: Value| {
        let mut n = note(&tenant, to, title);
        n["id"] = json!(unique(title));
        n
    };
    let before = send("before", json!({"group": room}));
    publish(before.clone()).await;
    dispatched(&tenant, before["id"].as_str().unwrap_or_default()).await;

    let mut c = Client::connect(&user, &tenant, &[], &[&room]).await;
    c.join(&room).await;
    // Entries claimed within the clock skew of the join are sent again, as are those of a
    // connection's first moments: wait past it.
    tokio::time::sleep(Duration::from_millis(herald::domain::horizon::SKEW_MS + 250)).await;
    let mut live_ids = Vec::new();
    for n in [send("after-join", json!({"group": room})), send("personal", json!({"user": user}))] {
        publish(n.clone()).await;
        let got = c.notification().await;
        assert_eq!(got["id"], n["id"]);
        live_ids.push(n["id"].as_str().unwrap_or_default().to_owned());
    }
    for id in &live_ids {
        posted(&tenant, id).await;
    }
    let replayed_titles = |frames: &[Value]| -> Vec<Value> { frames.iter().map(|f| f["title"].clone()).collect() };
    async fn resume(c: &mut Client) -> (Vec<Value>, Value) {
        c.send(json!({"action": "resume", "ref": "r"})).await;
        let mut frames = Vec::new();
        loop {
            let f = c.next().await;
            match f["type"].as_str() {
                Some("notification") => frames.push(f),
                Some("resumed") => return (frames, f),
                _ => panic!("unexpected {f}"),
            }
        }
    }
    let (frames, r) = resume(&mut c).await;
    assert_eq!(replayed_titles(&frames), vec![json!("before")], "{r}");
    assert_eq!(r["count"], 1);

    // The same user's other device, joined now: it got none of them live.
    let mut other = Client::connect(&user, &tenant, &[], &[&room]).await;
    other.join(&room).await;
    let (frames, r) = resume(&mut other).await;
    assert_eq!(
        replayed_titles(&frames),
        vec![json!("before"), json!("after-join"), json!("personal")],
        "{r}"
    );
}

/// Issue "a hostile user cannot hurt anyone else": memberships per connection were unbounded,
/// each one a row every fan-out of the group reads and an entry in the connection item. A
/// connection holds at most 100 (its three automatic ones included); beyond, a join is refused
/// with `bad_request` and nothing is written. Re-joining a group it holds, and joining after a
/// leave, work.
#[tokio::test]
async fn a_connection_holds_at_most_100_groups() {
    let tenant = unique("acme");
    let user = unique("joiner");
    let rooms: Vec<String> = (0..98).map(|i| format!("room:{i}")).collect();
    let claims: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let mut c = Client::connect(&user, &tenant, &[], &claims).await;
    // Within the frame budget (20 a second): a refused join is sent again when it says.
    async fn join(c: &mut Client, room: &str) -> Value {
        loop {
            let r = c.join(room).await;
            match r["retryAfterMs"].as_u64() {
                Some(ms) if r["code"] == "rate_limited" => tokio::time::sleep(Duration::from_millis(ms)).await,
                _ => return r,
            }
        }
    }
    for room in &rooms[..97] {
        assert_eq!(join(&mut c, room).await["type"], "joined");
    }
    let conn = c.connection_id().await;
    assert_eq!(memberships_of(&conn).await.len(), 100);
    let refused = join(&mut c, &rooms[97]).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{refused}"
    );
    assert!(refused["message"].as_str().is_some_and(|m| m.contains("100")), "{refused}");
    assert_eq!(memberships_of(&conn).await.len(), 100);
    for shard in 0..4 {
        assert!(
            sort_keys("ConnectionsTable", &format!("g#{tenant}#{}#{shard}", rooms[97]))
                .await
                .is_empty(),
            "a row was left"
        );
    }
    assert_eq!(join(&mut c, &rooms[3]).await["type"], "joined", "re-joining a group it holds");
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.request(json!({"action": "leave", "group": rooms[0], "ref": "l"}), "left").await;
    assert_eq!(join(&mut c, &rooms[97]).await["type"], "joined");
}

/// Issue "any cursor is a safe resume point", defect 1: live frames arrive out of cursor order.
/// N1 is claimed first, N2 second; N2 reaches the client, which drops before N1 lands (its
/// write was slow). A client that resumes from the last cursor it received (N2's) must still
/// get N1, whose cursor is older.
#[tokio::test]
async fn a_resume_from_the_last_live_cursor_gets_an_entry_that_landed_behind_it() {
    let tenant = unique("acme");
    let user = unique("lee");
    let mut c = Client::connect(&user, &tenant, &[], &[]).await;
    c.catch_up().await;
    let n1_cursor = herald::domain::cursor::Cursor::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    publish(note(&tenant, json!({"user": user}), "n2")).await;
    let n2 = c.notification().await;
    assert!(n2["cursor"].as_str().unwrap_or_default() > n1_cursor.to_string().as_str());
    c.close().await;
    eventually("connection removed", || async {
        connection_ids_of(&user).await.is_empty().then_some(())
    })
    .await;
    // N1 lands now, in time by dispatch's rule, under its claim's cursor: its post found no
    // connection.
    land_late(&tenant, &user, "n1-late", n1_cursor).await;

    let mut again = Client::connect(&user, &tenant, &[], &[]).await;
    let r = again
        .request(json!({"action": "resume", "since": n2["cursor"], "have": [n2["id"]]}), "resumed")
        .await;
    assert_eq!(r["count"], 1, "N1 is replayed: {r}");
    // The frame came before the answer.
    let tok = token(&user, &tenant, &[], &[]);
    let (_, missed) = api(
        reqwest::Method::GET,
        &format!("/notifications/missed?since={}", n2["cursor"].as_str().unwrap_or_default()),
        &tok,
        None,
    )
    .await;
    let ids = item_ids(&missed);
    assert!(ids.contains(&"n1-late"), "missed from N2's cursor has N1 too: {missed}");
}

/// Issue "any cursor is a safe resume point": a cursor received before the connection caught
/// up. A device held N1 (its cursor included), dropped, and N2 was logged while it was away.
/// Over the lag later it reconnects and N3 reaches the new connection live before its resume
/// has run; the connection drops again. A client that resumes from the last cursor it received
/// must still get N2: had N3 carried its cursor, the read would start a lag before N3, past N2.
/// So a connection's live frames carry their cursor only once it has caught up (its first
/// complete resume), and from then on they do, a group joined later included.
#[tokio::test]
async fn a_cursor_received_before_the_catch_up_never_skips_what_was_missed() {
    let tenant = unique("acme");
    let user = unique("dana");
    let course = format!("course:{}", unique("c"));
    let gone = || async {
        eventually("connection removed", || async {
            connection_ids_of(&user).await.is_empty().then_some(())
        })
        .await
    };
    let mut a = Client::connect(&user, &tenant, &[], &[]).await;
    a.catch_up().await;
    publish(note(&tenant, json!({"user": user}), "n1")).await;
    let n1 = a.notification().await;
    assert!(n1["cursor"].is_string(), "caught up: {n1}");
    a.close().await;
    gone().await;

    let n2_id = unique("n2");
    let mut n2 = note(&tenant, json!({"user": user}), "n2");
    n2["id"] = json!(n2_id);
    publish(n2).await;
    dispatched(&tenant, &n2_id).await;
    tokio::time::sleep(Duration::from_millis(herald::domain::horizon::LAG_MS + 1_000)).await;

    let mut b = Client::connect(&user, &tenant, &[], &[]).await;
    publish(note(&tenant, json!({"user": user}), "n3")).await;
    let n3 = b.notification().await;
    b.close().await;
    gone().await;

    // The last cursor this client received.
    let last = n3.get("cursor").unwrap_or(&n1["cursor"]).clone();
    let mut c = Client::connect(&user, &tenant, &[], &[&course]).await;
    c.send(json!({"action": "resume", "since": last, "have": [n1["id"], n3["id"]], "ref": "r"}))
        .await;
    let mut replayed = Vec::new();
    let resumed = loop {
        let f = c.next().await;
        match f["type"].as_str() {
            Some("notification") => replayed.push(f["title"].clone()),
            Some("resumed") => break f,
            _ => panic!("unexpected {f}"),
        }
    };
    assert_eq!(replayed, vec![json!("n2")], "resumed from {last}: {resumed}");
    assert_eq!(resumed["more"], false, "{resumed}");
    assert_eq!(n3.get("cursor"), None, "a live frame before the catch-up carries no cursor: {n3}");

    // Caught up now: live frames carry their cursor, those of a group joined afterwards too.
    publish(note(&tenant, json!({"user": user}), "n4")).await;
    let n4 = c.notification().await;
    assert!(n4["cursor"].as_str().is_some_and(|cur| cur.len() == 26), "{n4}");
    assert_eq!(c.join(&course).await["type"], "joined");
    publish(note(&tenant, json!({"group": course}), "n5")).await;
    let n5 = c.notification().await;
    assert!(n5["cursor"].as_str().is_some_and(|cur| cur.len() == 26), "{n5}");
}

/// Writes a log entry as dispatch does when its write was slow: under the claim's cursor while
/// that still lands in time, under a fresh one otherwise (`horizon`).
async fn land_late(tenant: &str, user: &str, id: &str, claimed: herald::domain::cursor::Cursor) {
    let store = store().await;
    let horizon = herald::domain::horizon::Horizon::default();
    let mut cursor = horizon.write_cursor(claimed, herald::domain::cursor::now_millis());
    loop {
        let entry = herald::domain::notification::LogEntry {
            id: id.into(),
            cursor,
            topic: format!("user:{user}"),
            content: herald::domain::notification::Content {
                event: "late".into(),
                ..Default::default()
            },
            created_at: "2026-12-06T00:00:00Z".into(),
        };
        let expires = chrono::Utc::now().timestamp() + 3600;
        store
            .log
            .append(tenant, &[(herald::domain::groups::Group::user(user), entry)], expires)
            .await
            .expect("append");
        if horizon.landed_now(cursor) {
            break;
        }
        cursor = herald::domain::cursor::Cursor::now();
    }
}

#[tokio::test]
async fn posting_to_a_closed_connection_is_410() {
    let user = unique("dave");
    let mut dave = Client::connect(&user, &unique("acme"), &[], &[]).await;
    let id = dave.connection_id().await;
    let poster = poster().await;
    assert_eq!(poster.post(&id, r#"{"type":"hello"}"#).await, PostOutcome::Delivered);
    assert_eq!(
        dave.next_within(Duration::from_secs(5)).await.map(|f| f["type"].clone()),
        Some(json!("hello"))
    );
    dave.close().await;
    assert_eq!(poster.post(&id, "{}").await, PostOutcome::Gone);
    assert_eq!(poster.post("nope", "{}").await, PostOutcome::Gone);
    assert_eq!(poster.disconnect("nope").await, PostOutcome::Gone);
}

/// `@connections` is IAM-authorized, as on AWS: what Herald's poster signs is accepted (above),
/// an unsigned call is refused and delivers nothing.
#[tokio::test]
async fn unsigned_management_calls_are_refused() {
    let mut erin = Client::connect(&unique("erin"), &unique("acme"), &[], &[]).await;
    let id = erin.connection_id().await;
    let url = format!("{}/@connections/{id}", stack().ready.management_endpoint);
    let refused = http().post(&url).body(r#"{"type":"forged"}"#).send().await.expect("post");
    assert_eq!(refused.status().as_u16(), 403);
    assert_eq!(poster().await.post(&id, r#"{"type":"signed"}"#).await, PostOutcome::Delivered);
    assert_eq!(
        erin.next_within(Duration::from_secs(5)).await.map(|f| f["type"].clone()),
        Some(json!("signed"))
    );
}

#[tokio::test]
async fn oversize_frame_closes_with_1009() {
    let mut c = Client::connect(&unique("erin"), &unique("acme"), &[], &[]).await;
    let big = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(33 * 1024));
    let _ = c.send_text(big).await;
    assert_eq!(c.close_code().await, Some(1009));
}

#[tokio::test]
async fn bad_tokens_are_refused_at_the_handshake() {
    let url = &stack().ready.websocket_url;
    assert_eq!(refused_status(url, None).await, Some(401), "no token");
    assert_eq!(refused_status(&format!("{url}?token=garbage"), None).await, Some(401), "garbage");
    let expired = token_with(json!({"sub": "u1", "tenant": "acme", "exp": 1_000_000}));
    assert_eq!(refused_status(&format!("{url}?token={expired}"), None).await, Some(401), "expired");
    let wrong_aud = token_with(json!({"sub": "u1", "tenant": "acme", "aud": "someone-else"}));
    assert_eq!(
        refused_status(&format!("{url}?token={wrong_aud}"), None).await,
        Some(401),
        "audience"
    );
    let no_tenant = token_with(json!({"sub": "u1"}));
    assert_eq!(refused_status(&format!("{url}?token={no_tenant}"), None).await, Some(401), "tenant");
}

#[tokio::test]
async fn token_as_subprotocol_is_answered_with_herald_v1() {
    let t = token(&unique("fay"), &unique("acme"), &[], &[]);
    let url = &stack().ready.websocket_url;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).expect("request");
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", format!("herald.v1, {t}").parse().expect("header"));
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("connect with subprotocol");
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()),
        Some("herald.v1")
    );
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(r#"{"action":"ping","ref":"p"}"#))
        .await
        .expect("send");
    let pong = ws.next().await.expect("frame").expect("ok");
    assert_eq!(
        serde_json::from_str::<Value>(pong.to_text().expect("text")).expect("json"),
        json!({"type":"pong","ref":"p"})
    );
}

#[tokio::test]
async fn joins_are_authorized_server_side() {
    let tenant = unique("acme");
    let me = unique("gus");
    let mut c = Client::connect(&me, &tenant, &["student"], &["course:1"]).await;
    let cases = [
        (format!("user:{}", unique("other")), "forbidden"),
        ("course:2".to_owned(), "forbidden"),
        ("all".to_owned(), "forbidden"),
        ("Course:1".to_owned(), "bad_request"),
        ("tenant:other".to_owned(), "bad_request"),
        ("course".to_owned(), "bad_request"),
        (format!("course:{}", "9".repeat(129)), "bad_request"),
        ("course:a b".to_owned(), "bad_request"),
    ];
    for (group, code) in cases {
        let r = c.request(json!({"action": "join", "group": group, "ref": "x"}), "joined").await;
        assert_eq!(
            (r["type"].as_str(), r["code"].as_str(), r["ref"].as_str()),
            (Some("error"), Some(code), Some("x")),
            "join {group}"
        );
    }
    assert_eq!(c.join("course:1").await["type"], "joined");
    assert_eq!(c.join(&format!("user:{me}")).await["type"], "joined");

    // A refused join changed nothing: course:2 notifications do not arrive.
    publish(note(&tenant, json!({"group": "course:2"}), "not for you")).await;
    publish(note(&tenant, json!({"group": "course:1"}), "for you")).await;
    assert_eq!(c.notification().await["title"], "for you");
    c.expect_silence(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn role_policy_and_durable_subscriptions_entitle_joins() {
    let tenant = unique("acme");
    let student = unique("hal");
    let mut instructor = Client::connect(&unique("ida"), &tenant, &["instructor"], &[]).await;
    assert_eq!(
        instructor.join("course:77").await["type"],
        "joined",
        "instructor=course in the role policy"
    );
    assert_eq!(
        instructor.join("order:1").await["code"],
        "forbidden",
        "instructors get course and room only"
    );

    let mut s = Client::connect(&student, &tenant, &["student"], &[]).await;
    assert_eq!(s.join("course:77").await["code"], "forbidden");
    publish(json!({"control": "subscribe", "tenant": tenant, "user": student, "group": "course:77"})).await;
    eventually("subscription applied", || async {
        let mut probe = Client::connect(&student, &tenant, &["student"], &[]).await;
        let ok = probe.join("course:77").await["type"] == "joined";
        probe.close().await;
        ok.then_some(())
    })
    .await;
    assert_eq!(s.join("course:77").await["type"], "joined");

    // Unsubscribing through the queue takes the live membership away too.
    publish(json!({"control": "unsubscribe", "tenant": tenant, "user": student, "group": "course:77"})).await;
    assert_eq!(
        s.next().await,
        json!({"type": "left", "group": "course:77", "reason": "unsubscribed"})
    );
    publish(note(&tenant, json!({"group": "course:77"}), "instructors only now")).await;
    assert_eq!(instructor.notification().await["title"], "instructors only now");
    s.expect_silence(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn tenants_never_meet() {
    let group = "course:42";
    let (acme, globex) = (unique("acme"), unique("globex"));
    let mut a = Client::connect(&unique("ann"), &acme, &[], &[group]).await;
    let mut g = Client::connect(&unique("gil"), &globex, &[], &[group]).await;
    a.join(group).await;
    g.join(group).await;
    publish(note(&acme, json!({"group": group}), "acme only")).await;
    assert_eq!(a.notification().await["title"], "acme only");
    g.expect_silence(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn resume_never_replays_a_group_left_or_never_joined() {
    let tenant = unique("acme");
    let user = unique("ivy");
    // Logged before the connection opened: a resume sends it (posted to no connection).
    let before = unique("before");
    let mut n = note(&tenant, json!({"user": user}), "before");
    n["id"] = json!(before);
    publish(n).await;
    dispatched(&tenant, &before).await;
    let mut c = Client::connect(&user, &tenant, &[], &["room:1", "room:2"]).await;
    c.join("room:1").await;
    let left = c.request(json!({"action": "leave", "group": "room:1", "ref": "l"}), "left").await;
    assert_eq!(left, json!({"type": "left", "group": "room:1", "ref": "l"}));
    publish(note(&tenant, json!({"group": "room:1"}), "left group")).await;
    publish(note(&tenant, json!({"group": "room:3"}), "never entitled")).await;
    // Past the clock skew after the connect, so the marker is spared as received live.
    tokio::time::sleep(Duration::from_millis(herald::domain::horizon::SKEW_MS + 250)).await;
    let marker = unique("marker");
    let mut n = note(&tenant, json!({"user": user}), "marker");
    n["id"] = json!(marker);
    publish(n).await;
    assert_eq!(c.notification().await["title"], "marker");
    posted(&tenant, &marker).await;
    let r = c.request(json!({"action": "resume"}), "resumed").await;
    // Only the personal entry from before is replayed (the marker came live).
    assert_eq!(r["count"], 1, "{r}");
}

#[tokio::test]
async fn malformed_frames_get_error_frames() {
    let mut c = Client::connect(&unique("jo"), &unique("acme"), &[], &[]).await;
    c.send_text("not json".into()).await.expect("send");
    assert_eq!(c.next().await["code"], "bad_request");
    assert_eq!(
        c.request(json!({"action": "dance", "ref": 7}), "x").await,
        json!({"type":"error","code":"unknown_action","message":"unknown action \"dance\"","ref":7})
    );
    assert_eq!(
        c.request(json!({"action": "resume", "since": "nope"}), "resumed").await["code"],
        "bad_request"
    );
    assert_eq!(c.request(json!({"action": "ack", "ids": []}), "acked").await["code"], "bad_request");
    assert_eq!(
        c.request(json!({"action": "ping", "ref": "p"}), "pong").await,
        json!({"type":"pong","ref":"p"})
    );
    // The answer carries the user's unread count after the read, and its read sequence (#33).
    let acked = c.request(json!({"action": "ack", "ids": ["a", "b"], "ref": "k"}), "acked").await;
    assert_eq!(
        (acked["type"].as_str(), acked["count"].as_u64(), acked["ref"].as_str()),
        (Some("acked"), Some(2), Some("k")),
        "{acked}"
    );
    assert!(acked["unread"].is_u64() && acked["seq"].is_u64(), "{acked}");
}

#[tokio::test]
async fn resume_pages_past_expired_entries_without_losing_later_ones() {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    let tenant = unique("acme");
    let user = unique("kim");
    // 250 log entries past their TTL that DynamoDB has not swept yet (moto never does).
    let now_ms = chrono::Utc::now().timestamp_millis() as u64;
    let expired_at = (now_ms / 1000 - 10).to_string();
    let writes: Vec<WriteRequest> = (0..250u64)
        .map(|i| {
            let cursor = herald::domain::cursor::Cursor::from_parts(now_ms - 60_000 + i, 0).to_string();
            let item = [
                ("pk", format!("n#{tenant}#user:{user}")),
                ("sk", cursor),
                ("id", format!("old-{i}")),
                ("topic", format!("user:{user}")),
                ("content", r#"{"event":"old"}"#.to_owned()),
                ("createdAt", "2026-11-23T00:00:00Z".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), AttributeValue::S(v)))
            .chain([("expiresAt".to_owned(), AttributeValue::N(expired_at.clone()))])
            .collect();
            WriteRequest::builder()
                .put_request(PutRequest::builder().set_item(Some(item)).build().expect("put"))
                .build()
        })
        .collect();
    let db = dynamodb().await;
    for chunk in writes.chunks(25) {
        db.batch_write_item()
            .request_items(table("NotificationsTable"), chunk.to_vec())
            .send()
            .await
            .expect("seed");
    }
    let mut live = Client::connect(&user, &tenant, &[], &[]).await;
    publish(note(&tenant, json!({"user": user}), "valid")).await;
    assert_eq!(live.notification().await["title"], "valid");

    // Read from another connection, which did not get it live.
    let mut c = Client::connect(&user, &tenant, &[], &[]).await;
    let mut replayed = Vec::new();
    let mut page = Value::Null;
    for _ in 0..5 {
        c.send(json!({"action": "resume", "page": page})).await;
        let done = loop {
            let f = c.next().await;
            match f["type"].as_str() {
                Some("notification") => replayed.push(f["title"].clone()),
                Some("resumed") => break f,
                _ => panic!("unexpected {f}"),
            }
        };
        if done["more"] == false {
            break;
        }
        page = done["next"].clone();
    }
    assert_eq!(replayed, vec![json!("valid")], "expired entries are skipped, later ones are not");
}
