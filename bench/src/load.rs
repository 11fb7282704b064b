//! `herald-load`: a load-test tool. It opens N WebSocket clients across tenants and groups,
//! publishes M notifications of every target kind (user, users, group, tenant, all) at a set rate
//! through SQS or the HTTP API, and reports end-to-end latency (producer send → frame at the
//! client: p50, p95, p99, max), deliveries expected and received, duplicates, and what was lost
//! after a final `resume` (must be 0). A progress line while it runs; a JSON and a Markdown
//! report at the end.
//!
//! Against the local stack by default (it starts one, loopback only, with the binaries of
//! target/`$HERALD_PROFILE`, `debug` unless set), or against a deployed stack given its URLs and a way to mint tokens
//! (docs/deploy.md, "Load testing a deployment"):
//!
//! ```text
//! herald-load [--clients 1000] [--tenants 4] [--groups 8] [--notifications 2000] [--rate 100]
//!             [--via sqs|http|mixed] [--kinds user,users,group,tenant,all] [--max-seconds 600]
//!             [--report bench/load-report] [--connect-concurrency 64] [--payload-bytes 0] [--batch]
//!             [--aggregate-ms N]   (local stack only: its aggregation window instead of the template's)
//!             [--post-faults 0.2]  (local stack only: that share of posts answers 429 while producing)
//!   deployed: --ws-url wss://... --http-url https://... [--queue-url https://sqs...]
//!             (--hs256-secret S --issuer I --audience A | --token-command 'CMD')
//! ```
//! `--token-command` runs `CMD SUB TENANT ROLES GROUPS` (roles and groups comma-separated) and
//! reads the token from its standard output.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ------------------------------------------------------------------------------ options

#[derive(Debug, Clone)]
struct Options {
    clients: usize,
    tenants: usize,
    groups: usize,
    notifications: usize,
    rate: f64,
    via: Via,
    kinds: Vec<Kind>,
    max_seconds: u64,
    report: String,
    connect_concurrency: usize,
    /// Bytes of padding in each notification's `data` (sizes what DynamoDB and the frames carry).
    payload_bytes: usize,
    /// Clients connect with `?batch=1`, as herald.js does: resume pages and bursts come packed.
    batch: bool,
    /// The local stack's aggregation window (`HERALD_AGGREGATE_MS`), instead of the template's.
    aggregate_ms: Option<u64>,
    /// Local stack only: this share of `@connections` posts answers 429 while notifications go
    /// out, as a throttled management API would; Herald closes a connection a frame could not
    /// reach, and its client reconnects and resumes.
    post_faults: Option<f64>,
    target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Sqs,
    Http,
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    User,
    Users,
    Group,
    Tenant,
    All,
}

