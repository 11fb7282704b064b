//! Issue "nothing lost", defect 5: big audiences stopped half way on AWS. Each page job queued the
//! next page on the same queue, one SQS → Lambda → SQS hop per page, and Lambda's recursive loop
//! detection stops such a chain after 16 hops: the later pages were never pushed. The local stack
//! emulates the detection (trace-header lineage through SQS, stop after 16), so this group — 200
//! members, 10 a page, one membership shard: a 20-page chain the old way — reaches everyone only
//! if the chain stays short (walk and post jobs, at most 8 hops; `delivery::chain`).
//! Its own test binary: it needs its own stack with tiny pages and one shard.

use std::time::Duration;

use futures_util::StreamExt;
use herald_e2e::*;
use serde_json::json;

const ENV: &[(&str, &str)] = &[
    ("HERALD_FANOUT_SHARD_SIZE", "10"),
    ("HERALD_MEMBERSHIP_SHARDS", "1"),
    ("HERALD_FANOUT_CONCURRENCY", "32"),
    ("HERALD_CLAIM_LEASE_SECONDS", "5"),
];

#[tokio::test]
async fn a_twenty_page_audience_is_reached_through_a_short_chain() {
    const MEMBERS: usize = 200;
    stack_with(ENV);
    let tenant = unique("chain");
    let clients: Vec<Client> = futures_util::stream::iter(0..MEMBERS)
        .map(|i| {
            let tenant = tenant.clone();
            async move { Client::connect(&format!("m{i}"), &tenant, &[], &[]).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let id = unique("all-hands");
    publish(json!({"id": id, "tenant": tenant, "to": {"tenant": true}, "event": "meeting", "title": "All hands"})).await;
    let received: Vec<bool> = futures_util::stream::iter(clients)
        .map(|mut c| {
            let id = id.clone();
            async move {
                while let Some(f) = c.next_within(Duration::from_secs(60)).await {
                    if f["type"] == "notification" && f["id"] == id.as_str() {
                        return true;
                    }
                }
                false
            }
        })
        .buffer_unordered(MEMBERS)
        .collect()
        .await;
    let missed = received.iter().filter(|got| !**got).count();
    assert_eq!(missed, 0, "members never reached live (the chain was stopped?)");
}
