//! Chat end to end (issue #32; DESIGN.md "Chat"): room history paged backwards, read receipts
//! over the socket and HTTP, and shared files through presigned S3 URLs against the local
//! stack's S3 (moto), with the API function's role enforced on the presigned requests.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use herald_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

/// A fresh room in a fresh tenant, and a token for a member of it.
fn room() -> (String, String) {
    (unique("acme"), format!("room:{}", unique("r")))
}

fn member(user: &str, tenant: &str, group: &str) -> String {
    token(user, tenant, &[], &[group])
}

fn path_of(group: &str) -> String {
    group.replace(':', "%3A")
}

/// Sends `n` chat messages to the room as a producer and waits until each is logged.
async fn say(tenant: &str, group: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|_| unique("msg")).collect();
    for id in &ids {
        publish(json!({"id": id, "tenant": tenant, "to": {"group": group}, "event": "chat.message", "body": id})).await;
    }
    for id in &ids {
        dispatched(tenant, id).await;
    }
    ids
}

async fn history(token: &str, group: &str, before: Option<&str>, limit: usize) -> (u16, Value) {
    let mut path = format!("/groups/{}/history?limit={limit}", path_of(group));
    if let Some(b) = before {
        path.push_str(&format!("&before={b}"));
    }
    api(Method::GET, &path, token, None).await
}

