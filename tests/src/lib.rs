//! Harness for Herald's end-to-end tests.
//!
//! Each test binary starts one local stack (`infra/herald_local`): moto server, the real function
//! binaries behind the Lambda Runtime API, the WebSocket gateway with its `@connections` API, the
//! HTTP API, SQS polling and the scheduler. Tests talk to it the way clients and producers do —
//! WebSocket frames, SQS messages, HTTP — and isolate themselves with unique tenants and users,
//! so they can share one stack and run in parallel.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Jwt {
    pub issuer: String,
    pub audience: String,
    pub hs256_secret: String,
}

/// The ready file the local stack writes once everything is up.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ready {
    pub websocket_url: String,
    pub management_endpoint: String,
    pub http_url: String,
    pub control_url: String,
    pub aws_endpoint: String,
    pub region: String,
    pub queues: std::collections::HashMap<String, String>,
    pub tables: std::collections::HashMap<String, String>,
    pub schedule_group: String,
    pub jwt: Jwt,
    pub dev_token: String,
    /// What the functions sign `@connections` calls with (the stack's own moto credentials).
    pub management_credentials: ManagementCredentials,
    /// The local Web Push service (infra/herald_local/pushservice.py).
    pub push_service_url: String,
    /// The VAPID public key the stack gave the functions.
    pub vapid_public_key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagementCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

pub struct Stack {
    pub ready: Ready,
    pub log: PathBuf,
    _child: Child,
}

/// Settings the tests run the functions with: small shards so a 2,000-member group really
/// spreads over several invocations, few retry attempts so exhaustion is observable quickly.
pub const TEST_ENV: &[(&str, &str)] = &[
    ("HERALD_FANOUT_SHARD_SIZE", "250"),
    ("HERALD_MEMBERSHIP_SHARDS", "4"),
    ("HERALD_RETRY_MAX_ATTEMPTS", "2"),
    ("HERALD_FANOUT_CONCURRENCY", "32"),
    // Long enough that a burst's frames for a batching connection meet in one window on the
    // local stack's slower calls; only connections that opted in (`Client::connect_batched`) wait.
    ("HERALD_AGGREGATE_MS", "1000"),
    // Shorter than the stack's 10 s visibility timeout (as the template's 90 s is shorter than
    // the queue's 360 s), so a redelivery after a crash takes the claim over.
    ("HERALD_CLAIM_LEASE_SECONDS", "5"),
    // Tests poll the HTTP API as one user many times a second (`eventually`): a request budget
    // above that, low enough for the budget's own test to exceed it.
    ("HERALD_HTTP_RATE", "50"),
    ("HERALD_HTTP_BURST", "100"),
    // Presence's grace period, shorter than the default 10 s so that offline events come quickly;
    // a reconnect still takes well under it.
    ("HERALD_PRESENCE_GRACE_SECONDS", "3"),
    // Presence events only in groups of at most five live connections, so the cap is testable.
    ("HERALD_PRESENCE_MAX_MEMBERS", "5"),
    // Escalation's shortest wait, 60 s in production, so escalation tests wait seconds.
    ("HERALD_ESCALATE_MIN_SECONDS", "1"),
    // A user's pending reminders, 100 in production: few enough for the cap's test to reach.
    ("HERALD_REMINDER_MAX_PENDING", "10"),
];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The target directory whose function binary the stack runs (`HERALD_PROFILE`, default `debug`,
/// so a plain `cargo build && cargo test` runs what it just built).
pub fn profile() -> String {
    std::env::var("HERALD_PROFILE").unwrap_or_else(|_| "debug".into())
}

static STACK: OnceLock<Stack> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The shared local stack of this test binary, started on first use.
pub fn stack() -> &'static Stack {
    stack_with(TEST_ENV)
}

/// The shared stack, started with `env` for the functions if this is the first use.
pub fn stack_with(env: &[(&str, &str)]) -> &'static Stack {
    STACK.get_or_init(|| start_stack(env))
}

