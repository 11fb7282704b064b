//! Audiences that span connections: `all` (platform-wide, every tenant) and a 2,000-member group
//! whose fan-out is split into shard jobs. Its own test binary, hence its own stack: an `all`
//! notification reaches every connection, which would disturb other tests' expectations.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use herald_e2e::*;
use serde_json::json;

/// The two tests take turns: an `all` notification fanned out while the 2,000 members connect
/// meets some inside their `$connect`; the 410 it gets is followed by a close, which can land just
/// after the socket opened and close a member the big test counts on.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn all_reaches_every_tenant() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut clients = Vec::new();
    for t in ["acme", "globex", "initech"] {
        clients.push(Client::connect(&unique("u"), &unique(t), &[], &[]).await);
    }
    let title = unique("maintenance");
    publish(json!({"tenant": "ops", "to": {"all": true}, "event": "platform.maintenance", "title": title})).await;
    for c in &mut clients {
        let n = c.notification().await;
        assert_eq!((n["topic"].as_str(), n["title"].as_str()), (Some("all"), Some(title.as_str())));
    }
}

#[tokio::test]
async fn a_two_thousand_member_group_is_sharded_and_everyone_gets_it_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const MEMBERS: usize = 2000;
    let tenant = unique("bigcorp");
    let clients: Vec<Client> = futures_util::stream::iter(0..MEMBERS)
        .map(|i| {
            let tenant = tenant.clone();
            async move { Client::connect(&format!("m{i}"), &tenant, &[], &[]).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    // Every member is in the tenant group: its membership list spans all shard partitions.
    let mut per_shard: HashMap<u16, usize> = HashMap::new();
    for shard in 0..4u16 {
        per_shard.insert(
            shard,
            sort_keys("ConnectionsTable", &format!("g#{tenant}#tenant#{shard}")).await.len(),
        );
    }
    assert_eq!(per_shard.values().sum::<usize>(), MEMBERS, "{per_shard:?}");
    assert!(per_shard.values().all(|n| *n > MEMBERS / 8), "shards are balanced: {per_shard:?}");

    let id = unique("exam");
    publish(json!({"id": id, "tenant": tenant, "to": {"tenant": true}, "event": "exam.results", "title": "Results are out"})).await;
    let received: Vec<usize> = futures_util::stream::iter(clients)
        .map(|mut c| {
            let id = id.clone();
            async move {
                // Everyone gets it once (the `all` test may add its own notification); then
                // nothing more for a while.
                let mut count = 0;
                while let Some(f) = c
                    .next_within(if count == 0 {
                        Duration::from_secs(120)
                    } else {
                        Duration::from_secs(3)
                    })
                    .await
                {
                    if f["type"] == "notification" && f["id"] == id.as_str() {
                        count += 1;
                    }
                }
                count
            }
        })
        .buffer_unordered(MEMBERS)
        .collect()
        .await;
    assert_eq!(received.len(), MEMBERS);
    let missed = received.iter().filter(|n| **n == 0).count();
    let duplicated = received.iter().filter(|n| **n > 1).count();
    assert_eq!(
        (missed, duplicated),
        (0, 0),
        "members that missed it, members that got it twice{}",
        trouble()
    );
}
