//! Web Push end to end: producer notifications with `"push"` reach users without a live socket
//! through the local stack's push service, which checks the VAPID token and headers like a real
//! one and decrypts what it receives with the subscription keys it handed out.

use herald_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

/// A subscription from the local push service (what a browser's `pushManager.subscribe` gives).
async fn browser_subscription() -> Value {
    let url = format!("{}/subscriptions", stack().ready.push_service_url);
    let resp = http().post(&url).send().await.expect("push service");
    assert_eq!(resp.status().as_u16(), 201);
    resp.json().await.expect("subscription JSON")
}

/// What the push service received for a subscription, decrypted.
async fn received(sub: &Value) -> Vec<Value> {
    let url = format!(
        "{}/subscriptions/{}/messages",
        stack().ready.push_service_url,
        sub["id"].as_str().unwrap_or_default()
    );
    let body: Value = http().get(&url).send().await.expect("push service").json().await.expect("JSON");
    body["messages"].as_array().cloned().unwrap_or_default()
}

/// The subscription as the client PUTs it (the browser's `PushSubscription.toJSON()`).
fn wire(sub: &Value) -> Value {
    json!({"endpoint": sub["endpoint"], "expirationTime": null, "keys": sub["keys"]})
}

async fn subscribe(token: &str, sub: &Value) {
    let (status, body) = api(Method::PUT, "/push/subscriptions", token, Some(wire(sub))).await;
    assert_eq!(status, 201, "{body}");
}

async fn stored(tenant: &str, user: &str) -> Vec<String> {
    sort_keys("NotificationsTable", &format!("w#{tenant}#{user}")).await
}

/// Whether dispatch finished the notification `id` (its claim is `done`): everything it does
/// for it, pushes included, happened before.
async fn finished(tenant: &str, id: &str) -> Option<()> {
    let item = item("NotificationsTable", &format!("i#{tenant}#{id}"), "#").await?;
    (item.get("state").and_then(|v| v.as_s().ok()).map(String::as_str) == Some("done")).then_some(())
}