fn start_stack(env: &[(&str, &str)]) -> Stack {
    start_stack_at(None, env)
}

/// A stack of its own on another template (e.g. one with a grant removed), beside the shared
/// one. Its calls stay out of `make test`'s grant report: a refusal there is the point.
pub fn start_stack_on(template: &Path, env: &[(&str, &str)]) -> Stack {
    start_stack_at(Some(template), env)
}

fn start_stack_at(template: Option<&Path>, env: &[(&str, &str)]) -> Stack {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make test` (it creates the virtualenv)",
        python.display()
    );
    // One binary serves every function (functions/lambda); the stack starts it with _HANDLER.
    let bin = root.join("target").join(profile()).join("herald");
    assert!(
        bin.exists(),
        "{} is missing: build the functions first (`make test` does)",
        bin.display()
    );
    let name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "e2e".into());
    let suffix = template
        .and_then(|t| t.parent().and_then(Path::file_name))
        .map(|d| format!("-{}", d.to_string_lossy()))
        .unwrap_or_default();
    let dir = root.join("target/e2e").join(format!("{name}-{}{suffix}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create target/e2e");
    let ready_file = dir.join("ready.json");
    let log = dir.join("stack.log");
    let log_file = std::fs::File::create(&log).expect("create stack log");
    let mut cmd = Command::new(&python);
    cmd.current_dir(&root)
        .env("PYTHONPATH", root.join("infra"))
        .env_remove("AWS_ENDPOINT_URL")
        .args(["-m", "herald_local", "--profile", &profile(), "--visibility-timeout", "10"])
        // `make test` runs several stacks on two cores: a function's duration here includes its
        // wait for the CPU and for moto, which a Lambda's does not (a 10 s join timed out at
        // 10.4 s while moto answered each call in about a second).
        .args(["--timeout-scale", "3"])
        .arg("--ready-file")
        .arg(&ready_file)
        .args(["--parent-pid", &std::process::id().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file.try_clone().expect("log")))
        .stderr(Stdio::from(log_file));
    for (k, v) in env {
        cmd.args(["--env", &format!("{k}={v}")]);
    }
    if let Some(template) = template {
        cmd.arg("--template")
            .arg(template)
            .arg("--binary-dir")
            .arg(root.join("target").join(profile()))
            .env_remove("HERALD_LOCAL_GRANTS_DIR");
    }
    let mut child = cmd.spawn().expect("start the local stack");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready_file)
            && let Ok(ready) = serde_json::from_str::<Ready>(&text)
        {
            return Stack { ready, log, _child: child };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("local stack exited with {status}; log: {}\n{}", log.display(), tail(&log));
        }
        assert!(
            Instant::now() < deadline,
            "local stack not ready after 90 s; log: {}\n{}",
            log.display(),
            tail(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What went wrong in the stack so far, for a failing test's message: the last warnings and
/// errors of the functions and of the stack itself, and invocations that did not succeed. A
/// test that times out on a busy CI machine then says whether something failed or was slow.
pub fn trouble() -> String {
    let Some(stack) = STACK.get() else {
        return String::new();
    };
    let text = std::fs::read_to_string(&stack.log).unwrap_or_default();
    let marks = [
        "\"level\":\"WARN",
        "\"level\":\"ERROR",
        " WARNING ",
        " ERROR ",
        "Status: error",
        "Status: timeout",
    ];
    let lines: Vec<&str> = text.lines().filter(|l| marks.iter().any(|m| l.contains(m))).collect();
    let last: Vec<String> = lines[lines.len().saturating_sub(30)..]
        .iter()
        .map(|l| l.chars().take(400).collect())
        .collect();
    format!(
        "\n--- the stack's last {} of {} warnings and failures ({}):\n{}",
        last.len(),
        lines.len(),
        stack.log.display(),
        last.join("\n")
    )
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A name no other test uses (tenants, users, groups, ids).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 100_000_000)
        .unwrap_or(0);
    format!("{prefix}-{}-{t}-{n}", std::process::id())
}

/// Signs an HS256 development token with the stack's secret.
pub fn token(sub: &str, tenant: &str, roles: &[&str], groups: &[&str]) -> String {
    token_with(json!({"sub": sub, "tenant": tenant, "roles": roles, "groups": groups}))
}

pub fn token_with(claims: Value) -> String {
    sign(&stack().ready.jwt, claims)
}

fn sign(jwt: &Jwt, mut claims: Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let obj = claims.as_object_mut().expect("claims object");
    obj.entry("iss").or_insert(json!(jwt.issuer));
    obj.entry("aud").or_insert(json!(jwt.audience));
    obj.entry("exp").or_insert(json!(now + 3600));
    obj.entry("iat").or_insert(json!(now));
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(jwt.hs256_secret.as_bytes()),
    )
    .expect("sign token")
}

/// A WebSocket client speaking the Herald client protocol.
pub struct Client {
    ws: Ws,
    pub user: String,
    pub tenant: String,
}

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(45);

impl Stack {
    /// The stack's own log, as written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client of this stack (`Client::connect` is one of the shared stack).
    pub async fn client(&self, user: &str, tenant: &str) -> Client {
        let t = sign(&self.ready.jwt, json!({"sub": user, "tenant": tenant, "roles": [], "groups": []}));
        Client::at(&self.ready.websocket_url, &t, user, tenant).await
    }

    /// Sends a producer message to this stack's dispatch queue.
    pub async fn publish(&self, message: Value) {
        aws_sdk_sqs::Client::new(&sdk_of(&self.ready).await)
            .send_message()
            .queue_url(self.ready.queues.get("DispatchQueue").expect("dispatch queue"))
            .message_body(message.to_string())
            .send()
            .await
            .expect("publish");
    }
}

impl Client {
    pub async fn connect(user: &str, tenant: &str, roles: &[&str], groups: &[&str]) -> Client {
        let t = token(user, tenant, roles, groups);
        Client::at(&stack().ready.websocket_url, &t, user, tenant).await
    }

    /// A connection that opted in to batch frames (`?batch=1`).
    pub async fn connect_batched(user: &str, tenant: &str) -> Client {
        let t = token(user, tenant, &[], &[]);
        Client::at(&format!("{}?batch=1", stack().ready.websocket_url), &t, user, tenant).await
    }

    async fn at(websocket_url: &str, token: &str, user: &str, tenant: &str) -> Client {
        let sep = if websocket_url.contains('?') { '&' } else { '?' };
        let ws = connect_raw(&format!("{websocket_url}{sep}token={token}"), None)
            .await
            .expect("connect");
        Client {
            ws,
            user: user.into(),
            tenant: tenant.into(),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws.send(Message::text(frame.to_string())).await.expect("send frame");
    }

    pub async fn send_text(&mut self, text: String) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(Message::text(text)).await
    }

    /// The next JSON frame, or `None` if nothing arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()??;
            match msg {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("server frames are JSON")),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next text frame as it came (not necessarily JSON), or `None` within `wait`.
    pub async fn next_text_within(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?? {
                Ok(Message::Text(t)) => return Some(t.to_string()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    pub async fn next(&mut self) -> Value {
        self.next_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("{}: no frame within {WAIT:?}{}", self.user, trouble()))
    }

    /// Sends a request frame and returns the first frame of type `reply` (or `error`).
    pub async fn request(&mut self, frame: Value, reply: &str) -> Value {
        self.send(frame).await;
        loop {
            let f = self.next().await;
            if f["type"] == reply || f["type"] == "error" {
                return f;
            }
        }
    }

    /// Resumes from the start of the log, as a client does on connecting: from then on its live
    /// frames carry cursors (a connection that has not caught up gets them without). Asserts it
    /// took one page (the tests' users are fresh).
    pub async fn catch_up(&mut self) -> Value {
        let resumed = self
            .request(json!({"action": "resume", "ref": unique("catch-up")}), "resumed")
            .await;
        assert_eq!(
            (resumed["type"].as_str(), resumed["more"].as_bool()),
            (Some("resumed"), Some(false)),
            "{resumed}"
        );
        resumed
    }

    pub async fn join(&mut self, group: &str) -> Value {
        self.request(json!({"action": "join", "group": group, "ref": unique("j")}), "joined")
            .await
    }

    /// The next notification frame (other frames are skipped).
    pub async fn notification(&mut self) -> Value {
        loop {
            let f = self.next().await;
            if f["type"] == "notification" {
                return f;
            }
        }
    }

    /// Asserts that no notification arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Some(f) = self
            .next_within(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            assert_ne!(f["type"], "notification", "{}: unexpected notification {f}", self.user);
        }
    }

    /// Waits for the socket to be closed by the server and returns the close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Drain until the server confirms, so `$disconnect` has started.
        let _ = tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
    }

    /// This client's connection id, as the gateway knows it.
    pub async fn connection_id(&self) -> String {
        connection_ids_of(&self.user)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no live connection for {}", self.user))
    }
}

/// Opens a WebSocket, optionally offering subprotocols.
pub async fn connect_raw(url: &str, protocols: Option<&str>) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request()?;
    if let Some(p) = protocols {
        req.headers_mut().insert("Sec-WebSocket-Protocol", p.parse().expect("header value"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(ws)
}

/// The handshake's HTTP status when the server refuses it.
pub async fn refused_status(url: &str, protocols: Option<&str>) -> Option<u16> {
    match connect_raw(url, protocols).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Some(resp.status().as_u16()),
        _ => None,
    }
}

/// A fresh HTTP client: each `#[tokio::test]` has its own runtime, and a pooled connection
/// from a finished test's runtime is dead in the next one.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// Calls the local stack's control API.
pub async fn control(method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let url = format!("{}{path}", stack().ready.control_url);
    let mut req = http().request(method, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("control {path}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "control {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

pub async fn connection_ids_of(user: &str) -> Vec<String> {
    let all = control(reqwest::Method::GET, "/connections", None).await;
    all.as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["user"] == user)
                .filter_map(|c| c["connectionId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Invokes a function with an event through the stack (the `sam local invoke -e` of Herald).
pub async fn invoke(function: &str, event: &Value) -> Value {
    control(reqwest::Method::POST, &format!("/invoke/{function}"), Some(event.clone())).await
}

/// The SDK configuration of the functions: the stack's endpoint, region and credentials (moto
/// takes any; the gateway's `@connections` checks SigV4 signatures against these).
pub async fn sdk() -> aws_config::SdkConfig {
    sdk_of(&stack().ready).await
}

async fn sdk_of(r: &Ready) -> aws_config::SdkConfig {
    let c = &r.management_credentials;
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&r.aws_endpoint)
        .region(aws_config::Region::new(r.region.clone()))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            &c.access_key_id,
            &c.secret_access_key,
            None,
            None,
            "herald-e2e",
        ))
        .load()
        .await
}

/// Herald's own `@connections` client, signing like the functions do.
pub async fn poster() -> herald::io::delivery::Poster {
    herald::io::delivery::Poster::new(&sdk().await, &stack().ready.management_endpoint).expect("poster")
}

pub async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk().await)
}

pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk().await)
}

