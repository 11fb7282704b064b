//! The HTTP API end to end: every route's success, auth failures, wrong roles, cross-tenant
//! access, pagination, and error bodies.

use std::time::Duration;

use herald::domain::cursor::{Cursor, now_millis};
use herald::domain::groups::Group;
use herald::domain::notification::{Content, LogEntry};
use herald::io::store::Store;
use herald_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

/// `HERALD_REMINDER_MAX_PENDING` in `TEST_ENV`.
const REMINDER_CAP: usize = 10;

fn later(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Publishes `n` notifications to `user` and waits until `missed` shows all of them.
async fn seed(tenant: &str, user: &str, n: usize) -> Vec<Value> {
    for i in 0..n {
        publish(json!({"tenant": tenant, "to": {"user": user}, "event": "seed", "title": format!("n{i}")})).await;
    }
    let tok = token(user, tenant, &[], &[]);
    eventually("seeded notifications logged", || async {
        let (_, v) = api(Method::GET, "/notifications/missed?limit=200", &tok, None).await;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        // Logged, and claimed long enough before the read that it hands out their cursors
        // (`replay::ReadPlan::shows_cursor`).
        (items.len() == n && items.iter().all(|i| i["cursor"].is_string())).then_some(items)
    })
    .await
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn missed_pages_in_cursor_order_across_topics() {
    let tenant = unique("acme");
    let user = unique("u");
    // Three topics the user may read: personal, tenant, and a group from the token's claim.
    for (to, title) in [
        (json!({"user": user}), "a"),
        (json!({"tenant": true}), "b"),
        (json!({"group": "course:5"}), "c"),
        (json!({"user": user}), "d"),
        (json!({"group": "course:6"}), "not entitled"),
    ] {
        publish(json!({"tenant": tenant, "to": to, "event": "e", "title": title})).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let tok = token(&user, &tenant, &[], &["course:5"]);
    let all = eventually("four readable notifications", || async {
        let (_, v) = api(Method::GET, "/notifications/missed", &tok, None).await;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 4 && items.iter().all(|i| i["cursor"].is_string())).then_some(v)
    })
    .await;
    let cursors: Vec<String> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["cursor"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut sorted = cursors.clone();
    sorted.sort();
    assert_eq!(cursors, sorted, "merged in cursor order");
    let topics: Vec<&str> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["topic"].as_str())
        .collect();
    assert!(
        topics.contains(&"tenant") && topics.contains(&"course:5") && !topics.contains(&"course:6"),
        "{topics:?}"
    );

    // Pages of two: two pages, then an empty one at the newest cursor.
    let (s, p1) = api(Method::GET, "/notifications/missed?limit=2", &tok, None).await;
    assert_eq!((s, p1["items"].as_array().map(Vec::len)), (200, Some(2)));
    let next = p1["next"].as_str().expect("a next cursor").to_owned();
    let read_from = herald::domain::cursor::now_millis();
    let (_, p2) = api(Method::GET, &format!("/notifications/missed?limit=2&page={next}"), &tok, None).await;
    let read_by = herald::domain::cursor::now_millis();
    assert_eq!(p2["items"].as_array().map(Vec::len), Some(2));
    let ids: Vec<&Value> = p1["items"]
        .as_array()
        .into_iter()
        .chain(p2["items"].as_array())
        .flatten()
        .map(|i| &i["id"])
        .collect();
    assert_eq!(
        ids,
        all["items"].as_array().expect("items").iter().map(|i| &i["id"]).collect::<Vec<_>>()
    );
    assert_eq!(p2["next"], Value::Null, "nothing after the second page");
    // The poller's position trails the visibility horizon (`horizon`) of every read that covered
    // it, and never goes back: page 2's is page 1's, or as far as page 2's horizon allows.
    let parse = |c: &Value| {
        c.as_str()
            .expect("cursor")
            .parse::<herald::domain::cursor::Cursor>()
            .expect("a cursor")
    };
    let horizon = herald::domain::horizon::Horizon::default();
    let (first_position, position) = (parse(&p1["cursor"]), parse(&p2["cursor"]));
    assert!(first_position <= horizon.safe_at(read_from.max(herald::domain::cursor::now_millis())));
    assert!(
        first_position <= position && position <= first_position.max(horizon.safe_at(read_by)),
        "position {position} outside [{first_position}, horizon at {read_by}]"
    );
    // From the position, every item after it comes again (and the lag's worth before it).
    let (_, again) = api(Method::GET, &format!("/notifications/missed?since={position}"), &tok, None).await;
    let again_ids: Vec<&Value> = again["items"].as_array().into_iter().flatten().map(|i| &i["id"]).collect();
    for item in p2["items"].as_array().into_iter().flatten() {
        if parse(&item["cursor"]) > position {
            assert!(again_ids.contains(&&item["id"]), "{} missing from {again}", item["id"]);
        }
    }
    // From the newest item itself the position stays there.
    let newest = p2["items"][1]["cursor"].clone();
    let (_, p3) = api(
        Method::GET,
        &format!("/notifications/missed?since={}", newest.as_str().unwrap_or_default()),
        &tok,
        None,
    )
    .await;
    assert_eq!(
        (p3["cursor"].clone(), p3["next"].clone(), p3["gap"].clone()),
        (newest, Value::Null, json!(false))
    );
}

/// Issue "any cursor is a safe resume point", defect 2: paging fresh entries with `next`
/// handed out, on the last page, a resume point seconds past the horizon of the read, so a
/// write landing late behind it was lost after the next drop.
#[tokio::test]
async fn no_page_of_missed_hands_out_a_resume_point_past_the_horizon() {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    let tenant = unique("acme");
    let user = unique("u");
    let tok = token(&user, &tenant, &[], &[]);
    // 150 entries written a few seconds ago (straight into the log: publishing 150 takes longer
    // than the horizon's lag on a busy machine).
    let now_ms = herald::domain::cursor::now_millis();
    let writes: Vec<WriteRequest> = (0..150u64)
        .map(|i| {
            let item = [
                ("pk", format!("n#{tenant}#user:{user}")),
                (
                    "sk",
                    herald::domain::cursor::Cursor::from_parts(now_ms - 3_000 + i * 10, 1).to_string(),
                ),
                ("id", format!("fresh-{i}")),
                ("topic", format!("user:{user}")),
                ("content", r#"{"event":"fresh"}"#.to_owned()),
                ("createdAt", "2026-12-06T00:00:00Z".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), AttributeValue::S(v)))
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
    let horizon = herald::domain::horizon::Horizon::default();
    // Both ways a client pages: `next` as `page`, and as `since` (clients that treat it as a
    // cursor, as herald.js did).
    for param in ["page", "since"] {
        let mut query = "limit=50".to_owned();
        let mut seen = 0;
        let mut first_read_by = None;
        for _ in 0..10 {
            let (status, page) = api(Method::GET, &format!("/notifications/missed?{query}"), &tok, None).await;
            assert_eq!(status, 200, "{page}");
            let read_by = *first_read_by.get_or_insert(herald::domain::cursor::now_millis());
            seen += page["items"].as_array().map_or(0, Vec::len);
            let cursor: herald::domain::cursor::Cursor = page["cursor"].as_str().expect("cursor").parse().expect("a cursor");
            assert!(
                cursor <= horizon.safe_at(read_by),
                "{param}: a page's resume point {cursor} is past the horizon of the first read ({} s)",
                (cursor.millis() as i64 - horizon.safe_at(read_by).millis() as i64) as f64 / 1000.0
            );
            match page["next"].as_str() {
                Some(next) => query = format!("limit=50&{param}={next}"),
                None => break,
            }
        }
        assert_eq!(seen, 150, "{param}: every entry once");
    }
}

/// Issue "nothing lost", defect 1: a cursor is taken when a notification is claimed and its log
/// entry becomes visible a little later. N1 claimed, N2 claimed and logged, a poller reads (sees
/// N2 only), then N1's write lands. Handed N2's cursor, the poller would never see N1.
#[tokio::test]
async fn a_pollers_cursor_never_passes_an_entry_that_becomes_visible_later() {
    let tenant = unique("acme");
    let user = unique("u");
    let tok = token(&user, &tenant, &[], &[]);
    let n1_cursor = herald::domain::cursor::Cursor::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    seed(&tenant, &user, 1).await;
    let (_, page) = api(Method::GET, "/notifications/missed", &tok, None).await;
    let position = page["cursor"].as_str().expect("cursor").to_owned();

    // N1's write lands now, under the cursor it was claimed with (a second after, well within
    // what dispatch allows a write: see `horizon`).
    let store = store().await;
    let n1 = herald::domain::notification::LogEntry {
        id: "n1-late".into(),
        cursor: n1_cursor,
        topic: format!("user:{user}"),
        content: herald::domain::notification::Content {
            event: "late".into(),
            ..Default::default()
        },
        created_at: "2026-11-29T00:00:00Z".into(),
    };
    let expires = chrono::Utc::now().timestamp() + 3600;
    // As dispatch writes (`Broadcaster::log`): under the claimed cursor while that can still
    // land in time, and again under a fresh one if the write returned too late. On a quick
    // machine the first write is in time, and it is the one a reader handed N2's cursor skips;
    // on a slow one (the read above took long) the rule picks a fresh cursor, as it would in
    // dispatch.
    let horizon = herald::domain::horizon::Horizon::default();
    let mut cursor = horizon.write_cursor(n1_cursor, herald::domain::cursor::now_millis());
    loop {
        let entry = herald::domain::notification::LogEntry { cursor, ..n1.clone() };
        store
            .log
            .append(&tenant, &[(herald::domain::groups::Group::user(&user), entry)], expires)
            .await
            .expect("append");
        if horizon.landed_now(cursor) {
            break;
        }
        cursor = herald::domain::cursor::Cursor::now();
    }

    let (_, next) = api(Method::GET, &format!("/notifications/missed?since={position}"), &tok, None).await;
    let ids = item_ids(&next);
    assert!(ids.contains(&"n1-late"), "the late entry is ahead of the poller's position: {next}");
}

/// A log entry as dispatch writes it, with just an event.
fn log_entry(id: &str, cursor: Cursor, topic: &str) -> LogEntry {
    LogEntry {
        id: id.into(),
        cursor,
        topic: topic.into(),
        content: Content {
            event: "raced".into(),
            ..Default::default()
        },
        created_at: "2026-12-06T00:00:00Z".into(),
    }
}

const AN_HOUR: i64 = 3600;

/// E of the race: claimed under `cursor`, logged in the user's topic only now, and its fan-out
/// recorded as complete (every member connection reached) at `posted_at`.
async fn land_fanned_out(store: &Store, tenant: &str, user: &str, id: &str, cursor: Cursor, posted_at: u64) {
    let expires = chrono::Utc::now().timestamp() + AN_HOUR;
    let claim = store.idempotency.claim(tenant, id, cursor, expires, 60_000).await.expect("claim");
    assert!(matches!(claim, herald::io::store::Claim::New(_)), "{claim:?}");
    let entry = log_entry(id, cursor, &format!("user:{user}"));
    store
        .log
        .append(tenant, &[(Group::user(user), entry)], expires)
        .await
        .expect("append E");
    let posted = herald::io::store::Posted {
        at: posted_at,
        missed_by: Vec::new(),
    };
    store.idempotency.finish(tenant, id, Some(&posted)).await.expect("finish");
}

/// Every cursor a `missed` answer hands out: its items' and its resume point.
fn cursors_in(page: &Value) -> Vec<String> {
    let items = page["items"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter_map(|i| i["cursor"].as_str().map(str::to_owned))
        .chain(page["cursor"].as_str().map(str::to_owned))
        .collect()
}

/// A read from each of `handed` returns `id`.
async fn every_read_from_finds(tok: &str, handed: &[String], id: &str) {
    for since in handed {
        let (_, next) = api(Method::GET, &format!("/notifications/missed?since={since}"), tok, None).await;
        assert!(
            item_ids(&next).contains(&id),
            "a read from {since}, a cursor handed out before {id} landed, skips it: {next}"
        );
    }
}

/// Issue #35 (chaos seeds 41 and 50): a read queries its topics one by one, so it can find an
/// entry C (its topic queried late) but not an older entry E of a topic it queried before E was
/// visible, while E's fan-out had completed (to a socket of the client that was already gone)
/// before C was claimed. A client keeping C's cursor then had E spared on its next read (rule 2
/// of `replay::spare`) and never received it. C claimed "after the read began" is written here
/// under a writer clock 3 s ahead, which is what the race looks like to the reader.
#[tokio::test]
async fn no_cursor_a_read_hands_out_passes_an_entry_the_read_raced() {
    let tenant = unique("acme");
    let user = unique("u");
    let tok = token(&user, &tenant, &[], &[]);
    let store = store().await;
    let expires = chrono::Utc::now().timestamp() + AN_HOUR;
    let now = now_millis();
    let c = log_entry("c-late-topic", Cursor::from_parts(now + 3_000, 1), "tenant");
    store.log.append(&tenant, &[(Group::Tenant, c)], expires).await.expect("append C");
    let (status, first) = api(Method::GET, "/notifications/missed", &tok, None).await;
    assert_eq!(status, 200, "{first}");
    assert!(item_ids(&first).contains(&"c-late-topic"), "the read found C: {first}");
    let mut handed = cursors_in(&first);
    // The same read as a `resume` over a socket: its replayed frames and its answer.
    let mut client = Client::connect(&user, &tenant, &[], &[]).await;
    client.send(json!({"action": "resume", "ref": "r"})).await;
    loop {
        let f = client.next().await;
        handed.extend(f["cursor"].as_str().map(str::to_owned));
        if f["type"] == "resumed" || f["type"] == "error" {
            assert_eq!(f["type"], "resumed", "{f}");
            break;
        }
    }
    client.close().await;

    // E lands now under its older claim; its fan-out reached every connection before C's claim.
    land_fanned_out(&store, &tenant, &user, "e-raced", Cursor::from_parts(now + 1_000, 1), now + 1_500).await;
    every_read_from_finds(&tok, &handed, "e-raced").await;
}

/// Chaos seed 51: the same race across the pages of one read. Page 1 read past the position of
/// an entry E that was not visible yet; page 2, a moment later, handed out the cursor of an entry
/// C claimed after page 1 began, and a read from C spared E (its fan-out had completed before C).
#[tokio::test]
async fn no_page_hands_out_a_cursor_claimed_after_its_read_began() {
    let tenant = unique("acme");
    let user = unique("u");
    let tok = token(&user, &tenant, &[], &[]);
    let store = store().await;
    let expires = chrono::Utc::now().timestamp() + AN_HOUR;
    let t0 = now_millis();
    // B and C are claimed "after page 1 began" (by a writer whose clock is ahead).
    let log: Vec<(Group, LogEntry)> = [
        log_entry("a-old", Cursor::from_parts(t0 - 60_000, 1), "tenant"),
        log_entry("b-ahead", Cursor::from_parts(t0 + 1_000, 1), "tenant"),
        log_entry("c-ahead", Cursor::from_parts(t0 + 1_500, 1), "tenant"),
    ]
    .into_iter()
    .map(|e| (Group::Tenant, e))
    .collect();
    store.log.append(&tenant, &log, expires).await.expect("append");
    let (_, first) = api(Method::GET, "/notifications/missed?limit=2", &tok, None).await;
    assert_eq!(item_ids(&first), ["a-old", "b-ahead"], "{first}");
    let next = first["next"].as_str().expect("a next page").to_owned();

    // E lands behind page 1's position, its fan-out complete before C was claimed.
    land_fanned_out(&store, &tenant, &user, "e-paged", Cursor::from_parts(t0 + 500, 1), t0 + 700).await;
    // Page 2 begins once C's claim is well in the past.
    let wait = (t0 + 1_500 + herald::domain::horizon::SKEW_MS + 200).saturating_sub(now_millis());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let (_, second) = api(Method::GET, &format!("/notifications/missed?limit=2&page={next}"), &tok, None).await;
    assert_eq!(item_ids(&second), ["c-ahead"], "page 2 continues after B: {second}");

    let handed: Vec<String> = cursors_in(&first).into_iter().chain(cursors_in(&second)).collect();
    every_read_from_finds(&tok, &handed, "e-paged").await;
}

#[tokio::test]
async fn missed_rejects_bad_cursors_and_limits() {
    let tok = token(&unique("u"), &unique("acme"), &[], &[]);
    for q in [
        "since=nope",
        "since=0000000000000000000000000u",
        "limit=0",
        "limit=201",
        "limit=ten",
    ] {
        let (s, b) = api(Method::GET, &format!("/notifications/missed?{q}"), &tok, None).await;
        assert_error(s, &b, 400, "bad_request");
    }
}

#[tokio::test]
async fn authentication_is_required_everywhere() {
    let url = format!("{}/notifications/missed", stack().ready.http_url);
    let resp = http().get(&url).send().await.expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = resp.json().await.expect("json");
    assert_error(401, &body, 401, "unauthorized");
    let expired = token_with(json!({"sub": "u", "tenant": "acme", "exp": 1_000_000}));
    for (path, method) in [
        ("/notifications/unread-count", Method::GET),
        ("/notifications", Method::POST),
        ("/groups/course:1/presence", Method::GET),
        ("/reminders/x", Method::DELETE),
    ] {
        let (s, b) = api(method.clone(), path, &expired, Some(json!({}))).await;
        assert_error(s, &b, 401, "unauthorized");
        let (s, b) = api(method, path, "not-a-jwt", Some(json!({}))).await;
        assert_error(s, &b, 401, "unauthorized");
    }
    // Unrouted paths never reach the function: API Gateway answers them itself.
    let (s, _) = api(Method::GET, "/nowhere", &token("u", "acme", &[], &[]), None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn read_state_and_unread_count() {
    let tenant = unique("acme");
    let user = unique("u");
    let items = seed(&tenant, &user, 3).await;
    let tok = token(&user, &tenant, &[], &[]);
    let unread = || async { api(Method::GET, "/notifications/unread-count", &tok, None).await.1 };
    assert_eq!(unread().await, json!({"count": 3, "capped": false}));
    let (s, b) = api(Method::POST, "/notifications/read", &tok, Some(json!({"ids": [items[0]["id"]]}))).await;
    // The answer carries the unread count after the read and its read sequence (#33).
    assert_eq!((s, b), (200, json!({"count": 1, "unread": 2, "capped": false, "seq": 1})));
    assert_eq!(unread().await["count"], 2);
    let (s, _) = api(Method::POST, "/notifications/read", &tok, Some(json!({"upTo": items[2]["cursor"]}))).await;
    assert_eq!(s, 200);
    assert_eq!(unread().await["count"], 0);
    for bad in [json!({}), json!({"ids": []}), json!({"ids": [1]}), json!({"upTo": "nope"})] {
        let (s, b) = api(Method::POST, "/notifications/read", &tok, Some(bad)).await;
        assert_error(s, &b, 400, "bad_request");
    }
}

#[tokio::test]
async fn publish_needs_the_service_role_and_the_callers_tenant() {
    let tenant = unique("acme");
    let user = unique("u");
    let service = token("svc", &tenant, &["service"], &[]);
    let mut client = Client::connect(&user, &tenant, &[], &[]).await;
    let id = unique("grade");
    let msg = json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "assignment.graded", "title": "A"});
    let (s, b) = api(Method::POST, "/notifications", &service, Some(msg.clone())).await;
    assert_eq!((s, b), (202, json!({"id": id})));
    // Idempotent on id: accepted again, delivered once.
    let (s, _) = api(Method::POST, "/notifications", &service, Some(msg.clone())).await;
    assert_eq!(s, 202);
    assert_eq!(client.notification().await["id"], id.as_str());
    client.expect_silence(Duration::from_secs(2)).await;

    let (s, b) = api(
        Method::POST,
        "/notifications",
        &service,
        Some(json!({"tenant": tenant, "to": {"user": user}, "event": "e"})),
    )
    .await;
    assert_eq!(s, 202);
    assert!(b["id"].as_str().is_some_and(|i| !i.is_empty()), "an id is minted: {b}");

    let (s, b) = api(
        Method::POST,
        "/notifications",
        &token(&user, &tenant, &["student"], &[]),
        Some(msg.clone()),
    )
    .await;
    assert_error(s, &b, 403, "forbidden");
    let other = token("svc", &unique("globex"), &["service"], &[]);
    let (s, b) = api(Method::POST, "/notifications", &other, Some(msg.clone())).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = api(
        Method::POST,
        "/notifications",
        &service,
        Some(json!({"tenant": tenant, "to": {"all": true}, "event": "e"})),
    )
    .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = api(
        Method::POST,
        "/notifications",
        &service,
        Some(json!({"tenant": tenant, "to": {"user": "a b"}, "event": "e"})),
    )
    .await;
    assert_error(s, &b, 400, "bad_request");
    assert!(b["error"]["message"].as_str().is_some_and(|m| m.starts_with("to.user")), "{b}");
    let big = json!({"tenant": tenant, "to": {"user": user}, "event": "e", "body": "x".repeat(5000)});
    let (s, b) = api(Method::POST, "/notifications", &service, Some(big)).await;
    assert_error(s, &b, 413, "too_large");
}

#[tokio::test]
async fn reminders_are_created_read_and_cancelled() {
    let tenant = unique("acme");
    let user = unique("u");
    let me = token(&user, &tenant, &[], &[]);
    let id = unique("rem");
    let body =
        json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "study.reminder", "title": "Study!", "deliverAt": later(3600)});
    let (s, b) = api(Method::POST, "/reminders", &me, Some(body.clone())).await;
    assert_eq!(
        (s, b["id"].as_str(), b["state"].as_str()),
        (201, Some(id.as_str()), Some("scheduled"))
    );
    let (s, b) = api(Method::GET, &format!("/reminders/{id}"), &me, None).await;
    assert_eq!(
        (s, b["state"].as_str(), b["notification"]["title"].as_str()),
        (200, Some("scheduled"), Some("Study!"))
    );
    // The user's own id, not the key it is stored under (`~{sub}~{id}`).
    assert_eq!(b["notification"]["id"].as_str(), Some(id.as_str()), "{b}");

    // Someone else's reminder does not exist for you.
    let (s, b) = api(
        Method::GET,
        &format!("/reminders/{id}"),
        &token(&unique("v"), &tenant, &[], &[]),
        None,
    )
    .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = api(
        Method::GET,
        &format!("/reminders/{id}"),
        &token(&user, &unique("globex"), &[], &[]),
        None,
    )
    .await;
    assert_error(s, &b, 404, "not_found");

    let (s, _) = api(Method::DELETE, &format!("/reminders/{id}"), &me, None).await;
    assert_eq!(s, 204);
    let (_, b) = api(Method::GET, &format!("/reminders/{id}"), &me, None).await;
    assert_eq!(b["state"], "cancelled");
    let (s, b) = api(Method::POST, "/reminders", &me, Some(body)).await;
    assert_error(s, &b, 409, "conflict");

    let for_other = json!({"tenant": tenant, "to": {"user": "someone"}, "event": "e", "deliverAt": later(60)});
    let (s, b) = api(Method::POST, "/reminders", &me, Some(for_other.clone())).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, _) = api(
        Method::POST,
        "/reminders",
        &token("svc", &tenant, &["service"], &[]),
        Some(for_other),
    )
    .await;
    assert_eq!(s, 201);
    let (s, b) = api(
        Method::POST,
        "/reminders",
        &me,
        Some(json!({"tenant": tenant, "to": {"user": user}, "event": "e", "deliverAt": later(-60)})),
    )
    .await;
    assert_error(s, &b, 400, "bad_request");
    let (s, b) = api(Method::DELETE, "/reminders/does-not-exist", &me, None).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = api(Method::GET, &format!("/reminders/{}", "x".repeat(3000)), &me, None).await;
    assert_error(s, &b, 404, "not_found");
}

#[tokio::test]
async fn reminder_ids_are_each_users_own() {
    let tenant = unique("acme");
    let (u1, u2) = (unique("u1"), unique("u2"));
    let id = unique("shared");
    let mine = json!({"id": id, "tenant": tenant, "to": {"user": u1}, "event": "e", "title": "u1's", "deliverAt": later(3600)});
    let (s, _) = api(Method::POST, "/reminders", &token(&u1, &tenant, &[], &[]), Some(mine.clone())).await;
    assert_eq!(s, 201);
    // The owner may move it; another user's same id is that user's own reminder, not a takeover.
    let (s, _) = api(Method::POST, "/reminders", &token(&u1, &tenant, &[], &[]), Some(mine)).await;
    assert_eq!(s, 201);
    let theirs = json!({"id": id, "tenant": tenant, "to": {"user": u2}, "event": "e", "title": "u2's", "deliverAt": later(3600)});
    let (s, b) = api(Method::POST, "/reminders", &token(&u2, &tenant, &[], &[]), Some(theirs)).await;
    assert_eq!((s, b["id"].as_str()), (201, Some(id.as_str())));
    for (user, title) in [(&u1, "u1's"), (&u2, "u2's")] {
        let (_, r) = api(Method::GET, &format!("/reminders/{id}"), &token(user, &tenant, &[], &[]), None).await;
        assert_eq!(
            (r["state"].as_str(), r["notification"]["title"].as_str()),
            (Some("scheduled"), Some(title))
        );
    }

    // A user's id never collides with a producer's: one already delivered as a notification is
    // still free for a user's own reminder.
    let used = unique("used");
    let mut c = Client::connect(&u1, &tenant, &[], &[]).await;
    publish(json!({"id": used, "tenant": tenant, "to": {"user": u1}, "event": "e"})).await;
    c.notification().await;
    let (s, _) = api(
        Method::POST,
        "/reminders",
        &token(&u1, &tenant, &[], &[]),
        Some(json!({"id": used, "tenant": tenant, "to": {"user": u1}, "event": "e", "deliverAt": later(60)})),
    )
    .await;
    assert_eq!(s, 201);
    // `~` starts the reserved ids of users' reminders: nobody names one.
    let (s, b) = api(
        Method::POST,
        "/reminders",
        &token(&u1, &tenant, &[], &[]),
        Some(json!({"id": format!("~{u2}~{id}"), "tenant": tenant, "to": {"user": u1}, "event": "e", "deliverAt": later(60)})),
    )
    .await;
    assert_error(s, &b, 400, "bad_request");
}

/// Issue "nothing lost", defect 2: a plain user's `POST /reminders {"id":"grade-7781"}` made a
/// later service notification `grade-7781` to a course a silent duplicate: the members got
/// nothing, the service got 202.
#[tokio::test]
async fn a_users_reminder_id_never_swallows_a_producers_notification() {
    let tenant = unique("acme");
    let (squatter, member) = (unique("squat"), unique("member"));
    let id = unique("grade");
    let (s, _) = api(
        Method::POST,
        "/reminders",
        &token(&squatter, &tenant, &[], &[]),
        // Far enough ahead to still be in the future when a busy machine handles the request.
        Some(json!({"id": id, "tenant": tenant, "to": {"user": squatter}, "event": "e", "deliverAt": later(6)})),
    )
    .await;
    assert_eq!(s, 201);
    let mut c = Client::connect(&member, &tenant, &[], &["course:42"]).await;
    c.join("course:42").await;
    // The squatter's reminder fires and is delivered first (the worst case).
    let squatter_token = token(&squatter, &tenant, &[], &[]);
    eventually("the user's reminder fired", || async {
        let (_, r) = api(Method::GET, &format!("/reminders/{id}"), &squatter_token, None).await;
        (r["state"] == "fired").then_some(())
    })
    .await;
    let (s, _) = api(
        Method::POST,
        "/notifications",
        &token("svc", &tenant, &["service"], &[]),
        Some(json!({"id": id, "tenant": tenant, "to": {"group": "course:42"}, "event": "assignment.graded", "title": "Graded"})),
    )
    .await;
    assert_eq!(s, 202);
    let n = c.notification().await;
    assert_eq!((n["id"].as_str(), n["title"].as_str()), (Some(id.as_str()), Some("Graded")));
}

#[tokio::test]
async fn a_rejected_read_request_changes_nothing() {
    let tenant = unique("acme");
    let user = unique("u");
    let items = seed(&tenant, &user, 2).await;
    let tok = token(&user, &tenant, &[], &[]);
    let (s, b) = api(
        Method::POST,
        "/notifications/read",
        &tok,
        Some(json!({"ids": [items[0]["id"]], "upTo": "not-a-cursor"})),
    )
    .await;
    assert_error(s, &b, 400, "bad_request");
    assert_eq!(api(Method::GET, "/notifications/unread-count", &tok, None).await.1["count"], 2);
}

#[tokio::test]
async fn a_short_reminder_from_the_api_is_delivered() {
    let tenant = unique("acme");
    let user = unique("u");
    let mut client = Client::connect(&user, &tenant, &[], &[]).await;
    let body = json!({"tenant": tenant, "to": {"user": user}, "event": "study.reminder", "title": "soon", "deliverAt": later(10)});
    let (s, b) = api(Method::POST, "/reminders", &token(&user, &tenant, &[], &[]), Some(body)).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(client.notification().await["title"], "soon");
    // Dispatch marks the reminder fired right after posting it.
    let path = format!("/reminders/{}", b["id"].as_str().unwrap_or_default());
    let tok = token(&user, &tenant, &[], &[]);
    eventually("reminder marked fired", || async {
        (api(Method::GET, &path, &tok, None).await.1["state"] == "fired").then_some(())
    })
    .await;
}

#[tokio::test]
async fn subscriptions_need_a_privileged_role_and_entitle_joins() {
    let tenant = unique("acme");
    let user = unique("u");
    let service = token("svc", &tenant, &["service"], &[]);
    let (s, b) = api(
        Method::PUT,
        &format!("/subscriptions/{user}/course:31"),
        &token(&user, &tenant, &["student"], &[]),
        None,
    )
    .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = api(Method::PUT, &format!("/subscriptions/{user}/tenant"), &service, None).await;
    assert_error(s, &b, 400, "bad_request");
    let (s, b) = api(Method::PUT, &format!("/subscriptions/{user}/course%3A31"), &service, None).await;
    assert_eq!(s, 204, "{b}");
    let mut c = Client::connect(&user, &tenant, &["student"], &[]).await;
    assert_eq!(c.join("course:31").await["type"], "joined");
    // Entitled by the token's groups claim, not by the subscription: unaffected by its removal.
    let mut listed = Client::connect(&user, &tenant, &["student"], &["course:31"]).await;
    assert_eq!(listed.join("course:31").await["type"], "joined");
    let (s, _) = api(
        Method::DELETE,
        &format!("/subscriptions/{user}/course:31"),
        &token("boss", &tenant, &["admin"], &[]),
        None,
    )
    .await;
    assert_eq!(s, 204);
    // The live connection loses the group at once and is told why.
    assert_eq!(
        c.next().await,
        json!({"type": "left", "group": "course:31", "reason": "unsubscribed"})
    );
    let mut again = Client::connect(&user, &tenant, &["student"], &[]).await;
    assert_eq!(again.join("course:31").await["code"], "forbidden");
    let (s, _) = api(
        Method::POST,
        "/notifications",
        &service,
        Some(json!({"tenant": tenant, "to": {"group": "course:31"}, "event": "course.update", "title": "after unsubscribe"})),
    )
    .await;
    assert_eq!(s, 202);
    assert_eq!(listed.notification().await["title"], "after unsubscribe");
    c.expect_silence(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn presence_lists_online_members_to_members_only() {
    let tenant = unique("acme");
    let (u1, u2) = (unique("u1"), unique("u2"));
    let mut a = Client::connect(&u1, &tenant, &[], &["room:9"]).await;
    let mut b = Client::connect(&u2, &tenant, &[], &["room:9"]).await;
    a.join("room:9").await;
    b.join("room:9").await;
    // Same group name in another tenant: invisible here.
    let mut x = Client::connect(&unique("x"), &unique("globex"), &[], &["room:9"]).await;
    x.join("room:9").await;
    let (s, body) = api(Method::GET, "/groups/room:9/presence", &token(&u1, &tenant, &[], &["room:9"]), None).await;
    let mut expected = vec![u1.clone(), u2.clone()];
    expected.sort();
    assert_eq!(
        (s, body),
        (200, json!({"group": "room:9", "users": expected, "connections": 2, "next": null}))
    );
    // Paged: one connection a page, every member listed once across the pages, then no `next`.
    let member = token(&u1, &tenant, &[], &["room:9"]);
    let mut listed = Vec::new();
    let mut after = String::new();
    for _ in 0..10 {
        let (s, page) = api(
            Method::GET,
            &format!("/groups/room:9/presence?limit=1&after={after}"),
            &member,
            None,
        )
        .await;
        assert_eq!(s, 200, "{page}");
        assert!(page["connections"].as_u64() <= Some(1), "{page}");
        listed.extend(
            page["users"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str().map(str::to_owned)),
        );
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    listed.sort();
    assert_eq!(listed, expected);
    let (s, b) = api(Method::GET, "/groups/room:9/presence?after=not-a-token", &member, None).await;
    assert_error(s, &b, 400, "bad_request");
    let (s, b) = api(Method::GET, "/groups/room:9/presence?limit=1001", &member, None).await;
    assert_error(s, &b, 400, "bad_request");
    let (s, b) = api(
        Method::GET,
        "/groups/room:9/presence",
        &token(&unique("outsider"), &tenant, &[], &[]),
        None,
    )
    .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = api(Method::GET, "/groups/Room:9/presence", &token(&u1, &tenant, &[], &["room:9"]), None).await;
    assert_error(s, &b, 400, "bad_request");
}

/// #28: a plain user's reminder is a notification the user sends to themselves; it must not
/// put work on the operator's email/SMS worker (`escalate`) or force a push past a live socket
/// (`push: "always"`). Refused with 403 naming the field, nothing stored; a service may.
#[tokio::test]
async fn a_plain_users_reminder_cannot_escalate_or_always_push() {
    let tenant = unique("acme");
    let user = unique("u");
    let me = token(&user, &tenant, &[], &[]);
    for (field, value) in [("escalate", json!({"afterSeconds": 900})), ("push", json!("always"))] {
        let id = unique("rem");
        let mut body = json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "e", "title": "t", "deliverAt": later(3600)});
        body[field] = value;
        let (s, b) = api(Method::POST, "/reminders", &me, Some(body.clone())).await;
        assert_error(s, &b, 403, "forbidden");
        let message = b["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{message:?} should name {field}");
        let (s, _) = api(Method::GET, &format!("/reminders/{id}"), &me, None).await;
        assert_eq!(s, 404, "a refused reminder was stored");
        let (s, b) = api(Method::POST, "/reminders", &token("svc", &tenant, &["service"], &[]), Some(body)).await;
        assert_eq!(s, 201, "a service may: {b}");
    }
    // `push: true` (only when not connected) stays the user's to ask for.
    let body = json!({"tenant": tenant, "to": {"user": user}, "event": "e", "deliverAt": later(3600), "push": true});
    let (s, b) = api(Method::POST, "/reminders", &me, Some(body)).await;
    assert_eq!(s, 201, "{b}");
}

/// #28: a user's pending reminders are capped (`HERALD_REMINDER_MAX_PENDING`, 10 in
/// `TEST_ENV`); beyond it 429 and nothing stored. A cancelled one frees its place; rescheduling
/// one already pending is not another; other users are not affected.
#[tokio::test]
async fn a_users_pending_reminders_are_capped() {
    let tenant = unique("acme");
    let user = unique("u");
    let me = token(&user, &tenant, &[], &[]);
    let body = |id: &str| json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "e", "deliverAt": later(3600)});
    for i in 0..REMINDER_CAP {
        let (s, b) = api(Method::POST, "/reminders", &me, Some(body(&format!("r{i}")))).await;
        assert_eq!(s, 201, "reminder {i}: {b}");
    }
    let (s, b) = api(Method::POST, "/reminders", &me, Some(body("one-too-many"))).await;
    assert_error(s, &b, 429, "rate_limited");
    assert!(
        b["error"]["message"].as_str().is_some_and(|m| m.contains("pending reminders")),
        "{b}"
    );
    let (s, _) = api(Method::GET, "/reminders/one-too-many", &me, None).await;
    assert_eq!(s, 404, "the refused reminder was stored");
    // Rescheduling a pending one is not a new one.
    let (s, b) = api(Method::POST, "/reminders", &me, Some(body("r0"))).await;
    assert_eq!(s, 201, "{b}");
    let (s, _) = api(Method::DELETE, "/reminders/r1", &me, None).await;
    assert_eq!(s, 204);
    let (s, b) = api(Method::POST, "/reminders", &me, Some(body("after-cancel"))).await;
    assert_eq!(s, 201, "{b}");
    let other = unique("v");
    let (s, b) = api(
        Method::POST,
        "/reminders",
        &token(&other, &tenant, &[], &[]),
        Some(json!({"tenant": tenant, "to": {"user": other}, "event": "e", "deliverAt": later(3600)})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
}

/// #28: `upTo` past the clock (beyond a small skew) would mark every future notification read
/// before it exists (and so silence escalations): 400, nothing changed.
#[tokio::test]
async fn read_up_to_a_future_cursor_is_refused() {
    let tenant = unique("acme");
    let user = unique("u");
    let me = token(&user, &tenant, &[], &[]);
    let future = herald::domain::cursor::Cursor::at_millis(herald::domain::cursor::now_millis() + 3_600_000).to_string();
    let (s, b) = api(Method::POST, "/notifications/read", &me, Some(json!({"upTo": future}))).await;
    assert_error(s, &b, 400, "bad_request");
    assert!(b["error"]["message"].as_str().is_some_and(|m| m.starts_with("upTo")), "{b}");
    let items = seed(&tenant, &user, 1).await;
    let (_, unread) = api(Method::GET, "/notifications/unread-count", &me, None).await;
    assert_eq!(unread["count"], 1, "the refused upTo changed the read state: {unread}");
    // A cursor handed out (now) is fine.
    let cursor = items[0]["cursor"].clone();
    let (s, b) = api(Method::POST, "/notifications/read", &me, Some(json!({"upTo": cursor}))).await;
    assert_eq!(s, 200, "{b}");
}

/// #28: producer ids with `#` or `~` would collide with Herald's own keys and users' scoped ids.
#[tokio::test]
async fn producer_ids_with_internal_separators_are_refused() {
    let tenant = unique("acme");
    let svc = token("svc", &tenant, &["service"], &[]);
    for id in ["a#b", "a~b", "~u~x"] {
        let (s, b) = api(
            Method::POST,
            "/notifications",
            &svc,
            Some(json!({"id": id, "tenant": tenant, "to": {"user": "u1"}, "event": "e"})),
        )
        .await;
        assert_error(s, &b, 400, "bad_request");
        assert!(b["error"]["message"].as_str().is_some_and(|m| m.starts_with("id")), "{id}: {b}");
    }
}

/// #28: every user is a member of `tenant`, so its presence would list the whole tenant's
/// online users to anyone. Only `service`/`admin` may read it; named groups stay members-only.
#[tokio::test]
async fn only_privileged_callers_list_the_whole_tenants_presence() {
    let tenant = unique("acme");
    let _online = Client::connect(&unique("online"), &tenant, &[], &[]).await;
    let (s, b) = api(
        Method::GET,
        "/groups/tenant/presence",
        &token(&unique("u"), &tenant, &[], &[]),
        None,
    )
    .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = api(
        Method::GET,
        "/groups/tenant/presence",
        &token("ops", &tenant, &["admin"], &[]),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["users"].as_array().map(Vec::len), Some(1), "{b}");
}