#[tokio::test]
async fn an_offline_user_gets_the_decrypted_push_with_its_headers() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let sub = browser_subscription().await;
    subscribe(&token(&user, &tenant, &[], &[]), &sub).await;
    let (id, collapse) = (unique("grade"), "course:42 grade of this week".to_owned());
    publish(json!({
        "id": id, "tenant": tenant, "to": {"user": user}, "event": "grade.posted",
        "title": "Grade posted", "body": "You got an A", "link": "/grades/42",
        "data": {"score": 97}, "ttlSeconds": 3600, "collapse": collapse,
        "push": true, "urgency": "high"
    }))
    .await;
    let messages = eventually("the push", || async {
        let m = received(&sub).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    let m = &messages[0];
    let frame = &m["json"];
    assert_eq!(frame["type"], "notification");
    assert_eq!(frame["id"], id.as_str());
    assert_eq!(frame["topic"], format!("user:{user}"));
    assert_eq!(
        (&frame["title"], &frame["body"], &frame["link"], &frame["data"]),
        (
            &json!("Grade posted"),
            &json!("You got an A"),
            &json!("/grades/42"),
            &json!({"score": 97})
        )
    );
    // No cursor: the user was not connected, and a resume from this one would pass what they
    // missed meanwhile.
    assert_eq!(frame.get("cursor"), None, "{frame}");
    assert_eq!((&m["ttl"], &m["urgency"]), (&json!(3600), &json!("high")));
    // The collapse key is too long and not base64url: the Topic is its digest.
    let topic = m["topic"].as_str().unwrap_or_default();
    assert_eq!(topic, herald::io::push::payload::topic(&collapse));
    assert_eq!(topic.len(), 32);
    // The same frame a socket would have got, so the client dedupes either by id.
    let (_, missed) = api(Method::GET, "/notifications/missed", &token(&user, &tenant, &[], &[]), None).await;
    assert_eq!(missed["items"][0]["id"], id.as_str());
    finished(&tenant, &id).await.expect("finished");
    assert_eq!(received(&sub).await.len(), 1, "pushed once");
}

#[tokio::test]
async fn a_connected_user_gets_a_push_only_with_always() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let sub = browser_subscription().await;
    subscribe(&token(&user, &tenant, &[], &[]), &sub).await;
    let mut client = Client::connect(&user, &tenant, &[], &[]).await;

    let online = unique("online");
    publish(json!({"id": online, "tenant": tenant, "to": {"user": user}, "event": "e", "title": "t", "push": true})).await;
    assert_eq!(client.notification().await["id"], online.as_str());
    eventually("dispatch to finish", || finished(&tenant, &online)).await;
    assert!(received(&sub).await.is_empty(), "a connected user got a push for push:true");

    let always = unique("always");
    publish(json!({"id": always, "tenant": tenant, "to": {"users": [user]}, "event": "e", "title": "t", "push": "always"})).await;
    assert_eq!(client.notification().await["id"], always.as_str());
    let messages = eventually("the push", || async {
        let m = received(&sub).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    let ids: Vec<&Value> = messages.iter().map(|m| &m["json"]["id"]).collect();
    assert_eq!(ids, vec![&json!(always)]);
    // No Urgency given: normal; no collapse key: no Topic; no ttlSeconds: the retention.
    assert_eq!((&messages[0]["urgency"], &messages[0]["topic"]), (&json!("normal"), &Value::Null));
    assert!(messages[0]["ttl"].as_u64().is_some_and(|t| t > 0));
    client.close().await;
}

#[tokio::test]
async fn a_gone_subscription_is_removed_and_a_throttled_push_is_retried() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let token = token(&user, &tenant, &[], &[]);
    let (gone, throttled) = (browser_subscription().await, browser_subscription().await);
    subscribe(&token, &gone).await;
    subscribe(&token, &throttled).await;
    let key = |s: &Value| herald::io::push::endpoint_key(s["endpoint"].as_str().unwrap_or_default());
    let mut both = vec![key(&gone), key(&throttled)];
    both.sort();
    assert_eq!(stored(&tenant, &user).await, both);
    control(
        Method::POST,
        "/faults/push",
        Some(json!({"status": 410, "subscriptionIds": [gone["id"]]})),
    )
    .await;
    control(
        Method::POST,
        "/faults/push",
        Some(json!({"status": 429, "subscriptionIds": [throttled["id"]], "count": 1})),
    )
    .await;

    let id = unique("n");
    publish(json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "e", "title": "hello", "push": true})).await;
    // 429 first, then the retry queue's attempt is accepted.
    let messages = eventually("the retried push", || async {
        let m = received(&throttled).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(messages[0]["json"]["id"], id.as_str());
    // 410: removed at once; the other stays.
    let left = eventually("the gone subscription removed", || async {
        let keys = stored(&tenant, &user).await;
        (keys.len() == 1).then_some(keys)
    })
    .await;
    assert_eq!(left, vec![key(&throttled)]);
    assert!(received(&gone).await.is_empty());
    let faults = control(Method::GET, "/faults", None).await;
    assert!(faults["injected"]["push429"].as_u64() >= Some(1), "{faults}");
    assert!(faults["injected"]["push410"].as_u64() >= Some(1), "{faults}");
}

#[tokio::test]
async fn bad_subscriptions_are_refused_and_nothing_is_stored() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let token = token(&user, &tenant, &[], &[]);
    let good = wire(&browser_subscription().await);
    let with = |path: &str, value: Value| {
        let mut s = good.clone();
        match path {
            "endpoint" => s["endpoint"] = value,
            "p256dh" => s["keys"]["p256dh"] = value,
            _ => s["keys"]["auth"] = value,
        }
        s
    };
    let cases = [
        (
            with("endpoint", json!("http://push.example.com/x")),
            "endpoint must be an https:// URL",
        ),
        (
            with("endpoint", json!("ftp://push.example.com/x")),
            "endpoint must be an https:// URL",
        ),
        // 64 bytes: not an uncompressed point.
        (
            with("p256dh", json!("A".repeat(86))),
            "keys.p256dh must be base64url of a 65-byte uncompressed P-256 public key",
        ),
        (
            with("auth", json!("AAAAAAAAAAAAAAAAAAAA")),
            "keys.auth must be base64url of 16 bytes",
        ),
        (
            with("endpoint", json!(format!("https://push.example.com/{}", "x".repeat(4100)))),
            "at most 4096 are accepted",
        ),
        (json!({"endpoint": good["endpoint"]}), "keys is required"),
    ];
    for (body, message) in cases {
        let (status, resp) = api(Method::PUT, "/push/subscriptions", &token, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {resp}");
        let got = resp["error"]["message"].as_str().unwrap_or_default();
        assert!(got.contains(message), "{got:?} should say {message:?}");
    }
    assert!(stored(&tenant, &user).await.is_empty(), "a refused subscription was stored");

    let (status, _) = api(Method::PUT, "/push/subscriptions", &token, Some(good.clone())).await;
    assert_eq!(status, 201);
    assert_eq!(stored(&tenant, &user).await.len(), 1);
    let (status, _) = api(
        Method::DELETE,
        "/push/subscriptions",
        &token,
        Some(json!({"endpoint": good["endpoint"]})),
    )
    .await;
    assert_eq!(status, 204);
    assert!(stored(&tenant, &user).await.is_empty());

    let (status, key) = api(Method::GET, "/push/vapid-public-key", &token, None).await;
    assert_eq!(
        (status, key["publicKey"].as_str()),
        (200, Some(stack().ready.vapid_public_key.as_str()))
    );
}

#[tokio::test]
async fn push_on_a_group_target_is_refused_with_its_reason() {
    let tenant = unique("acme");
    let (status, body) = api(
        Method::POST,
        "/notifications",
        &token("svc", &tenant, &["service"], &[]),
        Some(json!({"tenant": tenant, "to": {"group": "course:1"}, "event": "e", "push": true})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("user and users targets")),
        "{body}"
    );
}

/// SSRF (#28): Herald POSTs to whatever endpoint a client registers, from inside the account.
/// Only web push services' hosts are taken; the local stack's own push service is allowed by
/// the local stack's configuration alone.
#[tokio::test]
async fn endpoints_outside_the_push_services_are_refused() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let token = token(&user, &tenant, &[], &[]);
    let good = wire(&browser_subscription().await);
    let at = |endpoint: &str| {
        let mut s = good.clone();
        s["endpoint"] = json!(endpoint);
        s
    };
    for endpoint in [
        "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://127.0.0.1:9/x",
        "https://10.0.0.1/x",
        "https://[::1]/x",
        "https://localhost/x",
        "https://2130706433/x",
        "https://fcm.googleapis.com:8443/fcm/send/x",
        "https://fcm.googleapis.com.evil.example/x",
        "https://internal.example.com/x",
    ] {
        let (status, resp) = api(Method::PUT, "/push/subscriptions", &token, Some(at(endpoint))).await;
        assert_eq!(status, 400, "{endpoint}: {resp}");
        let message = resp["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("endpoint must be on a web push service"),
            "{endpoint}: {message}"
        );
    }
    let (status, resp) = api(
        Method::PUT,
        "/push/subscriptions",
        &token,
        Some(at("https://user@fcm.googleapis.com/x")),
    )
    .await;
    assert_eq!(status, 400, "{resp}");
    assert!(stored(&tenant, &user).await.is_empty(), "a refused endpoint was stored");

    for endpoint in ["https://fcm.googleapis.com/fcm/send/abc", "https://web.push.apple.com/QGxyz"] {
        let (status, resp) = api(Method::PUT, "/push/subscriptions", &token, Some(at(endpoint))).await;
        assert_eq!(status, 201, "{endpoint}: {resp}");
    }
    assert_eq!(stored(&tenant, &user).await.len(), 2);
}