/// Herald's own store over the stack's tables, for writing state a test needs directly.
pub async fn store() -> herald::io::store::Store {
    herald::io::store::Store::new(
        dynamodb().await,
        &herald::domain::config::Tables {
            connections: table("ConnectionsTable"),
            notifications: table("NotificationsTable"),
        },
    )
}

/// The ids of a `missed` answer's items, in order.
pub fn item_ids(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["id"].as_str())
        .collect()
}

pub fn queue(logical_id: &str) -> String {
    stack()
        .ready
        .queues
        .get(logical_id)
        .cloned()
        .unwrap_or_else(|| panic!("no queue {logical_id}"))
}

pub fn table(logical_id: &str) -> String {
    stack()
        .ready
        .tables
        .get(logical_id)
        .cloned()
        .unwrap_or_else(|| panic!("no table {logical_id}"))
}

/// Sends a producer message to the dispatch queue, as a service would.
pub async fn publish(message: Value) {
    sqs()
        .await
        .send_message()
        .queue_url(queue("DispatchQueue"))
        .message_body(message.to_string())
        .send()
        .await
        .expect("SQS send");
}

/// Sends `bodies` to the dispatch queue in one `SendMessageBatch` (at most 10, as SQS allows).
pub async fn publish_batch<I: IntoIterator<Item = String>>(bodies: I) {
    let entries: Vec<aws_sdk_sqs::types::SendMessageBatchRequestEntry> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .message_body(body)
                .build()
                .expect("entry")
        })
        .collect();
    sqs()
        .await
        .send_message_batch()
        .queue_url(queue("DispatchQueue"))
        .set_entries(Some(entries))
        .send()
        .await
        .expect("batch");
}