fn ids_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The cursors of a history page's items, in page order (`None` for an item too fresh to carry
/// one).
fn cursors_of(page: &Value) -> Vec<Option<String>> {
    page["items"]
        .as_array()
        .map(|a| a.iter().map(|i| i["cursor"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Three pages backwards while new messages keep arriving between the reads: every message
/// that was there when paging began is on exactly one page, newest first, and nothing that
/// arrived later slips in.
#[tokio::test]
async fn history_pages_backwards_without_gap_or_repeat_while_messages_arrive() {
    let (tenant, group) = room();
    let alice = member(&unique("alice"), &tenant, &group);
    let before_paging: HashSet<String> = say(&tenant, &group, 24).await.into_iter().collect();
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    let mut arrived = HashSet::new();
    for page_no in 0..3 {
        let (status, page) = history(&alice, &group, next.as_deref(), 8).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["group"], group.as_str());
        let ids = ids_of(&page);
        assert_eq!(ids.len(), 8, "page {page_no}: {page}");
        let cursors: Vec<String> = cursors_of(&page).into_iter().flatten().collect();
        assert!(
            cursors.windows(2).all(|w| w[0] > w[1]),
            "page {page_no} is not newest first: {page}"
        );
        for item in page["items"].as_array().into_iter().flatten() {
            assert_eq!(item["type"], "notification");
            assert_eq!(item["topic"], group.as_str());
        }
        seen.extend(ids);
        next = page["next"].as_str().map(str::to_owned);
        // New messages land between this page and the next.
        arrived.extend(say(&tenant, &group, 3).await);
        if page_no < 2 {
            assert!(next.is_some(), "page {page_no} says there is no older page: {page}");
        }
    }
    let unique_seen: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique_seen.len(), seen.len(), "an entry repeated across pages: {seen:?}");
    assert_eq!(
        unique_seen, before_paging,
        "pages must hold exactly the messages there when paging began"
    );
    // The third page was the last: the 24 were all read, and no empty page follows.
    assert_eq!(next, None);
    // And the newest page now starts with what arrived meanwhile.
    let (_, newest) = history(&alice, &group, None, 9).await;
    let newest: HashSet<String> = ids_of(&newest).into_iter().collect();
    assert_eq!(newest, arrived);
}

#[tokio::test]
async fn history_is_for_members_and_bounded() {
    let (tenant, group) = room();
    say(&tenant, &group, 1).await;
    let alice = member(&unique("alice"), &tenant, &group);
    let outsider = token(&unique("mallory"), &tenant, &[], &[]);
    let other_tenant = token(&unique("eve"), &unique("evil"), &[], &[&group]);
    let (status, body) = history(&outsider, &group, None, 10).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["items"].is_null(), "a refusal carries no items: {body}");
    // Another tenant's `room:x` is another room: empty, never this tenant's messages.
    let (status, body) = history(&other_tenant, &group, None, 10).await;
    assert_eq!((status, ids_of(&body).len()), (200, 0), "{body}");
    assert_eq!(history(&alice, &group, None, 101).await.0, 400);
    assert_eq!(history(&alice, &group, None, 0).await.0, 400);
    assert_eq!(history(&alice, &group, Some("not-a-cursor"), 10).await.0, 400);
    assert_eq!(history(&alice, "no such group", None, 10).await.0, 400);
    let (status, body) = history(&alice, &group, None, 10).await;
    assert_eq!((status, ids_of(&body).len()), (200, 1), "{body}");
}

/// The cursors of the room's messages, oldest first.
async fn cursors(token: &str, group: &str, n: usize) -> Vec<String> {
    let page = eventually("history with cursors", || async {
        let (_, page) = history(token, group, None, n).await;
        let all: Vec<Option<String>> = cursors_of(&page);
        (all.len() == n && all.iter().all(Option::is_some)).then_some(all)
    })
    .await;
    let mut c: Vec<String> = page.into_iter().flatten().collect();
    c.reverse();
    c
}

/// The next receipt frame on `client`.
async fn receipt(client: &mut Client) -> Value {
    loop {
        let f = client.next().await;
        if f["type"] == "receipt" {
            return f;
        }
    }
}

#[tokio::test]
async fn receipts_reach_the_other_members_and_never_go_backwards() {
    let (tenant, group) = room();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = Client::connect(&a, &tenant, &[], &[&group]).await;
    let mut bob = Client::connect(&b, &tenant, &[], &[&group]).await;
    alice.join(&group).await;
    bob.join(&group).await;
    say(&tenant, &group, 3).await;
    let c = cursors(&member(&a, &tenant, &group), &group, 3).await;

    let read = alice
        .request(json!({"action": "read", "group": group, "upTo": c[1], "ref": "r1"}), "marked")
        .await;
    assert_eq!(
        (
            read["type"].as_str(),
            read["advanced"].as_bool(),
            read["upTo"].as_str(),
            read["ref"].as_str()
        ),
        (Some("marked"), Some(true), Some(c[1].as_str()), Some("r1")),
        "{read}"
    );
    let r = receipt(&mut bob).await;
    assert_eq!(r, json!({"type": "receipt", "group": group, "user": a, "upTo": c[1]}));

    // Backwards: refused by the store's condition, the answer says where it stands.
    let back = alice
        .request(json!({"action": "read", "group": group, "upTo": c[0], "ref": "r2"}), "marked")
        .await;
    assert_eq!(
        (back["advanced"].as_bool(), back["upTo"].as_str()),
        (Some(false), Some(c[1].as_str())),
        "{back}"
    );
    let (status, body) = api(
        Method::POST,
        &format!("/groups/{}/read", path_of(&group)),
        &member(&a, &tenant, &group),
        Some(json!({"upTo": c[0]})),
    )
    .await;
    assert_eq!(
        (status, body["advanced"].as_bool(), body["upTo"].as_str()),
        (200, Some(false), Some(c[1].as_str())),
        "{body}"
    );

    // Forward over HTTP, within a second of the first: coalesced, it still reaches bob.
    let (status, body) = api(
        Method::POST,
        &format!("/groups/{}/read", path_of(&group)),
        &member(&a, &tenant, &group),
        Some(json!({"upTo": c[2]})),
    )
    .await;
    assert_eq!((status, body["advanced"].as_bool()), (200, Some(true)), "{body}");
    let r = receipt(&mut bob).await;
    assert_eq!(
        (r["user"].as_str(), r["upTo"].as_str()),
        (Some(a.as_str()), Some(c[2].as_str())),
        "{r}"
    );

    // Bob reads too; alice is told, and the receipts list both.
    let read = bob.request(json!({"action": "read", "group": group, "upTo": c[0]}), "marked").await;
    assert_eq!(read["advanced"], true, "{read}");
    let r = receipt(&mut alice).await;
    assert_eq!(
        (r["user"].as_str(), r["upTo"].as_str()),
        (Some(b.as_str()), Some(c[0].as_str())),
        "{r}"
    );
    let (status, body) = api(
        Method::GET,
        &format!("/groups/{}/receipts?upTo={}", path_of(&group), c[1]),
        &member(&b, &tenant, &group),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["mode"].as_str(), body["readers"].as_u64(), body["seen"].as_u64()),
        (Some("members"), Some(2), Some(1)),
        "{body}"
    );
    let mut listed: Vec<(String, String)> = body["receipts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["user"].as_str().unwrap_or_default().to_owned(),
                r["upTo"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    listed.sort();
    let mut want = vec![(a.clone(), c[2].clone()), (b.clone(), c[0].clone())];
    want.sort();
    assert_eq!(listed, want);
}

#[tokio::test]
async fn receipts_are_validated_and_for_members_only() {
    let (tenant, group) = room();
    let a = unique("alice");
    let mut alice = Client::connect(&a, &tenant, &[], &[&group]).await;
    let mut outsider = Client::connect(&unique("mallory"), &tenant, &[], &[]).await;
    say(&tenant, &group, 1).await;
    let c = cursors(&member(&a, &tenant, &group), &group, 1).await;
    let bad = alice
        .request(json!({"action": "read", "group": group, "upTo": "nope"}), "marked")
        .await;
    assert_eq!(
        (bad["type"].as_str(), bad["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{bad}"
    );
    let future = herald::domain::cursor::Cursor::at_millis(herald::domain::cursor::now_millis() + 3_600_000).to_string();
    let bad = alice
        .request(json!({"action": "read", "group": group, "upTo": future}), "marked")
        .await;
    assert_eq!(bad["code"], "bad_request", "{bad}");
    let denied = outsider
        .request(json!({"action": "read", "group": group, "upTo": c[0]}), "marked")
        .await;
    assert_eq!(denied["code"], "forbidden", "{denied}");
    let mallory = token(&unique("mallory"), &tenant, &[], &[]);
    let (status, _) = api(
        Method::POST,
        &format!("/groups/{}/read", path_of(&group)),
        &mallory,
        Some(json!({"upTo": c[0]})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = api(Method::GET, &format!("/groups/{}/receipts", path_of(&group)), &mallory, None).await;
    assert_eq!(status, 403);
    let (status, _) = api(
        Method::POST,
        &format!("/groups/{}/read", path_of(&group)),
        &member(&a, &tenant, &group),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 400);
}

/// A member reading fast (five receipts back to back) does not make a post per read: at most
/// one receipt a second reaches the others, and the last one is the latest.
#[tokio::test]
async fn receipts_are_coalesced_to_about_one_a_second() {
    let (tenant, group) = room();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = Client::connect(&a, &tenant, &[], &[&group]).await;
    let mut bob = Client::connect(&b, &tenant, &[], &[&group]).await;
    alice.join(&group).await;
    bob.join(&group).await;
    say(&tenant, &group, 5).await;
    let c = cursors(&member(&a, &tenant, &group), &group, 5).await;
    let started = Instant::now();
    for (i, cursor) in c.iter().enumerate() {
        let read = alice
            .request(json!({"action": "read", "group": group, "upTo": cursor, "ref": i}), "marked")
            .await;
        assert_eq!(read["advanced"], true, "{read}");
    }
    let elapsed = started.elapsed();
    let mut got = Vec::new();
    while got.last() != c.last() {
        let r = receipt(&mut bob).await;
        got.push(r["upTo"].as_str().unwrap_or_default().to_owned());
    }
    // The gate opens at most once a second, plus the trailing flush of the last window.
    let most = 2 + elapsed.as_secs() as usize;
    assert!(got.len() <= most, "{} receipts for 5 reads in {elapsed:?}: {got:?}", got.len());
    assert!(
        got.len() < c.len() || elapsed >= Duration::from_secs(3),
        "not coalesced: {got:?} in {elapsed:?}"
    );
}

async fn upload(token: &str, body: Value) -> (u16, Value) {
    api(Method::POST, "/uploads", token, Some(body)).await
}

#[tokio::test]
async fn uploads_over_the_limits_get_400_and_no_url() {
    let (tenant, group) = room();
    let alice = member(&unique("alice"), &tenant, &group);
    for (body, why) in [
        (
            json!({"group": group, "name": "big.png", "contentType": "image/png", "size": 10 * 1024 * 1024 + 1}),
            "over the size limit",
        ),
        (
            json!({"group": group, "name": "page.html", "contentType": "text/html", "size": 100}),
            "a refused type",
        ),
        (
            json!({"group": group, "name": "x.exe", "contentType": "application/x-msdownload", "size": 100}),
            "a refused type",
        ),
        (
            json!({"group": group, "name": "a.png", "contentType": "image/png", "size": 0}),
            "an empty file",
        ),
        (
            json!({"group": group, "name": "a.png", "contentType": "image/png", "size": 10, "key": "acme/x/y"}),
            "a field of its own",
        ),
    ] {
        let (status, answer) = upload(&alice, body).await;
        assert_eq!(status, 400, "{why}: {answer}");
        assert!(
            answer.get("upload").is_none() && !answer.to_string().contains("http"),
            "{why}: a URL in {answer}"
        );
    }
    let outsider = token(&unique("mallory"), &tenant, &[], &[]);
    let (status, answer) = upload(
        &outsider,
        json!({"group": group, "name": "a.png", "contentType": "image/png", "size": 10}),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.get("upload").is_none(), "{answer}");
}

/// The whole path: a presigned PUT of real bytes into the local stack's S3, then a presigned
/// GET for a member (the bytes come back), and none for anyone else.
#[tokio::test]
async fn files_are_shared_through_presigned_urls_for_members_only() {
    let (tenant, group) = room();
    let (a, b) = (unique("alice"), unique("bob"));
    let alice = member(&a, &tenant, &group);
    let bob = member(&b, &tenant, &group);
    let bytes = format!("hello from {a}\n").repeat(20);
    let (status, answer) = upload(
        &alice,
        json!({"group": group, "name": "notes for bob.txt", "contentType": "text/plain", "size": bytes.len()}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let key = answer["key"].as_str().expect("key").to_owned();
    assert!(key.starts_with(&format!("{tenant}/{a}/")), "{key}");
    let put = &answer["upload"];
    let url = put["url"].as_str().expect("url");
    assert!(url.starts_with("http://127.0.0.1:"), "the local stack's loopback S3: {url}");
    let mut req = http().put(url).body(bytes.clone());
    for (k, v) in put["headers"].as_object().into_iter().flatten() {
        req = req.header(k.as_str(), v.as_str().unwrap_or_default());
    }
    let res = req.send().await.expect("PUT");
    let status = res.status().as_u16();
    assert_eq!(status, 200, "PUT: {}", res.text().await.unwrap_or_default());

    // Bob (a member) gets a download URL, and the bytes.
    let (status, answer) = api(Method::GET, &format!("/uploads/{key}"), &bob, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["name"].as_str(), answer["group"].as_str(), answer["from"]["user"].as_str()),
        (Some("notes for bob.txt"), Some(group.as_str()), Some(a.as_str()))
    );
    let got = http()
        .get(answer["download"]["url"].as_str().expect("url"))
        .send()
        .await
        .expect("GET");
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.text().await.unwrap_or_default(), bytes);

    // Not a member: 403. Another tenant: 404 (the key is not theirs to learn about).
    let mallory = token(&unique("mallory"), &tenant, &[], &[]);
    let (status, answer) = api(Method::GET, &format!("/uploads/{key}"), &mallory, None).await;
    assert_eq!(status, 403, "{answer}");
    assert!(!answer.to_string().contains("http"), "{answer}");
    let eve = token(&unique("eve"), &unique("evil"), &[], &[&group]);
    assert_eq!(api(Method::GET, &format!("/uploads/{key}"), &eve, None).await.0, 404);
    assert_eq!(
        api(
            Method::GET,
            &format!("/uploads/{tenant}/{a}/01J000000000000000000000AA-x"),
            &bob,
            None
        )
        .await
        .0,
        404
    );
}