impl Kind {
    fn parse(s: &str) -> Result<Kind, String> {
        Ok(match s {
            "user" => Kind::User,
            "users" => Kind::Users,
            "group" => Kind::Group,
            "tenant" => Kind::Tenant,
            "all" => Kind::All,
            other => return Err(format!("unknown target kind {other:?} (user, users, group, tenant, all)")),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Users => "users",
            Kind::Group => "group",
            Kind::Tenant => "tenant",
            Kind::All => "all",
        }
    }
}

#[derive(Debug, Clone)]
enum Target {
    Local,
    Deployed {
        ws_url: String,
        http_url: String,
        queue_url: Option<String>,
        tokens: TokenSource,
    },
}

#[derive(Debug, Clone)]
enum TokenSource {
    Hs256 { secret: String, issuer: String, audience: String },
    Command(String),
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        clients: 1000,
        tenants: 4,
        groups: 8,
        notifications: 2000,
        rate: 100.0,
        via: Via::Sqs,
        kinds: vec![Kind::User, Kind::Users, Kind::Group, Kind::Tenant, Kind::All],
        max_seconds: 600,
        report: "bench/load-report".into(),
        connect_concurrency: 64,
        payload_bytes: 0,
        batch: false,
        aggregate_ms: None,
        post_faults: None,
        target: Target::Local,
    };
    let (mut ws_url, mut http_url, mut queue_url) = (None, None, None);
    let (mut secret, mut issuer, mut audience, mut command) = (None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|_| format!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--clients" => o.clients = number(value()?)?,
            "--tenants" => o.tenants = number(value()?)?.max(1),
            "--groups" => o.groups = number(value()?)?.max(1),
            "--notifications" => o.notifications = number(value()?)?,
            "--rate" => o.rate = value()?.parse::<f64>().map_err(|e| format!("--rate: {e}"))?.max(0.1),
            "--via" => {
                o.via = match value()?.as_str() {
                    "sqs" => Via::Sqs,
                    "http" => Via::Http,
                    "mixed" => Via::Mixed,
                    v => return Err(format!("--via: sqs, http or mixed, not {v}")),
                }
            }
            "--kinds" => o.kinds = value()?.split(',').map(Kind::parse).collect::<Result<_, _>>()?,
            "--max-seconds" => o.max_seconds = number(value()?)? as u64,
            "--report" => o.report = value()?,
            "--connect-concurrency" => o.connect_concurrency = number(value()?)?.max(1),
            "--payload-bytes" => o.payload_bytes = number(value()?)?,
            "--batch" => o.batch = true,
            "--aggregate-ms" => o.aggregate_ms = Some(number(value()?)? as u64),
            "--post-faults" => {
                let rate = value()?.parse::<f64>().map_err(|e| format!("--post-faults: {e}"))?;
                if !(0.0..1.0).contains(&rate) {
                    return Err("--post-faults: a share of posts, at least 0 and below 1".into());
                }
                o.post_faults = Some(rate);
            }
            "--ws-url" => ws_url = Some(value()?),
            "--http-url" => http_url = Some(value()?),
            "--queue-url" => queue_url = Some(value()?),
            "--hs256-secret" => secret = Some(value()?),
            "--issuer" => issuer = Some(value()?),
            "--audience" => audience = Some(value()?),
            "--token-command" => command = Some(value()?),
            "-h" | "--help" => return Err("see the header of bench/src/load.rs for the options".into()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.clients < o.tenants {
        return Err("--clients must be at least --tenants".into());
    }
    if o.kinds.is_empty() {
        return Err("--kinds names no target kind".into());
    }
    if let Some(ws_url) = ws_url {
        let http_url = http_url.ok_or("--ws-url needs --http-url")?;
        let tokens = match (secret, command) {
            (Some(secret), None) => TokenSource::Hs256 {
                secret,
                issuer: issuer.ok_or("--hs256-secret needs --issuer")?,
                audience: audience.ok_or("--hs256-secret needs --audience")?,
            },
            (None, Some(c)) => TokenSource::Command(c),
            _ => return Err("a deployed target needs --hs256-secret (with --issuer, --audience) or --token-command".into()),
        };
        if queue_url.is_none() && o.via != Via::Http {
            return Err("--via sqs/mixed against a deployment needs --queue-url (or use --via http)".into());
        }
        if o.post_faults.is_some() {
            return Err("--post-faults needs the local stack (its fault control)".into());
        }
        o.target = Target::Deployed {
            ws_url,
            http_url,
            queue_url,
            tokens,
        };
    }
    Ok(o)
}

// ------------------------------------------------------------------------------ the target

struct Endpoints {
    ws_url: String,
    http_url: String,
    queue_url: Option<String>,
    tokens: TokenSource,
    sqs: Option<aws_sdk_sqs::Client>,
    /// Queues to watch drain (local only): dispatch, fan-out, retry.
    drain: Vec<String>,
    /// The local stack's control API (its cost meter), local only.
    control_url: Option<String>,
}

async fn endpoints(o: &Options) -> Result<Endpoints, BoxError> {
    match &o.target {
        Target::Local => {
            // The stack of herald-e2e's harness (loopback, ephemeral ports, stops with us), with
            // the template's settings but a claim lease under the stack's 10 s visibility
            // timeout, as the template's 90 s is under the queues' 360 s.
            // `--aggregate-ms` overrides the template's aggregation window, to measure it.
            let aggregate = o.aggregate_ms.map(|ms| ms.to_string());
            let stack = tokio::task::spawn_blocking(move || {
                let mut env = vec![("HERALD_CLAIM_LEASE_SECONDS", "8")];
                if let Some(ms) = &aggregate {
                    env.push(("HERALD_AGGREGATE_MS", ms.as_str()));
                }
                herald_e2e::stack_with(&env)
            })
            .await?;
            let r = &stack.ready;
            let queue = |id: &str| r.queues.get(id).cloned();
            Ok(Endpoints {
                ws_url: r.websocket_url.clone(),
                http_url: r.http_url.clone(),
                queue_url: queue("DispatchQueue"),
                tokens: TokenSource::Hs256 {
                    secret: r.jwt.hs256_secret.clone(),
                    issuer: r.jwt.issuer.clone(),
                    audience: r.jwt.audience.clone(),
                },
                sqs: Some(herald_e2e::sqs().await),
                drain: ["DispatchQueue", "InternalQueue", "RetryQueue"]
                    .iter()
                    .filter_map(|q| queue(q))
                    .collect(),
                control_url: Some(r.control_url.clone()),
            })
        }
        Target::Deployed {
            ws_url,
            http_url,
            queue_url,
            tokens,
        } => {
            let sqs = match queue_url {
                Some(_) => Some(aws_sdk_sqs::Client::new(
                    &aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
                )),
                None => None,
            };
            Ok(Endpoints {
                ws_url: ws_url.clone(),
                http_url: http_url.trim_end_matches('/').to_owned(),
                queue_url: queue_url.clone(),
                tokens: tokens.clone(),
                sqs,
                drain: Vec::new(),
                control_url: None,
            })
        }
    }
}

fn mint(tokens: &TokenSource, sub: &str, tenant: &str, roles: &[&str], groups: &[String]) -> Result<String, BoxError> {
    match tokens {
        TokenSource::Hs256 { secret, issuer, audience } => {
            let now = epoch_ms() / 1000;
            let claims = json!({"sub": sub, "tenant": tenant, "roles": roles, "groups": groups,
                "iss": issuer, "aud": audience, "iat": now, "exp": now + 4 * 3600});
            Ok(jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )?)
        }
        TokenSource::Command(cmd) => {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{cmd} \"$@\""))
                .arg("token-command")
                .args([sub, tenant, &roles.join(","), &groups.join(",")])
                .output()?;
            if !out.status.success() {
                return Err(format!("--token-command failed: {}", String::from_utf8_lossy(&out.stderr)).into());
            }
            Ok(String::from_utf8(out.stdout)?.trim().to_owned())
        }
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------ clients

/// What one client saw: live deliveries (id → times, and latency of the first), and its start
/// position for the final resume.
#[derive(Default)]
struct Seen {
    live: HashMap<String, u32>,
    latencies_ms: Vec<u64>,
    replayed: HashSet<String>,
}

#[derive(Clone)]
struct Member {
    tenant: String,
    user: String,
    group: String,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects and joins the member's group; with `resume`, also asks for a resume point (in the
/// same round trip) and returns it.
async fn connect(e: &Endpoints, m: &Member, batch: bool, resume: bool) -> Result<(Ws, Option<String>), BoxError> {
    let token = mint(&e.tokens, &m.user, &m.tenant, &[], std::slice::from_ref(&m.group))?;
    let opt_in = if batch { "&batch=1" } else { "" };
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?token={token}{opt_in}", e.ws_url)).await?;
    ws.send(Message::text(json!({"action": "join", "group": m.group, "ref": "j"}).to_string()))
        .await?;
    if resume {
        ws.send(Message::text(json!({"action": "resume", "ref": "r"}).to_string())).await?;
    }
    let mut cursor = None;
    let (mut joined, mut resumed) = (false, !resume);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(joined && resumed) {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await else {
            return Err(format!("{}: no joined/resumed within 60 s", m.user).into());
        };
        if let Message::Text(t) = msg? {
            let f: Value = serde_json::from_str(&t)?;
            match f["type"].as_str() {
                Some("joined") => joined = true,
                Some("resumed") => {
                    resumed = true;
                    cursor = f["cursor"].as_str().map(str::to_owned);
                }
                Some("error") => return Err(format!("{}: {}", m.user, f).into()),
                _ => {}
            }
        }
    }
    Ok((ws, cursor))
}

/// API Gateway closes a connection that has been idle for 10 minutes, and so does the local
/// gateway; connecting 10,000 clients takes longer than that here. Like client/herald.js, every
/// client pings well within it.
const KEEP_ALIVE: Duration = Duration::from_secs(5 * 60);

/// How often a client tries to reconnect, and its pause before the first try (doubled after each).
const RECONNECT_TRIES: u32 = 8;
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// What a listening client needs to reconnect: who it is and where it started.
struct Listener {
    e: Arc<Endpoints>,
    member: Member,
    batch: bool,
    start: Option<String>,
    seen: Arc<Mutex<Seen>>,
    received: Arc<AtomicUsize>,
    reconnects: Arc<AtomicUsize>,
}

/// Reads frames until told to stop, recording every notification and its latency; pings every
/// `KEEP_ALIVE`. Each client is stopped when its own final resume starts: the final resumes of
/// 10,000 clients take minutes, and one waiting its turn must not be closed as idle.
///
/// A connection the server closes (Herald closes one that a frame could not reach, for its
/// client to resume) is opened again, as client/herald.js does: after a pause, joined again and
/// resumed from the client's start position; what that replays counts as recovered. A client
/// that cannot reconnect ends with an error, which the report lists.
async fn listen(mut ws: Ws, l: Listener, stop: tokio::sync::oneshot::Receiver<()>) -> Result<Ws, String> {
    let mut stop = stop;
    let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(ws),
            _ = keep_alive.tick() => {
                // A failed ping shows up as the connection closing, handled below.
                let _ = ws.send(Message::text(json!({"action": "ping"}).to_string())).await;
            }
            msg = ws.next() => {
                let t = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    None | Some(Err(_)) => {
                        ws = reconnect(&l).await?;
                        continue;
                    }
                };
                for f in herald_e2e::unpack(&t).unwrap_or_default() {
                    if f["type"] != "notification" {
                        continue;
                    }
                    let (Some(id), sent) = (f["id"].as_str(), f["data"]["sentAt"].as_u64()) else { continue };
                    let mut s = l.seen.lock().await;
                    let n = s.live.entry(id.to_owned()).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        l.received.fetch_add(1, Ordering::Relaxed);
                        if let Some(sent) = sent {
                            s.latencies_ms.push(epoch_ms().saturating_sub(sent));
                        }
                    }
                }
            }
        }
    }
}