/// A push service's redirect is not followed: it would send Herald's POST (and its VAPID token)
/// to any address, past the endpoint check. Here the local push service answers the first push
/// with a redirect to the same endpoint, which would accept it: nothing must arrive.
#[tokio::test]
async fn a_push_service_redirect_is_not_followed() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let sub = browser_subscription().await;
    subscribe(&token(&user, &tenant, &[], &[]), &sub).await;
    control(
        Method::POST,
        "/faults/push",
        Some(json!({"status": 307, "subscriptionIds": [sub["id"]], "location": sub["endpoint"], "count": 1})),
    )
    .await;
    let id = unique("n");
    publish(json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "e", "title": "hello", "push": true})).await;
    eventually("dispatch finished", || finished(&tenant, &id)).await;
    let faults = control(Method::GET, "/faults", None).await;
    assert!(faults["injected"]["push307"].as_u64() >= Some(1), "{faults}");
    assert!(received(&sub).await.is_empty(), "the redirect was followed");
}

/// A browser's endpoint is one device: when another user subscribes it (a shared computer,
/// or someone who learnt the URL), the previous user's subscription to it is gone, so their
/// notifications stop reaching that device.
#[tokio::test]
async fn an_endpoint_is_stored_under_one_user_only() {
    let tenant = unique("acme");
    let (first, second, other_tenant) = (unique("u"), unique("u"), unique("acme"));
    let sub = browser_subscription().await;
    subscribe(&token(&first, &tenant, &[], &[]), &sub).await;
    assert_eq!(stored(&tenant, &first).await.len(), 1);
    subscribe(&token(&second, &tenant, &[], &[]), &sub).await;
    assert!(stored(&tenant, &first).await.is_empty(), "the endpoint stayed with its first user");
    assert_eq!(stored(&tenant, &second).await.len(), 1);
    // Across tenants too: it is the same device.
    subscribe(&token(&second, &other_tenant, &[], &[]), &sub).await;
    assert!(stored(&tenant, &second).await.is_empty());
    // The first user's notification is not pushed to the device any more.
    let id = unique("n");
    publish(json!({"id": id, "tenant": tenant, "to": {"user": first}, "event": "e", "title": "for first", "push": true})).await;
    eventually("dispatch finished", || finished(&tenant, &id)).await;
    assert!(received(&sub).await.is_empty(), "pushed to a device its user gave up");
    // Deleting it as a former owner does not take it from the current one.
    let (status, _) = api(
        Method::DELETE,
        "/push/subscriptions",
        &token(&first, &tenant, &[], &[]),
        Some(json!({"endpoint": sub["endpoint"]})),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(stored(&other_tenant, &second).await.len(), 1);
}

/// A push service's `Retry-After` on a 429 is honoured: the retry waits at least that long
/// (here 6 s, where the backoff alone would retry after 1–2 s), so Herald does not hammer a
/// service that asked it to wait.
#[tokio::test]
async fn a_push_services_retry_after_is_honoured() {
    let (tenant, user) = (unique("acme"), unique("u"));
    let sub = browser_subscription().await;
    subscribe(&token(&user, &tenant, &[], &[]), &sub).await;
    control(
        Method::POST,
        "/faults/push",
        Some(json!({"status": 429, "subscriptionIds": [sub["id"]], "count": 1, "retryAfter": 6})),
    )
    .await;
    let id = unique("n");
    publish(json!({"id": id, "tenant": tenant, "to": {"user": user}, "event": "e", "title": "later", "push": true})).await;
    eventually("dispatch finished", || finished(&tenant, &id)).await;
    // The 429 was answered before dispatch finished.
    let refused_at = chrono::Utc::now().timestamp_millis();
    let messages = eventually("the retried push", || async {
        let m = received(&sub).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    let waited = messages[0]["receivedAt"].as_i64().unwrap_or_default() - refused_at;
    assert!(waited >= 5_000, "retried {waited} ms after the 429 that asked for 6 s");
}
