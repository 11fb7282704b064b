//! How fast does one `dispatch` invocation post to N live connections, compared with the raw
//! request rate of the same `@connections` endpoint driven by a plain HTTP loop at the same
//! concurrency? Both sides post the same frame to the same N real WebSocket connections of the
//! local stack, so the difference is Herald's own overhead (SDK signing and orchestration,
//! outcome bookkeeping), not the endpoint's.
//!
//! `cargo run --release -p herald-bench -- [connections] [concurrency] [rounds]`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use herald_e2e::{Client, control, invoke, stack, stack_with, token, unique};
use serde_json::{Value, json};

fn arg(n: usize, default: usize) -> usize {
    std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let (connections, concurrency, rounds) = (arg(1, 1000), arg(2, 64), arg(3, 3));
    let concurrency_s = concurrency.to_string();
    // One invocation must post to everyone: no shard jobs.
    stack_with(&[
        ("HERALD_FANOUT_SHARD_SIZE", "100000"),
        ("HERALD_FANOUT_CONCURRENCY", &concurrency_s),
        ("HERALD_MEMBERSHIP_SHARDS", "4"),
    ]);
    let tenant = unique("bench");
    eprintln!("connecting {connections} clients ...");
    let received = Arc::new(AtomicUsize::new(0));
    let clients: Vec<Client> = futures_util::stream::iter(0..connections)
        .map(|i| {
            let tenant = tenant.clone();
            async move { Client::connect(&format!("b{i}"), &tenant, &[], &[]).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    // Drain every socket so no client's buffer ever slows the server down.
    for mut c in clients {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(f) = c.next_within(Duration::from_secs(3600)).await {
                if f["type"] == "notification" {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let all = control(reqwest::Method::GET, "/connections", None).await;
    let ids: Vec<String> = all
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["tenant"] == tenant.as_str())
                .filter_map(|c| c["connectionId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids.len(), connections, "every client is connected");

    let frame = json!({"type": "notification", "id": "bench", "cursor": "01KAS0R4G0000000000000000Z", "topic": "tenant",
        "event": "bench.fanout", "title": "Benchmark", "createdAt": "2026-11-23T10:00:00Z"})
    .to_string();
    let endpoint = stack().ready.management_endpoint.clone();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let log = stack().log.clone();

    let mut raw_rates = Vec::new();
    let mut sdk_rates = Vec::new();
    let sdk_config = herald_e2e::sdk().await;
    let poster = herald::delivery::Poster::new(&sdk_config, &endpoint).expect("poster");
    let mut dispatch_rates = Vec::new();
    let _ = token("warm", &tenant, &[], &[]);
    // Each phase starts only when every client has received the previous phase's frames, so no
    // phase pays for the gateway still flushing the one before.
    let mut sent = 0usize;
    let quiet = |sent: usize| {
        let received = received.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while received.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    for round in 0..rounds {
        // Raw: a plain HTTP loop, same endpoint, same concurrency, same frame, same connections.
        quiet(sent).await;
        let started = Instant::now();
        let ok = futures_util::stream::iter(ids.iter())
            .map(|id| {
                let (http, url, frame) = (http.clone(), format!("{endpoint}/@connections/{id}"), frame.clone());
                async move {
                    http.post(url)
                        .body(frame)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                }
            })
            .buffer_unordered(concurrency)
            .filter(|ok| futures_util::future::ready(*ok))
            .count()
            .await;
        let raw = ok as f64 / started.elapsed().as_secs_f64();
        assert_eq!(ok, connections);

        // The same loop through Herald's poster (the AWS SDK client dispatch uses, SigV4 and all),
        // in this process: separates the SDK's cost from the rest of an invocation.
        sent += connections;
        quiet(sent).await;
        let started = Instant::now();
        let report = herald::delivery::fan_out(&poster, ids.iter().cloned(), &frame, concurrency).await;
        let sdk = report.delivered as f64 / started.elapsed().as_secs_f64();
        assert_eq!(report.delivered, connections);
        sdk_rates.push(sdk);

        sent += connections;
        quiet(sent).await;
        // Herald: one dispatch invocation with one notification to the whole tenant.
        let id = unique("fanout");
        let body = json!({"id": id, "tenant": tenant, "to": {"tenant": true}, "event": "bench.fanout", "title": "Benchmark"});
        let event = json!({"Records": [{"messageId": unique("m"), "receiptHandle": "r", "body": body.to_string(),
            "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench", "awsRegion": "us-east-1"}]});
        let resp = invoke("dispatch", &event).await;
        assert_eq!(resp["batchItemFailures"], json!([]));
        let line = dispatched_line(&log, &id).await;
        let delivered = line["delivered"].as_u64().unwrap_or(0) as usize;
        let posting_us = line["posting_us"].as_u64().unwrap_or(1);
        assert_eq!(delivered, connections, "{line}");
        let herald = delivered as f64 / (posting_us as f64 / 1e6);

        let sdk = sdk_rates.last().copied().unwrap_or_default();
        eprintln!(
            "round {}: raw {raw:.0}/s, SDK loop {sdk:.0}/s, dispatch {herald:.0}/s ({:.0} % of raw)",
            round + 1,
            100.0 * herald / raw
        );
        sent += connections;
        raw_rates.push(raw);
        dispatch_rates.push(herald);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    // Each round posts the frame three times to every client: raw, SDK loop, dispatch.
    while received.load(Ordering::Relaxed) < 3 * rounds * connections && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (raw, sdk, herald) = (median(&mut raw_rates), median(&mut sdk_rates), median(&mut dispatch_rates));
    println!("| connections | concurrency | rounds | raw HTTP loop | SDK poster loop | one dispatch invocation | dispatch / raw |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {connections} | {concurrency} | {rounds} | {raw:.0} posts/s | {sdk:.0} posts/s | {herald:.0} posts/s | {:.0} % |",
        100.0 * herald / raw
    );
    println!();
    println!(
        "frames received by the clients: {} of {}",
        received.load(Ordering::Relaxed),
        3 * rounds * connections
    );
}

/// The `dispatched` log line of notification `id` (its `posting_us` is the posting time).
async fn dispatched_line(log: &std::path::Path, id: &str) -> Value {
    for _ in 0..200 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(v) = text
            .lines()
            .filter_map(|l| l.split_once("] ").map(|(_, json)| json))
            .filter_map(|j| serde_json::from_str::<Value>(j).ok())
            .find(|v| v["message"] == "dispatched" && v["id"] == id)
        {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no dispatched line for {id} in {}", log.display());
}