/// Opens the client's connection again: connects, joins, and replays from its start position.
async fn reconnect(l: &Listener) -> Result<Ws, String> {
    l.reconnects.fetch_add(1, Ordering::Relaxed);
    let mut pause = RECONNECT_PAUSE;
    let mut last = String::new();
    for _ in 0..RECONNECT_TRIES {
        // Jittered, so that clients closed together do not all come back together.
        tokio::time::sleep(pause + Duration::from_millis(epoch_ms() % pause.as_millis().max(1) as u64)).await;
        pause *= 2;
        match rejoin(l).await {
            Ok((ws, ids)) => {
                l.seen.lock().await.replayed.extend(ids);
                return Ok(ws);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("{}: could not reconnect in {RECONNECT_TRIES} tries: {last}", l.member.user))
}

async fn rejoin(l: &Listener) -> Result<(Ws, HashSet<String>), BoxError> {
    let (mut ws, _) = connect(&l.e, &l.member, l.batch, false).await?;
    let ids = final_resume(&mut ws, l.start.as_deref()).await?;
    Ok((ws, ids))
}

/// The final resume from the client's start position: every id the server replays.
async fn final_resume(ws: &mut Ws, since: Option<&str>) -> Result<HashSet<String>, BoxError> {
    let mut ids = HashSet::new();
    let mut from = since.map(str::to_owned);
    for page in 0..10_000 {
        let mut frame = json!({"action": "resume", "ref": format!("f{page}")});
        if let Some(c) = &from {
            frame["since"] = json!(c);
        }
        ws.send(Message::text(frame.to_string())).await?;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
                .await
                .map_err(|_| "no resumed within 60 s")?
                .ok_or("connection closed during the final resume")??;
            let Message::Text(t) = msg else { continue };
            let mut answered = false;
            for f in herald_e2e::unpack(&t).unwrap_or_default() {
                match f["type"].as_str() {
                    Some("notification") if f["replayed"] == true => {
                        if let Some(id) = f["id"].as_str() {
                            ids.insert(id.to_owned());
                        }
                    }
                    Some("resumed") => {
                        if f["more"] != true {
                            return Ok(ids);
                        }
                        from = f["next"].as_str().or(f["cursor"].as_str()).map(str::to_owned);
                        answered = true;
                    }
                    Some("error") => return Err(format!("resume refused: {f}").into()),
                    _ => {}
                }
            }
            if answered {
                break;
            }
        }
    }
    Ok(ids)
}

// ------------------------------------------------------------------------------ producers

struct Planned {
    id: String,
    tenant: String,
    kind: Kind,
    to: Value,
    /// Indexes of the members meant to get it.
    audience: Vec<usize>,
}

fn plan(o: &Options, run: &str, members: &[Member]) -> Vec<Planned> {
    let mut by_tenant: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, m) in members.iter().enumerate() {
        by_tenant.entry(&m.tenant).or_default().push(i);
    }
    let tenants: Vec<&str> = {
        let mut t: Vec<&str> = by_tenant.keys().copied().collect();
        t.sort_unstable();
        t
    };
    let mut out = Vec::with_capacity(o.notifications);
    for n in 0..o.notifications {
        let kind = o.kinds[n % o.kinds.len()];
        let tenant = tenants[n % tenants.len()];
        let local = &by_tenant[tenant];
        let pick = |k: usize| local[(n * 7919 + k * 104_729) % local.len()];
        let (to, audience) = match kind {
            Kind::User => {
                let i = pick(0);
                (json!({"user": members[i].user}), vec![i])
            }
            Kind::Users => {
                let mut picked: Vec<usize> = (0..5).map(pick).collect();
                picked.sort_unstable();
                picked.dedup();
                (
                    json!({"users": picked.iter().map(|i| &members[*i].user).collect::<Vec<_>>()}),
                    picked,
                )
            }
            Kind::Group => {
                let group = format!("g{}", n % o.groups);
                let audience = local
                    .iter()
                    .copied()
                    .filter(|i| members[*i].group == format!("team:{group}"))
                    .collect();
                (json!({"group": format!("team:{group}")}), audience)
            }
            Kind::Tenant => (json!({"tenant": true}), local.clone()),
            Kind::All => (json!({"all": true}), (0..members.len()).collect()),
        };
        out.push(Planned {
            id: format!("{run}-{n}"),
            tenant: tenant.to_owned(),
            kind,
            to,
            audience,
        });
    }
    out
}

