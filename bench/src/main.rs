//! How fast does one `dispatch` invocation post to N live connections, compared with the raw
//! request rate of the same `@connections` endpoint driven by a plain HTTP loop at the same
//! concurrency? Both sides post the same frame to the same N real WebSocket connections of the
//! local stack, so the difference is Herald's own overhead (SigV4 signing, task scheduling,
//! outcome bookkeeping), not the endpoint's. The stack runs with `--management-auth none` (see
//! run.sh) so the unsigned raw loop is accepted; Herald still signs every post.
//!
//! `dispatch` runs in a process of its own, next to the gateway and this process (whose 2,000
//! clients receive every frame). On a two-core machine a third busy process changes how much CPU
//! the gateway gets, so the baseline for `dispatch` is the raw loop in a process of its own too
//! (this binary, started as `fanout-bench raw-loop`, kept alive across rounds like a warm Lambda).
//! The in-process raw loop is the baseline for the in-process poster loop.
//!
//! `bench/run.sh [connections] [concurrency] [rounds]`

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use herald_e2e::{Client, control, invoke, stack, stack_with, token, unique};
use serde_json::{Value, json};

fn arg(n: usize, default: usize) -> usize {
    std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// A plain HTTP loop: every id gets `frame`, at most `concurrency` requests in flight. Returns
/// the number of 2xx answers and the elapsed time.
async fn raw_loop(http: &reqwest::Client, endpoint: &str, ids: &[String], frame: &str, concurrency: usize) -> (usize, Duration) {
    let started = Instant::now();
    let ok = futures_util::stream::iter(ids.iter())
        .map(|id| {
            let (http, url, frame) = (http.clone(), format!("{endpoint}/@connections/{id}"), frame.to_owned());
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
    (ok, started.elapsed())
}

fn raw_client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client")
}

/// `fanout-bench raw-loop ENDPOINT CONCURRENCY`: reads the frame, then the ids (one per line, an
/// empty line ends them), then runs the raw loop for every `go` line, answering `OK MICROS`.
async fn raw_loop_process() {
    let endpoint = std::env::args().nth(2).expect("endpoint");
    let concurrency = arg(3, 64);
    let mut lines = std::io::stdin().lock().lines().map_while(Result::ok);
    let frame = lines.next().expect("frame");
    let ids: Vec<String> = lines.by_ref().take_while(|l| !l.is_empty()).collect();
    let http = raw_client(concurrency);
    for line in lines {
        if line == "go" {
            let (ok, elapsed) = raw_loop(&http, &endpoint, &ids, &frame, concurrency).await;
            println!("{ok} {}", elapsed.as_micros());
        }
    }
}

/// The raw loop in its own process, kept alive (warm pool) across rounds.
struct RawLoopProcess {
    child: Child,
    out: std::io::BufReader<ChildStdout>,
}

impl RawLoopProcess {
    fn start(endpoint: &str, concurrency: usize, frame: &str, ids: &[String]) -> Self {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .args(["raw-loop", endpoint, &concurrency.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("raw-loop process");
        let stdin = child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{frame}\n{}\n", ids.join("\n")).expect("ids");
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        Self { child, out }
    }

    /// Runs one loop; blocks this thread only (the clients' tasks keep running on the workers).
    fn run(&mut self) -> (usize, Duration) {
        tokio::task::block_in_place(|| {
            let stdin = self.child.stdin.as_mut().expect("stdin");
            writeln!(stdin, "go").expect("go");
            stdin.flush().expect("flush");
            let mut line = String::new();
            self.out.read_line(&mut line).expect("result");
            let (ok, micros) = line.trim().split_once(' ').expect("OK MICROS");
            (ok.parse().expect("ok"), Duration::from_micros(micros.parse().expect("micros")))
        })
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("raw-loop") {
        return raw_loop_process().await;
    }
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
    let http = raw_client(concurrency);
    let mut raw_process = RawLoopProcess::start(&endpoint, concurrency, &frame, &ids);
    let poster = herald::io::delivery::Poster::new(&herald_e2e::sdk().await, &endpoint).expect("poster");
    let log = stack().log.clone();
    let _ = token("warm", &tenant, &[], &[]);

    // rates[phase] = one rate per round.
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut sent = 0usize;
    for round in 0..rounds {
        // Alternate the order of the phases, so none always follows the same one.
        let mut order = [Phase::RawProcess, Phase::Dispatch, Phase::RawInProcess, Phase::PosterInProcess];
        if round % 2 == 1 {
            order.reverse();
        }
        for phase in order {
            // Each phase starts only when every client has received the previous phase's frames,
            // so no phase pays for the gateway still flushing the one before.
            quiet(&received, sent).await;
            let (delivered, elapsed) = match phase {
                Phase::RawProcess => raw_process.run(),
                Phase::RawInProcess => raw_loop(&http, &endpoint, &ids, &frame, concurrency).await,
                Phase::PosterInProcess => {
                    let started = Instant::now();
                    let report = herald::io::delivery::fan_out(&poster, ids.iter().cloned(), &frame, concurrency).await;
                    (report.delivered, started.elapsed())
                }
                Phase::Dispatch => dispatch_once(&tenant, &log).await,
            };
            assert_eq!(delivered, connections, "{phase:?}");
            rates[phase as usize].push(delivered as f64 / elapsed.as_secs_f64());
            sent += connections;
        }
        let last = |p: Phase| rates[p as usize].last().copied().unwrap_or_default();
        eprintln!(
            "round {}: raw loop {:.0}/s, dispatch {:.0}/s ({:.0} %) | in process: raw {:.0}/s, poster {:.0}/s ({:.0} %)",
            round + 1,
            last(Phase::RawProcess),
            last(Phase::Dispatch),
            100.0 * last(Phase::Dispatch) / last(Phase::RawProcess),
            last(Phase::RawInProcess),
            last(Phase::PosterInProcess),
            100.0 * last(Phase::PosterInProcess) / last(Phase::RawInProcess),
        );
    }
    quiet(&received, sent).await;

    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let ratios = |num: Phase, den: Phase| -> Vec<f64> {
        rates[num as usize]
            .iter()
            .zip(&rates[den as usize])
            .map(|(n, d)| 100.0 * n / d)
            .collect()
    };
    let m = |p: Phase| median(&rates[p as usize]);
    let dispatch_ratios = ratios(Phase::Dispatch, Phase::RawProcess);
    println!(
        "| connections | concurrency | rounds | raw loop (own process) | one dispatch invocation | dispatch / raw | raw loop (in process) | Herald poster loop (in process) | poster / raw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {connections} | {concurrency} | {rounds} | {:.0} posts/s | {:.0} posts/s | {:.0} % | {:.0} posts/s | {:.0} posts/s | {:.0} % |",
        m(Phase::RawProcess),
        m(Phase::Dispatch),
        median(&dispatch_ratios),
        m(Phase::RawInProcess),
        m(Phase::PosterInProcess),
        median(&ratios(Phase::PosterInProcess, Phase::RawInProcess)),
    );
    println!();
    println!(
        "medians of the per-round values; dispatch / raw per round: {:.0?} %",
        dispatch_ratios
    );
    println!(
        "frames received by the clients: {} of {}",
        received.load(Ordering::Relaxed),
        4 * rounds * connections
    );
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    RawProcess = 0,
    Dispatch = 1,
    RawInProcess = 2,
    PosterInProcess = 3,
}

/// Waits (up to a minute) until the clients have received `sent` notification frames.
async fn quiet(received: &AtomicUsize, sent: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One invocation of the real `dispatch` binary with one notification to the whole tenant; its
/// rate is delivered posts over the posting time it logs (`posting_us`: the fan-out itself,
/// without the claim, the log write and the membership queries).
async fn dispatch_once(tenant: &str, log: &std::path::Path) -> (usize, Duration) {
    let id = unique("fanout");
    let body = json!({"id": id, "tenant": tenant, "to": {"tenant": true}, "event": "bench.fanout", "title": "Benchmark"});
    let event = json!({"Records": [{"messageId": unique("m"), "receiptHandle": "r", "body": body.to_string(),
        "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench", "awsRegion": "us-east-1"}]});
    let resp = invoke("dispatch", &event).await;
    assert_eq!(resp["batchItemFailures"], json!([]));
    let line = dispatched_line(log, &id).await;
    let delivered = line["delivered"].as_u64().unwrap_or(0) as usize;
    let posting_us = line["posting_us"].as_u64().unwrap_or(1);
    (delivered, Duration::from_micros(posting_us))
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
