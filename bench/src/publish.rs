//! Client publish latency: a member of a 10-member room publishes, and the time until each of
//! the other nine members receives the frame is measured, for ephemeral publishes (typing:
//! posted from the `ws-message` invocation, no queue, no log) and logged ones (chat: claim, log
//! write, then the same posts). Also the time until the publisher gets `published`.
//!
//! Everything runs on the local stack (moto, the functions' real binary, Herald's gateway), so
//! the numbers are this machine's, not AWS's: they compare the two paths and show what the
//! emulator costs, nothing more. One publish every 100 ms (10 frames a second), inside the
//! connection's default frame budget of 20 a second.
//!
//! `bench/publish.sh [rounds]` (default 200 of each kind).

use std::time::{Duration, Instant};

use herald_e2e::{Client, stack_with, unique};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const MEMBERS: usize = 10;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    // The tests' settings, and the template's defaults for everything this measures.
    let _ = stack_with(herald_e2e::TEST_ENV);
    let tenant = unique("bench");
    let room = format!("room:{}", unique("r"));
    // Nine listeners: each reader task reports (arrival, seq, ephemeral) for every notification.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, u64, bool)>();
    for i in 1..MEMBERS {
        let mut c = Client::connect(&format!("m{i}"), &tenant, &[], &[&room]).await;
        assert_eq!(c.join(&room).await["type"], "joined");
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(f) = c.next_within(Duration::from_secs(3600)).await {
                if f["type"] == "notification"
                    && let Some(seq) = f["data"]["seq"].as_u64()
                {
                    let _ = tx.send((Instant::now(), seq, f["ephemeral"] == true));
                }
            }
        });
    }
    let mut publisher = Client::connect("m0", &tenant, &[], &[&room]).await;
    assert_eq!(publisher.join(&room).await["type"], "joined");

    let mut results: Vec<(&str, Vec<f64>, Vec<f64>)> = Vec::new();
    let mut seq = 0u64;
    for ephemeral in [true, false] {
        let mut delivery = Vec::new();
        let mut acks = Vec::new();
        // A few unmeasured rounds first: warm instances, pooled connections.
        for round in 0..rounds + 5 {
            seq += 1;
            let frame = json!({"action": "publish", "group": room, "event": if ephemeral { "typing" } else { "chat.message" },
                "ephemeral": ephemeral, "data": {"seq": seq}, "ref": seq});
            let sent = Instant::now();
            let reply: Value = publisher.request(frame, "published").await;
            assert_eq!(reply["type"], "published", "{reply}");
            let acked = sent.elapsed();
            let mut got = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while got < MEMBERS - 1 {
                let (at, s, eph) = tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| panic!("round {round}: {got} of {} members received", MEMBERS - 1));
                if s != seq {
                    continue; // a late copy of an earlier round
                }
                assert_eq!(eph, ephemeral);
                got += 1;
                if round >= 5 {
                    delivery.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                }
            }
            if round >= 5 {
                acks.push(acked.as_secs_f64() * 1000.0);
            }
            // 10 publishes a second, inside the frame budget.
            tokio::time::sleep_until(tokio::time::Instant::from_std(sent + Duration::from_millis(100))).await;
        }
        delivery.sort_by(f64::total_cmp);
        acks.sort_by(f64::total_cmp);
        results.push((if ephemeral { "ephemeral (typing)" } else { "logged (chat)" }, delivery, acks));
    }

    println!("| publish | rounds | deliveries | delivery p50 | delivery p99 | `published` p50 | `published` p99 |");
    println!("|---|---|---|---|---|---|---|");
    for (kind, delivery, acks) in &results {
        println!(
            "| {kind} | {rounds} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            delivery.len(),
            percentile(delivery, 0.5),
            percentile(delivery, 0.99),
            percentile(acks, 0.5),
            percentile(acks, 0.99),
        );
    }
}