/// The server frames one WebSocket message carries: a batch message's (`{"type":"batch",
/// "frames":[…]}`) in order, or the message itself; `None` when it is not JSON.
pub fn unpack(text: &str) -> Option<Vec<Value>> {
    match serde_json::from_str::<Value>(text).ok()? {
        Value::Object(mut f) if f.get("type").and_then(Value::as_str) == Some("batch") => match f.remove("frames") {
            Some(Value::Array(frames)) => Some(frames),
            _ => Some(Vec::new()),
        },
        f => Some(vec![f]),
    }
}

/// Polls `check` until it returns `Some`, or panics after `WAIT`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}{}", trouble());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Loads an `events/` fixture.
pub fn fixture(name: &str) -> Value {
    let path = repo_root().join("events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Calls the HTTP API with a bearer token; returns the status and the JSON body (or `Null`).
pub async fn api(method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{path}", stack().ready.http_url);
    let mut req = http().request(method, &url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Like [`invoke`], but returns the control API's status too (502 when the function failed).
pub async fn invoke_raw(function: &str, event: &Value) -> (u16, Value) {
    let url = format!("{}/invoke/{function}", stack().ready.control_url);
    let resp = http()
        .post(&url)
        .json(event)
        .send()
        .await
        .unwrap_or_else(|e| panic!("invoke {function}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The sort keys stored under a partition key.
pub async fn sort_keys(table_id: &str, pk: &str) -> Vec<String> {
    let out = dynamodb()
        .await
        .query()
        .table_name(table(table_id))
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("query");
    out.items()
        .iter()
        .filter_map(|i| i.get("sk").and_then(|v| v.as_s().ok()).cloned())
        .collect()
}

/// Sets `requestContext.connectionId` and the authorizer context of a WebSocket event fixture.
pub fn as_caller(mut event: Value, connection_id: &str, user: &str, tenant: &str, groups: &str) -> Value {
    let rc = &mut event["requestContext"];
    rc["connectionId"] = json!(connection_id);
    rc["authorizer"]["principalId"] = json!(user);
    rc["authorizer"]["user"] = json!(user);
    rc["authorizer"]["tenant"] = json!(tenant);
    rc["authorizer"]["groups"] = json!(groups);
    event
}

/// Receives from a queue until a message whose body contains `needle` shows up.
pub async fn find_message(queue_id: &str, needle: &str) -> aws_sdk_sqs::types::Message {
    let client = sqs().await;
    let url = queue(queue_id);
    eventually(&format!("a message containing {needle} on {queue_id}"), || {
        let client = client.clone();
        let url = url.clone();
        async move {
            let out = client
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .visibility_timeout(0)
                .message_attribute_names("All")
                .send()
                .await
                .ok()?;
            out.messages
                .unwrap_or_default()
                .into_iter()
                .find(|m| m.body().is_some_and(|b| b.contains(needle)))
        }
    })
    .await
}

/// One item of a table (strongly consistent read), by its keys.
pub async fn item(
    table_id: &str,
    pk: &str,
    sk: &str,
) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    use aws_sdk_dynamodb::types::AttributeValue;
    dynamodb()
        .await
        .get_item()
        .table_name(table(table_id))
        .key("pk", AttributeValue::S(pk.to_owned()))
        .key("sk", AttributeValue::S(sk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
}

/// Waits until dispatch finished the notification `id` of `tenant` (its claim is `done`).
pub async fn dispatched(tenant: &str, id: &str) {
    eventually(&format!("{id} dispatched"), || async {
        let claim = item("NotificationsTable", &format!("i#{tenant}#{id}"), "#").await?;
        (claim.get("state").and_then(|s| s.as_s().ok()).map(String::as_str) == Some("done")).then_some(())
    })
    .await;
}

/// Waits until the fan-out of `id` recorded that it posted to every member connection (the
/// claim's `postedAt`, which a resume reads to spare what a connection got live).
pub async fn posted(tenant: &str, id: &str) {
    eventually(&format!("{id} posted"), || async {
        let claim = item("NotificationsTable", &format!("i#{tenant}#{id}"), "#").await?;
        claim.contains_key("postedAt").then_some(())
    })
    .await;
}

/// The EventBridge schedule named `name` in Herald's schedule group, if there is one now.
pub async fn schedule_named(name: &str) -> Option<aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput> {
    aws_sdk_scheduler::Client::new(&sdk().await)
        .get_schedule()
        .name(name)
        .group_name(stack().ready.schedule_group.clone())
        .send()
        .await
        .ok()
}

/// The `{group}#{shard}` memberships recorded on a connection item, sorted.
pub async fn memberships_of(connection_id: &str) -> Vec<String> {
    let mut set: Vec<String> = item("ConnectionsTable", &format!("c#{connection_id}"), "#meta")
        .await
        .as_ref()
        .and_then(|i| i.get("memberships"))
        .and_then(|v| v.as_ss().ok())
        .cloned()
        .unwrap_or_default();
    set.sort();
    set
}

/// The group names of a connection's memberships, sorted.
pub async fn groups_of(connection_id: &str) -> Vec<String> {
    memberships_of(connection_id)
        .await
        .into_iter()
        .filter_map(|m| m.rsplit_once('#').map(|(g, _)| g.to_owned()))
        .collect()
}

/// Time travel for a one-time schedule (`name` in the stack's group): it fires at `at` with
/// `input` as its target's input, as if the time it was made for had come. The local scheduler
/// fires it like EventBridge Scheduler would, and deletes it after.
pub async fn reschedule(name: &str, target: &aws_sdk_scheduler::types::Target, input: &Value, at: chrono::DateTime<chrono::Utc>) {
    use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Target};
    let target = Target::builder()
        .arn(target.arn())
        .role_arn(target.role_arn())
        .input(input.to_string())
        .build()
        .expect("target");
    aws_sdk_scheduler::Client::new(&sdk().await)
        .update_schedule()
        .name(name)
        .group_name(&stack().ready.schedule_group)
        .schedule_expression(herald::services::schedule::at_expression(&at))
        .schedule_expression_timezone("UTC")
        .flexible_time_window(
            FlexibleTimeWindow::builder()
                .mode(FlexibleTimeWindowMode::Off)
                .build()
                .expect("window"),
        )
        .target(target)
        .action_after_completion(ActionAfterCompletion::Delete)
        .state(ScheduleState::Enabled)
        .send()
        .await
        .expect("update schedule");
}