/// `bytes` of words of random letters: text that deflates to about 60 %, a little worse than
/// English prose (about 52 %), so the log's compression (which a run of one letter would flatter)
/// is measured on what notifications carry.
fn pad(bytes: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut text = String::with_capacity(bytes + 9);
    while text.len() < bytes {
        let len = 2 + next() % 7;
        text.extend((0..len).map(|_| char::from(b'a' + (next() % 26) as u8)));
        text.push(' ');
    }
    text.truncate(bytes);
    text
}

async fn send(
    e: &Endpoints,
    o: &Options,
    http: &reqwest::Client,
    service: &HashMap<String, String>,
    p: &Planned,
    n: usize,
) -> Result<(), BoxError> {
    let body = json!({"id": p.id, "tenant": p.tenant, "to": p.to, "event": "load.test",
        "title": format!("load {}", p.id), "data": {"sentAt": epoch_ms(), "pad": pad(o.payload_bytes, n as u64)}});
    // `all` is producer-only over SQS (the HTTP API keeps a caller to its own tenant).
    let via_sqs = p.kind == Kind::All || o.via == Via::Sqs || (o.via == Via::Mixed && n.is_multiple_of(2));
    if via_sqs {
        let (Some(sqs), Some(url)) = (&e.sqs, &e.queue_url) else {
            return Err("no queue to send to (--queue-url)".into());
        };
        sqs.send_message().queue_url(url).message_body(body.to_string()).send().await?;
    } else {
        let token = service.get(&p.tenant).ok_or("no service token")?;
        let r = http
            .post(format!("{}/notifications", e.http_url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        if r.status().as_u16() != 202 {
            return Err(format!("POST /notifications: {} {}", r.status(), r.text().await.unwrap_or_default()).into());
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------ the run

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A progress bar redrawn in place on a terminal; into a log (CI, a file), a plain line every
/// few seconds instead.
fn progress(label: &str, done: usize, total: usize, extra: &str) {
    use std::io::IsTerminal;
    use std::sync::Mutex as StdMutex;
    static LAST_LINE: StdMutex<Option<Instant>> = StdMutex::new(None);
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width).min(width);
    let bar = format!(
        "{label:<10} [{}{}] {done}/{total} {extra}",
        "#".repeat(filled),
        ".".repeat(width - filled)
    );
    if std::io::stderr().is_terminal() {
        eprint!("\r{bar}      ");
        let _ = std::io::stderr().flush();
        return;
    }
    let Ok(mut last) = LAST_LINE.lock() else { return };
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) || done >= total {
        eprintln!("{bar}");
        *last = Some(Instant::now());
    }
}

async fn run(o: Options) -> Result<Value, BoxError> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(o.max_seconds);
    let e = Arc::new(endpoints(&o).await?);
    let run = format!("load{}", epoch_ms() % 1_000_000_000);
    let members: Vec<Member> = (0..o.clients)
        .map(|i| Member {
            tenant: format!("{run}-t{}", i % o.tenants),
            user: format!("u{i}"),
            group: format!("team:g{}", (i / o.tenants) % o.groups),
        })
        .collect();

    // Connect. Each client listens (and keeps its connection alive) from the moment it has
    // joined: the first ones wait for the rest.
    let opened = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let reconnects = Arc::new(AtomicUsize::new(0));
    let connecting = futures_util::stream::iter(members.iter().enumerate())
        .map(|(i, m)| {
            let (e, opened, received, reconnects) = (e.clone(), opened.clone(), received.clone(), reconnects.clone());
            async move {
                let r = connect(&e, m, o.batch, true).await.map(|(ws, cursor)| {
                    let s = Arc::new(Mutex::new(Seen::default()));
                    let (stop, stopped) = tokio::sync::oneshot::channel();
                    let l = Listener {
                        e,
                        member: m.clone(),
                        batch: o.batch,
                        start: cursor.clone(),
                        seen: s.clone(),
                        received,
                        reconnects,
                    };
                    ((tokio::spawn(listen(ws, l, stopped)), stop), cursor, s)
                });
                opened.fetch_add(1, Ordering::Relaxed);
                (i, r)
            }
        })
        .buffer_unordered(o.connect_concurrency)
        .collect::<Vec<_>>();
    let ticker = {
        let opened = opened.clone();
        let total = o.clients;
        tokio::spawn(async move {
            loop {
                progress("connect", opened.load(Ordering::Relaxed), total, "");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut sockets = connecting.await;
    ticker.abort();
    progress(
        "connect",
        o.clients,
        o.clients,
        &format!("in {:.1} s", started.elapsed().as_secs_f64()),
    );
    eprintln!();
    sockets.sort_by_key(|(i, _)| *i);
    let connect_seconds = started.elapsed().as_secs_f64();

    let mut listeners = Vec::new();
    let mut starts = Vec::new();
    let mut seen = Vec::new();
    for (i, r) in sockets {
        let (listener, cursor, s) = r.map_err(|err| format!("client {i}: {err}"))?;
        seen.push(s);
        starts.push(cursor);
        listeners.push(listener);
    }

    // Produce.
    let planned = plan(&o, &run, &members);
    let expected: usize = planned.iter().map(|p| p.audience.len()).sum();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let mut service = HashMap::new();
    for m in &members {
        if !service.contains_key(&m.tenant) {
            service.insert(m.tenant.clone(), mint(&e.tokens, "herald-load", &m.tenant, &["service"], &[])?);
        }
    }
    // The cost meter counts from here: connecting and joining are set-up.
    if let Some(control) = &e.control_url {
        http.delete(format!("{control}/cost")).send().await?.error_for_status()?;
    }
    if let (Some(rate), Some(control)) = (o.post_faults, &e.control_url) {
        http.post(format!("{control}/faults/posts"))
            .json(&json!({"rate": rate, "status": 429}))
            .send()
            .await?
            .error_for_status()?;
    }
    let sent = Arc::new(AtomicUsize::new(0));
    let produce_started = Instant::now();
    let producing = {
        let (e, o2, http, sent) = (e.clone(), o.clone(), http.clone(), sent.clone());
        let planned: Vec<(usize, String, String, Kind, Value)> = planned
            .iter()
            .enumerate()
            .map(|(n, p)| (n, p.id.clone(), p.tenant.clone(), p.kind, p.to.clone()))
            .collect();
        tokio::spawn(async move {
            futures_util::stream::iter(planned)
                .map(|(n, id, tenant, kind, to)| {
                    let (e, o2, http, service, sent) = (e.clone(), o2.clone(), http.clone(), service.clone(), sent.clone());
                    async move {
                        // Paced: notification n leaves at n / rate seconds.
                        let due = produce_started + Duration::from_secs_f64(n as f64 / o2.rate);
                        tokio::time::sleep_until(due.into()).await;
                        let p = Planned {
                            id,
                            tenant,
                            kind,
                            to,
                            audience: Vec::new(),
                        };
                        let r = send(&e, &o2, &http, &service, &p, n).await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        r
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await
        })
    };
    // Progress until everything arrived, or nothing new for a while after the last send.
    let mut last = (0usize, Instant::now());
    loop {
        let (s, r) = (sent.load(Ordering::Relaxed), received.load(Ordering::Relaxed));
        progress("deliver", r, expected, &format!("sent {s}/{}", planned.len()));
        if r != last.0 {
            last = (r, Instant::now());
        }
        let quiet = s == planned.len() && last.1.elapsed() > Duration::from_secs(20);
        if r >= expected || quiet || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!();
    let send_errors: Vec<String> = producing
        .await?
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    let produce_seconds = produce_started.elapsed().as_secs_f64();
    if let (Some(_), Some(control)) = (o.post_faults, &e.control_url) {
        http.delete(format!("{control}/faults")).send().await?.error_for_status()?;
    }
    // Local: let the queues drain before the final resume (a retry may still be on its way).
    if let Some(sqs) = &e.sqs {
        for q in &e.drain {
            while Instant::now() < deadline {
                let a = sqs
                    .get_queue_attributes()
                    .queue_url(q)
                    .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
                    .send()
                    .await?;
                let count = |k: aws_sdk_sqs::types::QueueAttributeName| {
                    a.attributes()
                        .and_then(|m| m.get(&k))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                use aws_sdk_sqs::types::QueueAttributeName as N;
                if count(N::ApproximateNumberOfMessages)
                    + count(N::ApproximateNumberOfMessagesNotVisible)
                    + count(N::ApproximateNumberOfMessagesDelayed)
                    == 0
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    // What the run cost so far (the final resume below is the check, not traffic), per
    // notification frame the clients received (repeats too).
    let cost = match &e.control_url {
        Some(control) => {
            let meter: Value = http.get(format!("{control}/cost")).send().await?.error_for_status()?.json().await?;
            let mut frames = 0u64;
            for s in &seen {
                frames += s.lock().await.live.values().map(|n| u64::from(*n)).sum::<u64>();
            }
            let mut cost = cost_per_delivery(&meter, frames);
            eprintln!("cost: {}", cost["line"].as_str().unwrap_or_default());
            cost["meter"] = meter; // the whole reading, for the report file only (see main)
            cost
        }
        None => Value::Null,
    };

    // Final resume: each client in turn stops listening and replays from its start position.
    let mut resumed_ok = 0;
    let done = Arc::new(AtomicUsize::new(0));
    let finals = futures_util::stream::iter(listeners.into_iter().zip(starts).zip(seen.iter().cloned()))
        .map(|(((listener, stop), start), s)| {
            let done = done.clone();
            async move {
                let _ = stop.send(());
                let mut ws = listener.await.map_err(|e| e.to_string())??;
                let ids = final_resume(&mut ws, start.as_deref()).await.map_err(|e| e.to_string())?;
                s.lock().await.replayed.extend(ids);
                let _ = ws.close(None).await;
                done.fetch_add(1, Ordering::Relaxed);
                Ok::<(), String>(())
            }
        })
        .buffer_unordered(o.connect_concurrency)
        .collect::<Vec<_>>()
        .await;
    let mut resume_errors = Vec::new();
    for r in finals {
        match r {
            Ok(()) => resumed_ok += 1,
            Err(err) => resume_errors.push(err),
        }
    }

    // Figures.
    let mut latencies = Vec::new();
    let (mut live, mut duplicates, mut recovered, mut lost) = (0usize, 0usize, 0usize, 0usize);
    let mut audiences: Vec<Vec<&str>> = vec![Vec::new(); members.len()];
    for p in &planned {
        for i in &p.audience {
            audiences[*i].push(&p.id);
        }
    }
    let mut by_kind: HashMap<&str, usize> = HashMap::new();
    for p in &planned {
        *by_kind.entry(p.kind.name()).or_default() += 1;
    }
    for (i, s) in seen.iter().enumerate() {
        let s = s.lock().await;
        latencies.extend_from_slice(&s.latencies_ms);
        duplicates += s.live.values().filter(|n| **n > 1).map(|n| (*n - 1) as usize).sum::<usize>();
        for id in &audiences[i] {
            if s.live.contains_key(*id) {
                live += 1;
            } else if s.replayed.contains(*id) {
                recovered += 1;
            } else {
                lost += 1;
            }
        }
    }
    latencies.sort_unstable();
    Ok(json!({
        "target": match &o.target { Target::Local => "local", Target::Deployed { .. } => "deployed" },
        "clients": o.clients,
        "tenants": o.tenants,
        "groups": o.groups,
        "notifications": planned.len(),
        "byKind": by_kind,
        "via": format!("{:?}", o.via).to_lowercase(),
        "rate": o.rate,
        "payloadBytes": o.payload_bytes,
        "batch": o.batch,
        "postFaults": o.post_faults,
        "aggregateMs": o.aggregate_ms,
        "connectSeconds": (connect_seconds * 10.0).round() / 10.0,
        "produceSeconds": (produce_seconds * 10.0).round() / 10.0,
        "expectedDeliveries": expected,
        "receivedLive": live,
        "recoveredByResume": recovered,
        "lostAfterResume": lost,
        "duplicates": duplicates,
        "reconnects": reconnects.load(Ordering::Relaxed),
        "latencyMs": {
            "p50": percentile(&latencies, 50.0),
            "p95": percentile(&latencies, 95.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last().copied().unwrap_or(0),
            "samples": latencies.len(),
        },
        "finalResumes": resumed_ok,
        "sendErrors": send_errors.iter().take(10).collect::<Vec<_>>(),
        "sendErrorCount": send_errors.len(),
        "resumeErrors": resume_errors.iter().take(10).collect::<Vec<_>>(),
        "cost": cost,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    }))
}

/// The local stack's cost meter reading (infra/herald_local/cost.py) in dollars per million
/// deliveries, by service, with a one-line summary (dearest first).
fn cost_per_delivery(meter: &Value, deliveries: u64) -> Value {
    let mut per_million = serde_json::Map::new();
    let mut services = Vec::new();
    if let Some(dollars) = meter["dollars"].as_object() {
        for (service, d) in dollars {
            let v = d.as_f64().unwrap_or(0.0) / (deliveries.max(1) as f64) * 1e6;
            let v = (v * 1000.0).round() / 1000.0;
            per_million.insert(service.clone(), json!(v));
            if service != "total" && v > 0.0 {
                services.push((service.clone(), v));
            }
        }
    }
    services.sort_by(|a, b| b.1.total_cmp(&a.1));
    let line = format!(
        "${} per million deliveries ({deliveries} frames in {:.0} s): {} (prices of {})",
        per_million.get("total").cloned().unwrap_or(json!(0)),
        meter["seconds"].as_f64().unwrap_or(0.0),
        services.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
        meter["pricesAsOf"].as_str().unwrap_or("?"),
    );
    let u = &meter["usage"];
    json!({
        "line": line,
        "deliveries": deliveries,
        "dollarsPerMillionDeliveries": per_million,
        "seconds": meter["seconds"],
        "usage": {
            "dynamodbWriteUnits": u["dynamodb"]["writeRequestUnits"],
            "dynamodbReadUnits": u["dynamodb"]["readRequestUnits"],
            "sqsRequests": u["sqs"]["requests"],
            "messagesOut": u["apigateway"]["messagesOut"],
            "messagesIn": u["apigateway"]["messagesIn"],
            "connectionMinutes": u["apigateway"]["connectionMinutes"],
            "httpRequests": u["apigateway"]["httpRequests"],
            "lambdaRequests": u["lambda"]["requests"],
            "schedulerInvocations": u["scheduler"]["invocations"],
        },
    })
}

fn markdown(r: &Value) -> String {
    let l = &r["latencyMs"];
    format!(
        "# herald-load report\n\n| | |\n|---|---|\n| target | {} |\n| clients / tenants / groups | {} / {} / {} |\n\
         | notifications (via {}, {} /s) | {} {} |\n| connect time | {} s |\n| expected deliveries | {} |\n\
         | received live | {} |\n| recovered by the final resume | {} |\n| **lost after resume** | **{}** |\n\
         | duplicates | {} |\n| reconnects (connections the server closed) | {} |\n| latency p50 / p95 / p99 / max | {} / {} / {} / {} ms ({} samples) |\n\
         | send errors | {} |\n| cost (local meter) | {} |\n| run time | {} s |\n",
        r["target"].as_str().unwrap_or_default(),
        r["clients"],
        r["tenants"],
        r["groups"],
        r["via"].as_str().unwrap_or_default(),
        r["rate"],
        r["notifications"],
        r["byKind"],
        r["connectSeconds"],
        r["expectedDeliveries"],
        r["receivedLive"],
        r["recoveredByResume"],
        r["lostAfterResume"],
        r["duplicates"],
        r["reconnects"],
        l["p50"],
        l["p95"],
        l["p99"],
        l["max"],
        l["samples"],
        r["sendErrorCount"],
        r["cost"]["line"].as_str().unwrap_or("not measured (deployed target)"),
        r["seconds"],
    )
}

#[tokio::main]
async fn main() {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("herald-load: {e}");
            std::process::exit(2);
        }
    };
    let report = o.report.clone();
    match run(o).await {
        Ok(r) => {
            let text = serde_json::to_string_pretty(&r).unwrap_or_default();
            let mut shown = r.clone();
            if let Some(cost) = shown.get_mut("cost").and_then(Value::as_object_mut) {
                cost.remove("meter");
            }
            println!("{}", serde_json::to_string_pretty(&shown).unwrap_or_default());
            let written = std::fs::write(format!("{report}.json"), format!("{text}\n"))
                .and_then(|()| std::fs::write(format!("{report}.md"), markdown(&r)));
            if let Err(e) = written {
                eprintln!("herald-load: writing {report}.json/.md: {e}");
            } else {
                eprintln!("report: {report}.json, {report}.md");
            }
            let lost = r["lostAfterResume"].as_u64().unwrap_or(1);
            std::process::exit(if lost == 0 && r["sendErrorCount"] == 0 { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("\nherald-load: {e}");
            std::process::exit(1);
        }
    }
}
