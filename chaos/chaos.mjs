#!/usr/bin/env node
// The chaos suite: proof of the delivery promise under concurrency, faults and reconnect churn.
//
// It starts the local stack (the real function binaries, with the AWS fault proxy), connects
// many devices in several tenants and groups, plus a few users who only poll
// `GET /notifications/missed`, and then, while concurrent producers send every target kind (user,
// users, group, tenant, all; through SQS and the HTTP API; with duplicate ids and deferred ones):
//   - every client's connection is dropped every few seconds and comes back with `resume`;
//   - the stack injects faults: function processes killed mid-invocation, `@connections`
//     5xx / 429 / 410, DynamoDB throttling, delayed log writes, SQS redelivery.
// At the end the faults stop, the queues drain, every client resumes once more and every poller
// polls to the end. What each user was meant to get is known from what was sent (not from the
// server's log, so a notification missing from the log counts as lost too).
//
// The devices are of three kinds (populations), a third each, shuffled by the seed:
//   - `herald`: `client/herald.js` itself, the algorithm a user's app runs;
//   - `last-cursor`: a raw WebSocket client that re-joins and resumes from the cursor of the last
//     notification it received (any that carries one, live or replayed), as a hand-written app
//     would;
//   - `missed-poller`: a raw WebSocket client for live frames that never resumes but reads
//     `GET /notifications/missed` from the cursor of the last frame or item it received.
// Both raw kinds dedupe by id like any app; a notification they get again from a resume or a
// `missed` read is a resend (the resend ratio: resends ÷ intended deliveries), not shown twice.
// The frame resend ratio counts only frames a resume posted again (what API Gateway bills as
// messages); `missed` items the poller had received live are reported beside it.
//
// It prints the figures and exits 1 on any loss in any population (or on a duplicate shown twice,
// or when the run does not settle in time). Everything is bounded: the run stops by itself
// (`--max-seconds`, for each run). `--runs N` repeats the run with seeds seed, seed+1, ... (each
// its own stack), stops at the first that fails and keeps its stack log (`--stack-log FILE`, else
// target/chaos/run-SEED.log).
//
//   node chaos/chaos.mjs [--clients 200] [--tenants 4] [--notifications 5000] [--producers 4]
//                        [--rate 60] [--http-share 0.25] [--seed 1] [--churn-ms 1000-8000] [--no-faults]
//                        [--max-seconds 600] [--report FILE.json] [--profile debug] [--max-instances N]
//                        [--stack-log FILE] (the stack's warnings and errors, all of them)
//                        [--populations herald,last-cursor,missed-poller] [--runs 1]
//
// Loopback only: the stack binds 127.0.0.1 on ephemeral ports and exits with this process.

import { mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

import { HeraldClient } from "../client/herald.js";
import { repo, startStack, until } from "../client/test-support/stack.mjs";

// The client's own dev dependency: the `ws` WebSocket for Node (browsers have their own).
const WebSocket = createRequire(path.join(repo, "client", "package.json"))("ws");

// ------------------------------------------------------------------------------ options

/** The device kinds (populations), see the header. */
const KINDS = ["herald", "last-cursor", "missed-poller"];

function parseArgs(argv) {
  const o = {
    clients: 200,
    tenants: 4,
    notifications: 5000,
    producers: 4,
    rate: 60,
    httpShare: 0.25,
    seed: 1,
    churnMs: [1000, 8000],
    faults: true,
    maxSeconds: 600,
    report: null,
    stackLog: null,
    maxInstances: null,
    profile: process.env.HERALD_PROFILE || "debug",
    verbose: Boolean(process.env.HERALD_CHAOS_VERBOSE),
    populations: [...KINDS],
    runs: 1,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    const int = (v, min) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < min) throw new Error(`${a}: expected an integer ≥ ${min}, got ${v}`);
      return n;
    };
    if (a === "--clients") o.clients = int(next(), 2);
    else if (a === "--tenants") o.tenants = int(next(), 1);
    else if (a === "--notifications") o.notifications = int(next(), 1);
    else if (a === "--producers") o.producers = int(next(), 1);
    else if (a === "--rate") o.rate = int(next(), 1);
    else if (a === "--seed") o.seed = int(next(), 0);
    else if (a === "--http-share") {
      o.httpShare = Number(next());
      if (!(o.httpShare >= 0 && o.httpShare <= 1)) throw new Error("--http-share: a fraction in [0, 1]");
    }
    else if (a === "--churn-ms") {
      const [lo, hi] = next().split("-").map(Number);
      if (!(lo > 0 && hi >= lo)) throw new Error("--churn-ms: expected LOW-HIGH milliseconds");
      o.churnMs = [lo, hi];
    } else if (a === "--no-faults") o.faults = false;
    else if (a === "--max-seconds") o.maxSeconds = int(next(), 30);
    else if (a === "--report") o.report = next();
    else if (a === "--stack-log") o.stackLog = next();
    else if (a === "--profile") o.profile = next();
    else if (a === "--max-instances") o.maxInstances = int(next(), 1);
    else if (a === "--verbose") o.verbose = true;
    else if (a === "--runs") o.runs = int(next(), 1);
    else if (a === "--populations") {
      const kinds = [...new Set(next().split(",").map((k) => k.trim()).filter(Boolean))];
      const unknown = kinds.filter((k) => !KINDS.includes(k));
      if (!kinds.length || unknown.length) throw new Error(`--populations: a comma-separated list of ${KINDS.join(", ")}`);
      // In the order of KINDS, whatever the order given: the same seed splits the same way.
      o.populations = KINDS.filter((k) => kinds.includes(k));
    }
    else throw new Error(`unknown option ${a} (see the header of chaos/chaos.mjs)`);
  }
  if (o.tenants > o.clients) throw new Error("--tenants must not exceed --clients");
  return o;
}

// A small seeded generator (mulberry32): the same seed makes the same population, the same
// messages and the same drop schedule (the stack's timing still varies from run to run).
function rng(seed) {
  let a = seed >>> 0 || 0x9e3779b9;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (xs) => xs[Math.floor(next() * xs.length)],
    chance: (p) => next() < p,
  };
}

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------ the stack

/** The local stack for a run (client/test-support/stack.mjs), tuned to settle quickly. */
function chaosStack(o) {
  return startStack({
    profile: o.profile,
    verbose: o.verbose,
    // Longer than the first visibility extension of a held message (half the 8 s claim lease
    // below) plus a slow SQS answer on a loaded machine: with 5 s, messages of a full run came
    // back while still being worked on and were processed twice ("delete failed: receipt handle").
    // A killed function's message comes back after this long.
    visibilityTimeout: 15,
    // The template's own function timeouts: an invocation that overruns them under load is one
    // more failure the run must survive without a loss.
    timeoutScale: 1,
    // Lambda runs as many instances as there are invocations; the stack stops at a few unless
    // told otherwise (--max-instances). More is not faster on two cores: with 8, the full run's
    // handshakes and resumes took more of moto and dispatch fell behind (docs/reliability.md).
    maxInstances: o.maxInstances,
    // All of it: a failing run's log is written whole (--stack-log FILE, else
    // target/chaos/run-SEED.log), and it is warnings and errors only (see RUST_LOG below).
    keepLines: Infinity,
    readyTimeoutMs: 120_000,
    env: [
      // Warnings and errors only: a chaos run makes the functions log every fault they meet.
      "RUST_LOG=warn",
      // A killed dispatch's claim is taken over when its lease ends (90 s in the template, under
      // the queue's 360 s visibility timeout): a shorter one lets the run settle sooner.
      "HERALD_CLAIM_LEASE_SECONDS=8",
    ],
  });
}

async function http(method, url, { token, body, timeoutMs } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const signal = timeoutMs ? AbortSignal.timeout(timeoutMs) : undefined;
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: res.status, json, headers: res.headers };
}

async function control(stack, method, route, body) {
  const res = await http(method, `${stack.controlUrl}${route}`, { body });
  if (res.status >= 300) throw new Error(`${method} ${route}: ${res.status} ${JSON.stringify(res.json)}`);
  return res.json;
}

async function mintToken(stack, claims) {
  return (await control(stack, "POST", "/token", { alg: "HS256", ttlSeconds: 7200, ...claims })).token;
}

/**
 * An AWS call over its JSON protocol (`target`: the X-Amz-Target; the local endpoint does not
 * check signatures, only that there is one for the service it names).
 */
async function awsCall(stack, target, service, payload) {
  const res = await fetch(stack.awsEndpoint, {
    method: "POST",
    headers: {
      "content-type": "application/x-amz-json-1.0",
      "x-amz-target": target,
      authorization: `AWS4-HMAC-SHA256 Credential=herald/20261129/${stack.region}/${service}/aws4_request, SignedHeaders=host, Signature=0`,
    },
    body: JSON.stringify(payload),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${target}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

const sqsCall = (stack, action, payload) => awsCall(stack, `AmazonSQS.${action}`, "sqs", payload);
const dynamoCall = (stack, action, payload) => awsCall(stack, `DynamoDB_20120810.${action}`, "dynamodb", payload);

/** Messages in a queue: waiting, in flight and delayed. */
async function queueDepth(stack, queueUrl) {
  const { Attributes: a } = await sqsCall(stack, "GetQueueAttributes", {
    QueueUrl: queueUrl,
    AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"],
  });
  return Number(a.ApproximateNumberOfMessages) + Number(a.ApproximateNumberOfMessagesNotVisible) + Number(a.ApproximateNumberOfMessagesDelayed);
}

/**
 * The server's record of each open connection of `user` (the gateway's list, then the
 * connection item): what it is a member of, or that the record is gone.
 */
async function connectionRecords(stack, user) {
  const open = (await control(stack, "GET", "/connections")).filter((c) => c.user === user.sub && c.tenant === user.tenant);
  const out = [];
  for (const c of open) {
    const { Item: meta } = await dynamoCall(stack, "GetItem", {
      TableName: stack.tables.ConnectionsTable, Key: { pk: { S: `c#${c.connectionId}` }, sk: { S: "#meta" } }, ConsistentRead: true,
    });
    out.push(`${c.connectionId} (open ${Math.round((Date.now() - c.connectedAt) / 1000)} s): ${meta ? `memberships ${JSON.stringify(meta.memberships?.SS ?? [])}` : "no connection record"}`);
  }
  return out.join("; ") || "no open connection";
}

/** A lost notification's traces on the server (see the loss report in main). */
async function whereIs(stack, m) {
  const table = stack.tables.NotificationsTable;
  const { Item: claim } = await dynamoCall(stack, "GetItem", {
    TableName: table, Key: { pk: { S: `i#${m.tenant}#${m.id}` }, sk: { S: "#" } }, ConsistentRead: true,
  });
  const topic = m.to.group ?? (m.to.user ? `user:${m.to.user}` : m.to.users ? `user:${m.to.users[0]}` : m.to.tenant ? "tenant" : "all");
  const pk = m.to.all ? "n#*#all" : `n#${m.tenant}#${topic}`;
  const found = [];
  let start;
  do {
    const out = await dynamoCall(stack, "Query", {
      TableName: table, KeyConditionExpression: "pk = :pk", ExpressionAttributeValues: { ":pk": { S: pk } },
      ...(start ? { ExclusiveStartKey: start } : {}),
    });
    for (const it of out.Items ?? []) if (it.id?.S === m.id) found.push(`${it.sk.S} (createdAt ${it.createdAt?.S})`);
    start = out.LastEvaluatedKey;
  } while (start);
  const c = claim ? `claim ${claim.state?.S} cursor ${claim.cursor?.S} claimedAt ${new Date(Number(claim.claimedAt?.N)).toISOString()}` : "never claimed";
  return `${JSON.stringify(m.to)} via ${m.via}${m.deferMs ? ` deferred ${m.deferMs} ms` : ""}; ${c}; in ${pk}: ${found.join(", ") || "no entry"}`;
}

/**
 * Everything on the dead-letter queues (received, so a second call finds none of it): a
 * notification there was given up on, which the figures count and a loss's report names.
 */
async function deadLetters(stack) {
  const out = [];
  for (const [name, url] of Object.entries(stack.queues).filter(([n]) => n.includes("DeadLetter"))) {
    for (;;) {
      const { Messages: got = [] } = await sqsCall(stack, "ReceiveMessage", {
        QueueUrl: url, MaxNumberOfMessages: 10, VisibilityTimeout: 3600, WaitTimeSeconds: 0,
        AttributeNames: ["All"], MessageAttributeNames: ["All"],
      });
      if (!got.length) break;
      for (const m of got) out.push({ queue: name, body: m.Body, receives: m.Attributes?.ApproximateReceiveCount, reason: m.MessageAttributes });
    }
  }
  return out;
}

/**
 * Waits until `remaining()` (sync or async) is 0. How long a full run takes to drain its backlog
 * or to reconnect 200 clients depends on the machine, so no fixed wait fits: this one fails only
 * when `remaining` has not fallen for `stallMs` (something is stuck), and the run's
 * --max-seconds bounds it all. `describe(n)` is the progress line, said every 10 s.
 */
async function untilNoneLeft(remaining, describe, say, { stallMs, intervalMs }) {
  let least = Infinity;
  let since = Date.now();
  let reported = Date.now();
  for (;;) {
    const n = await remaining();
    if (n === 0) return;
    if (n < least) {
      least = n;
      since = Date.now();
    } else if (Date.now() - since > stallMs) {
      throw new Error(`timed out: ${describe(n)}, none fewer for ${stallMs / 1000} s`);
    }
    if (Date.now() - reported > 10_000) {
      say(describe(n));
      reported = Date.now();
    }
    await pause(intervalMs);
  }
}

// ------------------------------------------------------------------------------ population

const TEAMS = 4;

/**
 * Tenants, their users (every third one with a second device), each user in one or two teams
 * (`team:N`, entitled by the token's `groups` claim). A few users per tenant have no socket and
 * poll `missed` instead.
 */
function population(o, run, r) {
  const users = [];
  const perTenant = Math.ceil(o.clients / o.tenants);
  let devices = 0;
  for (let t = 0; t < o.tenants; t++) {
    const tenant = `chaos-${run}-t${t}`;
    for (let u = 0; devices < o.clients && u < perTenant; u++) {
      const teams = [`team:${r.int(0, TEAMS - 1)}`];
      if (r.chance(0.4)) teams.push(`team:${(Number(teams[0].slice(5)) + 1) % TEAMS}`);
      const n = u % 3 === 0 && devices + 2 <= o.clients && devices < (t + 1) * perTenant - 1 ? 2 : 1;
      users.push({ tenant, sub: `u${t}-${u}`, teams, devices: n, poller: false });
      devices += n;
    }
    const pollers = Math.max(1, Math.round(perTenant / 25));
    for (let p = 0; p < pollers; p++) {
      users.push({ tenant, sub: `poll${t}-${p}`, teams: [`team:${r.int(0, TEAMS - 1)}`], devices: 0, poller: true });
    }
  }
  return users;
}

/**
 * The kind of each of `count` devices (in the order main creates them): the populations of
 * --populations in turn, a third each when all three run, then shuffled. The shuffle has a
 * generator of its own, so a seed's users, teams and message plan stay what they were before
 * there were kinds.
 */
function deviceKinds(o, count) {
  const kinds = Array.from({ length: count }, (_, i) => o.populations[i % o.populations.length]);
  const r = rng(o.seed * 104_729 + 17);
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = r.int(0, i);
    [kinds[i], kinds[j]] = [kinds[j], kinds[i]];
  }
  return kinds;
}

// ------------------------------------------------------------------------------ clients

/** A device running `client/herald.js` (the `herald` population). */
class Device {
  constructor(user, index, stack, token, o) {
    this.kind = "herald";
    this.user = user;
    this.name = `${user.tenant}/${user.sub}#${index}`;
    this.shown = new Map(); // id -> times the app saw it
    this.live = 0;
    this.replayed = 0;
    this.missed = 0; // (stays 0: given no `httpUrl`, herald.js has no polling fallback here)
    this.frameCount = 0; // notification frames off the socket, repeats too (the cost meter's deliveries)
    this.messageCount = 0; // WebSocket messages off the socket (a batch message is one)
    this.drops = 0;
    this.errors = [];
    // What came over the socket, below the client's own dedupe: a replayed frame for an id that
    // came before is a resend (what `have` is there to spare), a live one a repeated push.
    this.frames = new Set();
    this.resends = 0;
    this.missedRepeats = 0;
    this.liveRepeats = 0;
    const device = this;
    class TappedWebSocket extends WebSocket {
      constructor(...args) {
        super(...args);
        this.on("message", (data) => device.tap(data));
      }
    }
    this.client = new HeraldClient({
      url: stack.websocketUrl,
      token,
      WebSocketImpl: TappedWebSocket,
      storage: null,
      groups: user.teams,
      // Quick reconnects: a browser would wait longer, the churn is the point here.
      backoff: { initialMs: 200, maxMs: 2000 },
      // The local stack on two cores answers a reconnect storm of 200 clients far more slowly
      // than API Gateway and Lambda (4 instances a function, one moto): with the defaults (15 s
      // handshake, 10 s request) slow answers became retries that only added load, and after the
      // churn stopped clients kept failing their sync (measured: 2.5 connects per client). Even
      // 30 s was too short for the final re-join of all 200 at once: each resume page waits its
      // turn behind the others' (4 instances of ws-message, up to 200 posts a page), a request
      // that gave up dropped the connection and started over, and the abandoned pages still ran
      // (2026-11-29: 60 s after the queues were empty, 17 of 200 clients were ready).
      connectTimeoutMs: 45_000,
      requestTimeoutMs: 120_000,
      syncEvery: 50,
      dedupeSize: 20_000,
    });
    this.client.on("notification", (n, meta) => {
      this.shown.set(n.id, (this.shown.get(n.id) ?? 0) + 1);
      if (meta.replayed) this.replayed++;
      else this.live++;
    });
    // When the client last began to re-join and resume, and whether that resume gave up before
    // the end (see the final resume in main).
    this.syncedFrom = 0;
    this.stalled = false;
    this.client.on("state", (s) => {
      if (s.state === "syncing") {
        this.syncedFrom = Date.now();
        this.stalled = false;
      }
    });
    this.client.on("error", (e) => {
      if (e.code === "resume_stalled") this.stalled = true;
      // Expected under faults (a resume cut by a drop, a request that met a killed function);
      // the latest are kept for the report.
      this.errors.push(`${e.code}: ${e.message}`);
      if (this.errors.length > 12) this.errors.shift();
    });
  }

  /** A message as it came off the socket (the client parses it again, and dedupes): a batch
   * message's frames one by one. */
  tap(data) {
    let m;
    try {
      m = JSON.parse(String(data));
    } catch {
      return;
    }
    this.messageCount++;
    for (const f of m?.type === "batch" && Array.isArray(m.frames) ? m.frames : [m]) this.tapFrame(f);
  }

  /** One server frame. */
  tapFrame(f) {
    if (f?.type === "notification") this.frameCount++;
    if (f?.type !== "notification" || typeof f.id !== "string" || f.ephemeral) return;
    if (!this.frames.has(f.id)) this.frames.add(f.id);
    else if (f.replayed) this.resends++;
    else this.liveRepeats++;
  }

  connect() {
    this.client.connect();
  }

  get state() {
    return this.client.state;
  }

  /** The open socket, for the churn to cut. */
  socket() {
    return this.client._conn?.ws ?? null;
  }

  /** Its resume point, for a loss report. */
  position() {
    return `cursor ${this.client.cursor}`;
  }

  /** One more resume, for a loss report: does it bring what is missing? */
  again() {
    return this.client.resume().then((r) => `resume again: ${r.count} replayed`, (e) => `resume again failed: ${e.code} ${e.message}`);
  }

  close() {
    this.client.close();
  }
}

// The raw clients wait as long as herald.js does here (see its options above): the local stack
// on two cores is slow to answer a reconnect storm, and a slow answer is not Herald's failure.
const RAW_CONNECT_TIMEOUT_MS = 45_000;
const RAW_REQUEST_TIMEOUT_MS = 120_000;
const RAW_BACKOFF = { initialMs: 200, maxMs: 2000 };
/** Pages of one resume or `missed` read before giving up (a server that answers `more` forever). */
const RAW_MAX_PAGES = 1000;

/**
 * A device that speaks the protocol itself over `ws`, as a hand-written app would (README "The
 * contracts"): connect with the token, `join` each of its groups one after another, then catch
 * up (`sync`, per kind); reconnect after a drop with a short backoff. Requests go one at a time,
 * so an answer API Gateway gives without a `ref` (a failed integration) belongs to the one in
 * flight. It dedupes by id like any app: a notification shows once, and a copy that comes again
 * from a resume or a `missed` read is counted as a resend.
 *
 * `last` is the cursor of the last notification (frame or `missed` item) received, in arrival
 * order: not the greatest, and not what the server answered to a resume; a live one only once
 * the connection has caught up. That is
 * the point of these clients: it is what a hand-written app does, and the promise is to hold for
 * it too. Where a live frame's cursor can pass an older notification still on its way (live
 * frames out of cursor order), a resume or read from it skips that one: a loss these count.
 */
class RawDevice {
  constructor(kind, user, index, stack, token, o) {
    this.kind = kind;
    this.user = user;
    this.name = `${user.tenant}/${user.sub}#${index}`;
    this.stack = stack;
    this.token = token;
    this.shown = new Map(); // id -> 1: the app dedupes, so nothing shows twice
    this.received = new Map(); // id -> copies received, from any source
    this.live = 0;
    this.replayed = 0;
    this.missed = 0;
    this.frameCount = 0; // notification frames off the socket, repeats too (the cost meter's deliveries)
    this.resends = 0;
    // Of the resends, items of a `missed` read (HTTP, not frames a resume posted).
    this.missedRepeats = 0;
    this.liveRepeats = 0;
    this.drops = 0;
    this.errors = [];
    this.last = null;
    // The latest catch-ups (when, from which cursor, how they ended) and how many connections
    // got through their sync, for a loss report: a resume or read from `last` covers what came
    // a lag before it, so what matters is how far `last` moved between two that completed.
    this.syncs = [];
    this.connections = 0;
    this.syncedConnections = 0;
    // Where the resends come from (`resendSources`): how the copy it already held came (live or
    // replayed, on this connection or an earlier one), and whether the entry's cursor was at or
    // before the `since` of the read that sent it again (the lag the read re-reads on purpose) or
    // past it. With the live frames that came without a cursor (before the connection's first
    // resume completed) and how long syncs took: what makes a resume send again.
    this.firstSeen = new Map(); // id -> "live" | "replayed" | "missed", and the connection number
    this.resendSources = {};
    this.liveWithoutCursor = 0;
    this.syncMs = [];
    this.since = null;
    this.state = "idle";
    this.ws = null;
    this.pending = new Map(); // ref -> {done, fail}
    this.seq = 0;
    this.closed = false;
    this.running = null;
    // Its own jitter for the backoff, from the seed and the device (not the run's tenant names,
    // which carry the clock).
    this.jitter = rng(o.seed * 7_793 + [...`${user.sub}#${index}`].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 0));
  }

  connect() {
    this.running ??= this.loop();
  }

  async loop() {
    let backoff = RAW_BACKOFF.initialMs;
    while (!this.closed) {
      const synced = await this.session().catch((e) => {
        this.error(`session: ${e.message}`);
        return false;
      });
      if (this.closed) break;
      backoff = synced ? RAW_BACKOFF.initialMs : Math.min(backoff * 2, RAW_BACKOFF.maxMs);
      await pause(backoff * (0.5 + this.jitter.next() / 2));
    }
    this.state = "closed";
  }

  /** One connection, from the handshake to its close; true if it got as far as ready. */
  async session() {
    this.state = "connecting";
    const ws = new WebSocket(this.stack.websocketUrl, ["herald.v1", this.token]);
    this.ws = ws;
    const closed = new Promise((resolve) => ws.once("close", resolve));
    ws.on("error", (e) => this.error(`socket: ${e.message}`));
    ws.on("message", (data) => this.onFrame(ws, data));
    closed.then(() => {
      for (const p of [...this.pending.values()]) p.fail(new Error("disconnected"));
    });
    const opened = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), RAW_CONNECT_TIMEOUT_MS);
      ws.once("open", () => (clearTimeout(timer), resolve(true)));
      closed.then(() => (clearTimeout(timer), resolve(false)));
    });
    if (!opened || this.closed) {
      ws.terminate();
      await closed;
      return false;
    }
    this.state = "syncing";
    this.connections++;
    const syncStarted = Date.now();
    try {
      for (const group of this.user.teams) {
        const answer = await this.request({ action: "join", group });
        if (answer.type !== "joined") throw new Error(`join ${group}: answered ${JSON.stringify(answer)}`);
      }
      await this.catchUp();
      this.syncedConnections++;
    } catch (e) {
      this.error(`sync: ${e.message}`);
      ws.terminate();
      await closed;
      return false;
    }
    if (ws.readyState !== WebSocket.OPEN) return false;
    this.syncMs.push(Date.now() - syncStarted);
    this.state = "ready";
    await closed;
    this.state = "connecting";
    return true;
  }

  /** A request on the open socket: its answer (the frame with its ref), or an error. */
  request(frame) {
    const ws = this.ws;
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject(new Error("disconnected"));
        return;
      }
      const ref = `r${++this.seq}`;
      const settle = (fn) => (v) => {
        clearTimeout(timer);
        this.pending.delete(ref);
        fn(v);
      };
      const timer = setTimeout(() => settle(reject)(new Error(`no answer to ${frame.action} within ${RAW_REQUEST_TIMEOUT_MS} ms`)), RAW_REQUEST_TIMEOUT_MS);
      this.pending.set(ref, { done: settle(resolve), fail: settle(reject) });
      ws.send(JSON.stringify({ ...frame, ref }));
    });
  }

  onFrame(ws, data) {
    if (ws !== this.ws) return;
    let f;
    try {
      f = JSON.parse(String(data));
    } catch {
      this.error("a frame that is not JSON");
      return;
    }
    if (f?.type === "notification") {
      this.frameCount++;
      // Ephemeral publishes carry no cursor and are in no log: not part of the promise.
      if (typeof f.id === "string" && !f.ephemeral) this.take(f, f.replayed ? "replayed" : "live");
      return;
    }
    // Only notification frames move `last`: an app keeps the cursor of the last notification it
    // showed (a `resumed` answer's is a resume point that trails the clock by the lag).
    const p = f?.ref != null ? this.pending.get(String(f.ref)) : null;
    if (p) {
      if (f.type === "error") p.fail(new Error(`${f.code}: ${f.message}`));
      else p.done(f);
    } else if (f?.type === undefined && typeof f?.message === "string") {
      // API Gateway's answer to a failed integration (a killed function), without a ref.
      for (const q of [...this.pending.values()]) q.fail(new Error(`gateway: ${f.message}`));
    } else if (f?.type === "error") {
      this.error(`${f.code}: ${f.message}`);
    }
  }

  /** A notification, live, replayed or a `missed` item: shown once, its cursor the last one. */
  take(n, source) {
    const copies = this.received.get(n.id) ?? 0;
    this.received.set(n.id, copies + 1);
    if (copies === 0) this.firstSeen.set(n.id, { source, connection: this.connections });
    if (source === "live" && typeof n.cursor !== "string") this.liveWithoutCursor++;
    if (copies > 0 && source !== "live") {
      const held = this.firstSeen.get(n.id);
      const where = `${held.source} ${held.connection === this.connections ? "here" : "earlier"}`;
      const lag = this.since != null && typeof n.cursor === "string" ? (n.cursor <= this.since ? ", at or before since" : ", past since") : "";
      const k = where + lag;
      this.resendSources[k] = (this.resendSources[k] ?? 0) + 1;
    }
    // Any cursor it receives, as a naive app keeps it: the server leaves it off the live frames
    // of a connection that has not caught up, where it would not be a safe resume point.
    if (typeof n.cursor === "string") this.last = n.cursor;
    if (copies === 0) {
      this.shown.set(n.id, 1);
      this[source]++;
    } else if (source === "live") this.liveRepeats++;
    else {
      this.resends++;
      if (source === "missed") this.missedRepeats++;
    }
  }

  error(message) {
    // Expected under churn and faults; the latest are kept for the report.
    this.errors.push(message);
    if (this.errors.length > 12) this.errors.shift();
  }

  socket() {
    return this.ws;
  }

  position() {
    const syncs = this.syncs.map((x) => `${x.at} from ${x.from}: ${x.outcome}`).join("; ");
    return `last cursor ${this.last}, ${this.syncedConnections} of ${this.connections} connections got through their sync, latest catch-ups: ${syncs}`;
  }

  /**
   * The final round once the queues are empty (main): one more catch-up from `last` over the
   * connection it has, once it is ready (a drop meanwhile reconnects and syncs by itself, and
   * requests must not overlap that sync's). Resolves to the notifications it read.
   */
  async finalRound() {
    await until(() => this.state === "ready" || this.closed, `${this.name} to be ready`, RAW_REQUEST_TIMEOUT_MS);
    return this.catchUp();
  }

  /** `sync` (the kind's catch-up), with its record in `syncs`. */
  async catchUp() {
    const entry = { at: new Date().toISOString().slice(11, 23), from: this.last, outcome: "running" };
    this.since = this.last;
    this.syncs.push(entry);
    if (this.syncs.length > 12) this.syncs.shift();
    try {
      const n = await this.sync();
      entry.outcome = `${n} read`;
      return n;
    } catch (e) {
      entry.outcome = `failed (${e.message})`;
      throw e;
    }
  }

  again() {
    const from = this.last;
    return this.finalRound().then((n) => `${this.kind === "last-cursor" ? "resume" : "poll"} again from ${from}: ${n} read`, (e) => `again from ${from} failed: ${e.message}`);
  }

  close() {
    this.closed = true;
    this.ws?.terminate();
  }
}

/** Resumes from the last cursor it received, paging with `next` while `more`. */
class LastCursorDevice extends RawDevice {
  constructor(...args) {
    super("last-cursor", ...args);
  }

  async sync() {
    // The first connect has no cursor: from the start of the log (empty then: a fresh stack).
    let frame = this.last == null ? { action: "resume" } : { action: "resume", since: this.last };
    let total = 0;
    let stalls = 0;
    for (let page = 0; page < RAW_MAX_PAGES; page++) {
      const answer = await this.request(frame);
      if (answer.type !== "resumed") throw new Error(`resume: answered ${JSON.stringify(answer)}`);
      const count = Number(answer.count) || 0;
      total += count;
      if (!answer.more) return total;
      if (typeof answer.next !== "string") throw new Error(`resume: more without next: ${JSON.stringify(answer)}`);
      // A page that moved nothing (a replay post failed): back off a little, give up after a few.
      stalls = count === 0 && answer.next === (frame.page ?? frame.since) ? stalls + 1 : 0;
      if (stalls >= 5) throw new Error(`resume keeps answering more without notifications at ${answer.next}`);
      if (stalls) await pause(250 * stalls);
      // `next` is a page token, passed back as `page`.
      frame = { action: "resume", page: answer.next };
    }
    throw new Error(`resume: still more after ${RAW_MAX_PAGES} pages`);
  }
}

/** Never resumes: reads `GET /notifications/missed` from the last cursor it received. */
class MissedPollerDevice extends RawDevice {
  constructor(...args) {
    super("missed-poller", ...args);
  }

  async sync() {
    const query = new URLSearchParams({ limit: "50" });
    if (this.last != null) query.set("since", this.last);
    let total = 0;
    for (let page = 0; page < RAW_MAX_PAGES; page++) {
      const res = await http("GET", `${this.stack.httpUrl}/notifications/missed?${query}`, { token: this.token, timeoutMs: RAW_REQUEST_TIMEOUT_MS });
      if (res.status !== 200) throw new Error(`GET /notifications/missed: ${res.status} ${JSON.stringify(res.json)}`);
      for (const n of res.json.items) this.take(n, "missed");
      total += res.json.items.length;
      if (!res.json.next) return total;
      // As with resume: `next` is a page token, passed back as `page` (it wins over `since`).
      query.set("page", res.json.next);
    }
    throw new Error(`missed: still a next page after ${RAW_MAX_PAGES}`);
  }
}

/** A user without a socket: polls `missed` from the server's `cursor`, paging with `next`. */
class Poller {
  constructor(user, stack, token) {
    this.user = user;
    this.name = `${user.tenant}/${user.sub}`;
    this.stack = stack;
    this.token = token;
    this.cursor = null;
    this.shown = new Map();
    this.polls = 0;
    this.failures = 0;
  }

  /** One poll to the end (all pages). The resume point is only ever the server's `cursor`. */
  async poll() {
    let from = this.cursor;
    for (let page = 0; page < 1000; page++) {
      const q = new URLSearchParams({ limit: "200" });
      if (from) q.set("since", from);
      const res = await http("GET", `${this.stack.httpUrl}/notifications/missed?${q}`, { token: this.token });
      this.polls++;
      if (res.status !== 200) {
        this.failures++;
        return false;
      }
      for (const n of res.json.items) if (!this.shown.has(n.id)) this.shown.set(n.id, 1);
      if (typeof res.json.cursor === "string") this.cursor = res.json.cursor;
      if (!res.json.next) return true;
      from = res.json.next;
    }
    return true;
  }
}

// ------------------------------------------------------------------------------ producers

/**
 * The message plan: `count` notifications over the population, every target kind, each with the
 * set of users meant to get it. Some are sent twice (a producer retry with the same id), some
 * are deferred a few seconds (`deliverAt`), a few go to everyone (`all`).
 */
function plan(o, run, users, r) {
  const byTenant = new Map();
  for (const u of users) {
    if (!byTenant.has(u.tenant)) byTenant.set(u.tenant, []);
    byTenant.get(u.tenant).push(u);
  }
  const tenants = [...byTenant.keys()];
  const key = (u) => `${u.tenant}/${u.sub}`;
  const messages = [];
  for (let i = 0; i < o.notifications; i++) {
    const tenant = r.pick(tenants);
    const members = byTenant.get(tenant);
    const roll = r.next();
    let to;
    let audience;
    if (roll < 0.35) {
      const u = r.pick(members);
      to = { user: u.sub };
      audience = [u];
    } else if (roll < 0.55) {
      const picked = new Set();
      const n = r.int(2, 5);
      for (let k = 0; k < n; k++) picked.add(r.pick(members));
      audience = [...picked];
      to = { users: audience.map((u) => u.sub) };
    } else if (roll < 0.85) {
      const team = `team:${r.int(0, TEAMS - 1)}`;
      to = { group: team };
      audience = members.filter((u) => u.teams.includes(team));
    } else if (roll < 0.995) {
      to = { tenant: true };
      audience = members;
    } else {
      to = { all: true };
      audience = users;
    }
    const id = `c${run}-${i}`;
    const deferMs = r.chance(0.02) ? r.int(2000, 6000) : 0;
    messages.push({
      id,
      tenant,
      to,
      audience: new Set(audience.map(key)),
      via: to.all || !r.chance(o.httpShare) ? "sqs" : "http",
      deferMs,
      duplicate: r.chance(0.03),
    });
  }
  return messages;
}

/**
 * Sends the plan, paced at `rate` notifications a second in plan order, by `producers` concurrent
 * workers. SQS-bound messages go in batches of up to ten consecutive ones (SendMessageBatch, as a
 * busy service sends), HTTP-bound ones one request each; a duplicate is the same body sent again
 * in the next unit. A failed send is retried (same id) like a producer would.
 */
async function produce(o, stack, messages, serviceTokens, stats, deadline) {
  const dispatchQueue = stack.queues.DispatchQueue;
  const started = Date.now();
  // Units in plan order: each message, and its duplicate right after it.
  const units = [];
  messages.forEach((m, i) => {
    units.push({ m, due: started + (i * 1000) / o.rate });
    if (m.duplicate) units.push({ m, due: started + (i * 1000) / o.rate, duplicate: true });
  });
  // Sends: up to ten consecutive SQS units (never the same id twice in one batch), or one HTTP.
  const sends = [];
  for (const u of units) {
    const last = sends[sends.length - 1];
    if (u.m.via === "sqs" && last && last.via === "sqs" && last.units.length < 10 && !last.units.some((x) => x.m.id === u.m.id)) {
      last.units.push(u);
    } else {
      sends.push({ via: u.m.via, due: u.due, units: [u] });
    }
  }
  const bodyOf = (m) => {
    const body = { id: m.id, tenant: m.tenant, to: m.to, event: "chaos.test", title: `chaos ${m.id}`, body: "nothing lost" };
    if (m.deferMs) body.deliverAt = new Date(Date.now() + m.deferMs).toISOString();
    return body;
  };
  const attempt = async (send) => {
    if (send.via === "sqs") {
      const entries = send.units.map((u, i) => ({ Id: String(i), MessageBody: JSON.stringify(bodyOf(u.m)) }));
      const out = await sqsCall(stack, "SendMessageBatch", { QueueUrl: dispatchQueue, Entries: entries });
      if (out.Failed?.length) throw new Error(`SendMessageBatch: ${out.Failed.length} failed`);
      return;
    }
    const m = send.units[0].m;
    const res = await http("POST", `${stack.httpUrl}/notifications`, { token: serviceTokens.get(m.tenant), body: bodyOf(m) });
    // A 5xx means the API failed (a killed function): the producer retries, same id.
    if (res.status >= 500 || res.status === 429) throw new Error(`POST /notifications: ${res.status}`);
    if (res.status !== 202) throw new Error(`POST /notifications refused: ${res.status} ${JSON.stringify(res.json)}`);
  };
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= sends.length) return;
      const send = sends[i];
      if (send.due > Date.now()) await pause(send.due - Date.now());
      const began = Date.now();
      for (let tries = 0; ; tries++) {
        try {
          await attempt(send);
          break;
        } catch (e) {
          if (tries >= 20 || Date.now() > deadline || /refused/.test(String(e.message))) throw e;
          stats.producerRetries++;
          await pause(100 * (tries + 1));
        }
      }
      stats.sent += send.units.length;
      stats.duplicatesSent += send.units.filter((u) => u.duplicate).length;
      stats.sendMs[send.via] = (stats.sendMs[send.via] ?? 0) + (Date.now() - began);
      stats.requests[send.via] = (stats.requests[send.via] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: o.producers }, worker));
}

// ------------------------------------------------------------------------------ faults

const FAULTS = [
  ["POST", "/faults/posts", { rate: 0.02, status: 500 }],
  ["POST", "/faults/posts", { rate: 0.02, status: 429 }],
  ["POST", "/faults/posts", { rate: 0.003, status: 410 }],
  ["POST", "/faults/kill", { function: "dispatch", rate: 0.04, afterMs: 400 }],
  ["POST", "/faults/kill", { function: "retry", rate: 0.05, afterMs: 200 }],
  ["POST", "/faults/kill", { function: "ws-message", rate: 0.01, afterMs: 150 }],
  ["POST", "/faults/redeliver", { function: "dispatch", rate: 0.04 }],
  // The log write (BatchWriteItem of `n#` items): throttled, delayed a little, and now and then
  // delayed past the visibility horizon (10 s), which makes dispatch write it again.
  ["POST", "/faults/aws", { target: "BatchWriteItem", match: '"n#', rate: 0.03, status: 400 }],
  ["POST", "/faults/aws", { target: "BatchWriteItem", match: '"n#', rate: 0.05, delayMs: 2500 }],
  ["POST", "/faults/aws", { target: "BatchWriteItem", match: '"n#', rate: 0.004, delayMs: 11000 }],
  ["POST", "/faults/aws", { target: "DynamoDB_20120810.Query", rate: 0.02, status: 400 }],
  ["POST", "/faults/aws", { target: "DynamoDB_20120810.UpdateItem", rate: 0.02, status: 400 }],
  ["POST", "/faults/aws", { target: "DynamoDB_20120810.PutItem", rate: 0.02, status: 400 }],
];

// ------------------------------------------------------------------------------ the run

/**
 * Where a run's stack log goes: --stack-log FILE for every run (the last one written is the one
 * that stopped the runs), else target/chaos/run-SEED.log for a run that failed.
 */
function keepStackLog(o, lines, failed) {
  const file = o.stackLog ?? (failed ? path.join(repo, "target", "chaos", `run-${o.seed}.log`) : null);
  if (!file) return null;
  mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  writeFileSync(file, `${lines.join("\n")}\n`);
  return file;
}

/**
 * The cost meter's reading (GET {control}/cost, infra/herald_local/cost.py) in dollars per
 * million deliveries (notification frames the clients received), by service, dearest first.
 */
function costPerDelivery(meter, deliveries) {
  const perMillion = {};
  for (const [service, dollars] of Object.entries(meter.dollars)) {
    perMillion[service] = deliveries ? Number(((dollars / deliveries) * 1e6).toFixed(3)) : null;
  }
  const services = Object.entries(perMillion).filter(([k, v]) => k !== "total" && v).sort((a, b) => b[1] - a[1]);
  const line = `$${perMillion.total} per million deliveries (${deliveries} frames in ${meter.seconds.toFixed(0)} s): ` +
    services.map(([k, v]) => `${k} ${v}`).join(", ") + ` (prices of ${meter.pricesAsOf})`;
  const u = meter.usage;
  const figures = {
    deliveries, dollarsPerMillionDeliveries: perMillion, seconds: meter.seconds, pricesAsOf: meter.pricesAsOf,
    usage: {
      dynamodbWriteUnits: u.dynamodb.writeRequestUnits, dynamodbReadUnits: u.dynamodb.readRequestUnits,
      sqsRequests: u.sqs.requests, messagesOut: u.apigateway.messagesOut, messagesIn: u.apigateway.messagesIn,
      connectionMinutes: u.apigateway.connectionMinutes, httpRequests: u.apigateway.httpRequests,
      lambdaRequests: u.lambda.requests, schedulerInvocations: u.scheduler.invocations,
    },
  };
  return { line, figures, meter };
}

/** The one line a run leaves in the summary of --runs. */
function summaryLine(seed, seconds, figures, note) {
  if (!figures) return `seed ${seed}: ${seconds} s, ${note}`;
  const byKind = Object.entries(figures.populations).map(([k, p]) => `${k} ${p.lost}`).join(", ");
  return `seed ${seed}: ${seconds} s, lost ${figures.lostOnDevices} on devices (${byKind}), ${figures.lost} for users, ` +
    `shown twice ${figures.duplicatesShown}, resend ratio ${figures.resendRatio} (frames by resumes ${figures.frameResendRatio})${note ? `, ${note}` : ""}`;
}

/** Figures of a population (or all of them): deliveries meant for its devices, and what came. */
function populationFigures(devices, messages, key) {
  const f = { devices: devices.length, intendedDeliveries: 0, received: 0, lost: 0, receivedLive: 0, receivedByResume: 0, receivedByMissed: 0, resends: 0, frameResends: 0, missedRepeats: 0, liveRepeats: 0, resendRatio: 0, frameResendRatio: 0, duplicatesShown: 0, drops: 0 };
  for (const d of devices) {
    for (const m of messages) {
      if (!m.audience.has(key(d.user))) continue;
      f.intendedDeliveries++;
      if (d.shown.has(m.id)) f.received++;
      else f.lost++;
    }
    for (const times of d.shown.values()) if (times > 1) f.duplicatesShown += times - 1;
    f.receivedLive += d.live;
    f.receivedByResume += d.replayed;
    f.receivedByMissed += d.missed;
    f.resends += d.resends;
    f.frameResends += d.resends - d.missedRepeats;
    f.missedRepeats += d.missedRepeats;
    f.liveRepeats += d.liveRepeats;
    f.drops += d.drops;
    if (d.resendSources) {
      f.resendSources ??= {};
      for (const [k, v] of Object.entries(d.resendSources)) f.resendSources[k] = (f.resendSources[k] ?? 0) + v;
      f.liveWithoutCursor = (f.liveWithoutCursor ?? 0) + d.liveWithoutCursor;
      (f.syncMs ??= []).push(...d.syncMs);
    }
  }
  if (f.syncMs) {
    const ms = f.syncMs.sort((a, b) => a - b);
    const at = (q) => ms.length ? ms[Math.min(ms.length - 1, Math.floor(q * ms.length))] : 0;
    f.syncMs = { syncs: ms.length, p50: at(0.5), p95: at(0.95), max: ms.at(-1) ?? 0 };
  }
  // Copies sent again by a resume or a `missed` read of an id the device had, per delivery.
  f.resendRatio = f.intendedDeliveries ? Number((f.resends / f.intendedDeliveries).toFixed(4)) : 0;
  // Only frames a resume posted again (what API Gateway bills), per delivery.
  f.frameResendRatio = f.intendedDeliveries ? Number((f.frameResends / f.intendedDeliveries).toFixed(4)) : 0;
  return f;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const lines = [];
  let code = 0;
  for (let k = 0; k < o.runs; k++) {
    const seed = o.seed + k;
    const t0 = Date.now();
    const { failed, figures, note } = await runOnce({ ...o, seed }, (figures, note) => {
      // The hard stop's last word (it exits at once): this run's line, and all before it.
      const line = summaryLine(seed, ((Date.now() - t0) / 1000).toFixed(1), figures, note);
      if (o.runs > 1) console.log(`runs:\n  ${[...lines, line].join("\n  ")}`);
    });
    const line = summaryLine(seed, ((Date.now() - t0) / 1000).toFixed(1), figures, note);
    lines.push(line);
    console.log(`[chaos] run ${k + 1} of ${o.runs}: ${line}`);
    if (failed) {
      code = 1;
      break;
    }
  }
  if (o.runs > 1) console.log(`runs:\n  ${lines.join("\n  ")}`);
  process.exit(code);
}

/**
 * One run on a stack of its own (`o.seed` its seed). Resolves to whether it failed, its figures
 * (null if it did not get to count) and a note on why it stopped. `onHardStop` speaks last when
 * --max-seconds ends the process.
 */
async function runOnce(o, onHardStop) {
  const t0 = Date.now();
  const elapsed = () => ((Date.now() - t0) / 1000).toFixed(1);
  const say = (msg) => console.log(`[chaos ${elapsed()}s] ${msg}`);
  const r = rng(o.seed);
  const run = `${o.seed}x${Date.now().toString(36)}`;
  const local = chaosStack(o);
  const stackLog = local.output;
  const hardStop = setTimeout(() => {
    console.error(`chaos: --max-seconds ${o.maxSeconds} reached; stopping`);
    const file = keepStackLog(o, stackLog, true);
    if (file) console.error(`chaos: the stack's log is in ${file}`);
    onHardStop(null, `stopped at --max-seconds ${o.maxSeconds}`);
    process.exit(2);
  }, o.maxSeconds * 1000);
  hardStop.unref();
  let failed = true;
  let figuresOut = null;
  let note = "did not get to count";
  const devices = [];
  try {
    const stack = await local.ready;
    say(`stack ready (${o.profile}); ${o.clients} clients in ${o.tenants} tenants, ${o.notifications} notifications from ${o.producers} producers at ${o.rate}/s, faults ${o.faults ? "on" : "off"}, seed ${o.seed}`);

    const users = population(o, run, r);
    const kinds = deviceKinds(o, users.reduce((n, u) => n + u.devices, 0));
    const pollers = [];
    for (const u of users) {
      const token = await mintToken(stack, { sub: u.sub, tenant: u.tenant, roles: [], groups: u.teams });
      if (u.poller) pollers.push(new Poller(u, stack, token));
      for (let d = 0; d < u.devices; d++) {
        const kind = kinds[devices.length];
        if (kind === "herald") devices.push(new Device(u, d, stack, token, o));
        else if (kind === "last-cursor") devices.push(new LastCursorDevice(u, d, stack, token, o));
        else devices.push(new MissedPollerDevice(u, d, stack, token, o));
      }
    }
    const serviceTokens = new Map();
    for (const u of users) {
      if (!serviceTokens.has(u.tenant)) serviceTokens.set(u.tenant, await mintToken(stack, { sub: "chaos-producer", tenant: u.tenant, roles: ["service"] }));
    }
    // Connect in waves (a browser fleet does not open 200 sockets in one millisecond either).
    for (let i = 0; i < devices.length; i += 20) {
      for (const d of devices.slice(i, i + 20)) d.connect();
      // Generous: the run's own --max-seconds bounds it all, and a wave on a busy machine (the
      // first stack of a full run once needed over a minute) is not a failure of Herald's.
      await until(() => devices.slice(i, i + 20).every((d) => d.state === "ready"), "clients to be ready", 180_000);
    }
    for (const p of pollers) await p.poll(); // their starting point: now
    const perKind = o.populations.map((k) => `${devices.filter((d) => d.kind === k).length} ${k}`).join(", ");
    say(`${devices.length} clients ready (${perKind}), ${pollers.length} pollers`);

    // The cost meter counts from here: the clients' first connect and sync is set-up.
    await control(stack, "DELETE", "/cost");
    if (o.faults) for (const [m, route, body] of FAULTS) await control(stack, m, route, body);

    // Churn: each device's connection is cut at random intervals, abruptly (no close frame, as
    // a network failure: `ws.terminate()` destroys the TCP socket), whatever the client is doing
    // — in the middle of a resume too. The client notices, reconnects and resumes by itself.
    let churning = true;
    // Resolved when the churn stops, so that no device sits out the rest of its pause.
    let stopChurn;
    const churnStopped = new Promise((resolve) => (stopChurn = resolve));
    const churn = devices.map(async (d, i) => {
      const ch = rng(o.seed * 7919 + i);
      while (churning) {
        await Promise.race([pause(ch.int(o.churnMs[0], o.churnMs[1])), churnStopped]);
        const socket = d.socket();
        if (!churning || !socket || socket.readyState !== WebSocket.OPEN) continue;
        socket.terminate();
        d.drops++;
      }
    });
    let polling = true;
    const polls = pollers.map(async (p) => {
      while (polling) {
        await p.poll().catch(() => p.failures++);
        await pause(1000);
      }
    });

    const messages = plan(o, run, users, r);
    const stats = { sent: 0, duplicatesSent: 0, producerRetries: 0, sendMs: {}, requests: {} };
    // What the clients are doing (connecting, syncing, ready, ...), for the progress lines.
    const states = () => {
      const count = {};
      for (const d of devices) count[d.state] = (count[d.state] ?? 0) + 1;
      return JSON.stringify(count);
    };
    const progress = setInterval(() => say(`sent ${stats.sent}/${messages.length + messages.filter((m) => m.duplicate).length}; clients ${states()}`), 10_000);
    try {
      await produce(o, stack, messages, serviceTokens, stats, t0 + o.maxSeconds * 1000);
    } finally {
      clearInterval(progress);
    }
    const avg = (via) => (stats.requests[via] ? Math.round(stats.sendMs[via] / stats.requests[via]) : 0);
    say(`producer requests: ${stats.requests.sqs ?? 0} SQS batches (mean ${avg("sqs")} ms), ${stats.requests.http ?? 0} POST /notifications (mean ${avg("http")} ms)`);
    say(`producers done: ${stats.sent} sends (${stats.duplicatesSent} duplicate ids, ${stats.producerRetries} producer retries)`);

    // Settle: stop the churn and the faults, let every queue drain (deferred ones fire).
    churning = false;
    stopChurn();
    await Promise.all(churn);
    const injected = o.faults ? (await control(stack, "GET", "/faults")).injected : {};
    await control(stack, "DELETE", "/faults");
    const queues = ["DispatchQueue", "InternalQueue", "RetryQueue"].map((q) => stack.queues[q]).filter(Boolean);
    const maxDefer = Math.max(0, ...messages.map((m) => m.deferMs));
    await pause(maxDefer);
    const depth = async () => (await Promise.all(queues.map((q) => queueDepth(stack, q)))).reduce((a, b) => a + b, 0);
    await untilNoneLeft(depth, (n) => `draining: ${n} messages on the queues; clients ${states()}`, say, { stallMs: 180_000, intervalMs: 250 });
    const drainedAt = Date.now();
    // What the run cost up to here (the final catch-up below is the suite's check, not traffic).
    const cost = costPerDelivery(await control(stack, "GET", "/cost"), devices.reduce((n, d) => n + d.frameCount, 0));
    say(`cost: ${cost.line}`);
    const heraldDevices = devices.filter((d) => d instanceof Device);
    const framesIn = heraldDevices.reduce((n, d) => n + d.frameCount, 0);
    const messagesIn = heraldDevices.reduce((n, d) => n + d.messageCount, 0);
    say(`herald.js devices (batch frames): ${framesIn} notification frames came in ${messagesIn} WebSocket messages, replies included`);
    say("queues drained; final resume and poll");

    // Every dispatch has finished, so every entry is in the log: one resume (which sends
    // entries past the horizon too) and one poll each must bring everything.
    polling = false;
    await Promise.all(polls);
    const notReady = () => devices.filter((d) => d.state !== "ready").length;
    await untilNoneLeft(notReady, (n) => `clients not ready again: ${n} of ${devices.length} ${states()}`, say, { stallMs: 120_000, intervalMs: 100 }).catch((e) => {
      const stuck = devices.filter((d) => d.state !== "ready").slice(0, 5)
        .map((d) => `${d.name} (${d.kind}) ${d.state}, errors: ${JSON.stringify(d.errors.slice(-4))}`);
      throw new Error(`${e.message}\n  ${stuck.join("\n  ")}`);
    });
    // A client whose last re-join and resume began after the queues were empty, and went to the
    // end, has resumed over the whole log already (a resume sends entries past the horizon too);
    // the others resume once more.
    const finalErrors = [];
    const behind = devices.filter((d) => d.kind === "herald" && (d.syncedFrom < drainedAt || d.stalled));
    // The raw clients catch up once more from their own last cursor, each kind its own way
    // (a resume, or a `missed` read), whenever they last did.
    const raw = devices.filter((d) => d.kind !== "herald");
    say(`final resume of the ${behind.length} herald.js clients that last resumed before the queues were empty or gave up, and a last catch-up of the ${raw.length} raw clients`);
    await Promise.all([
      ...behind.map((d) => d.client.resume().catch(() => d.client.resume()).catch((e) => finalErrors.push(`${d.name}: ${e.code} ${e.message}`))),
      ...raw.map((d) => d.finalRound().catch(() => d.finalRound()).catch((e) => finalErrors.push(`${d.name} (${d.kind}): ${e.message}`))),
    ]);
    if (finalErrors.length) say(`final catch-up failed for ${finalErrors.length} device(s): ${finalErrors.slice(0, 5).join("; ")}`);
    for (const p of pollers) await p.poll();
    const dead = await deadLetters(stack);

    // The figures.
    const key = (u) => `${u.tenant}/${u.sub}`;
    const received = new Map(); // user key -> Set of ids (any device)
    for (const d of devices) {
      const set = received.get(key(d.user)) ?? new Set();
      for (const id of d.shown.keys()) set.add(id);
      received.set(key(d.user), set);
    }
    for (const p of pollers) received.set(key(p.user), new Set(p.shown.keys()));
    let intended = 0;
    const lost = [];
    for (const m of messages) {
      for (const u of m.audience) {
        intended++;
        const got = received.get(u);
        if (!got || !got.has(m.id)) lost.push(`${m.id} -> ${u}`);
      }
    }
    // Per device: each device of a user must show it (a second tab resumes on its own), and
    // per population (a user's devices may be of different kinds).
    const all = populationFigures(devices, messages, key);
    const populations = {};
    for (const kind of o.populations) populations[kind] = populationFigures(devices.filter((d) => d.kind === kind), messages, key);
    const deviceLost = all.lost;
    const dupShown = all.duplicatesShown;
    const figures = {
      seed: o.seed,
      clients: devices.length,
      pollers: pollers.length,
      users: users.length,
      tenants: o.tenants,
      notifications: messages.length,
      sends: stats.sent,
      duplicateIdsSent: stats.duplicatesSent,
      deferred: messages.filter((m) => m.deferMs).length,
      intendedDeliveries: intended,
      intendedDeviceDeliveries: all.intendedDeliveries,
      drops: all.drops,
      faultsInjected: injected,
      receivedLive: all.receivedLive,
      receivedByResume: all.receivedByResume,
      receivedByMissed: all.receivedByMissed,
      pollerRequests: pollers.reduce((n, p) => n + p.polls, 0),
      deadLettered: dead.reduce((n, m) => ({ ...n, [m.queue]: (n[m.queue] ?? 0) + 1 }), {}),
      lost: lost.length,
      lostOnDevices: deviceLost,
      duplicatesShown: dupShown,
      resends: all.resends,
      resendRatio: all.resendRatio,
      frameResends: all.frameResends,
      frameResendRatio: all.frameResendRatio,
      missedRepeats: all.missedRepeats,
      populations,
      cost: cost.figures,
      seconds: Number(elapsed()),
    };
    figuresOut = figures;
    console.log(JSON.stringify(figures, null, 2));
    for (const [kind, p] of Object.entries(populations)) {
      say(`${kind}: ${p.devices} devices, ${p.intendedDeliveries} deliveries meant, ${p.received} received (${p.receivedLive} live, ${p.receivedByResume} by resume, ${p.receivedByMissed} by missed), ` +
        `${p.lost} lost, ${p.duplicatesShown} shown twice, ${p.resends} resends (ratio ${p.resendRatio}; frames by resumes ${p.frameResends}, ratio ${p.frameResendRatio}; missed items ${p.missedRepeats}), ${p.liveRepeats} live repeats`);
      if (p.resendSources) {
        const sources = Object.entries(p.resendSources).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${v} held ${k}`).join("; ");
        say(`${kind}: resends by what was held: ${sources || "none"}; ${p.liveWithoutCursor} live frames without a cursor; ` +
          `syncs ${p.syncMs.syncs}, p50 ${p.syncMs.p50} ms, p95 ${p.syncMs.p95} ms, max ${p.syncMs.max} ms`);
      }
    }
    // The report file also has the meter's whole reading (by operation, by function).
    if (o.report) writeFileSync(o.report, `${JSON.stringify({ ...figures, cost: { ...cost.figures, meter: cost.meter } }, null, 2)}\n`);
    const lostOnDevices = [];
    for (const d of devices) {
      for (const m of messages) if (m.audience.has(key(d.user)) && !d.shown.has(m.id)) lostOnDevices.push(`${m.id} -> ${d.name} (${d.kind})`);
    }
    if (lost.length || lostOnDevices.length) {
      if (lost.length) console.error(`LOST for users (first 20 of ${lost.length}):\n  ${lost.slice(0, 20).join("\n  ")}`);
      console.error(`LOST on devices (first 20 of ${lostOnDevices.length}):\n  ${lostOnDevices.slice(0, 20).join("\n  ")}`);
      const lostIds = [...new Set([...lost, ...lostOnDevices].map((l) => l.split(" -> ")[0]))];
      console.error(`lost ids (${lostIds.length}): ${lostIds.join(" ")}`);
      // Where each lost id is on the server: its idempotency record (claimed? done? under which
      // cursor?) and its log entries in the partition its audience reads (none, or behind them).
      for (const id of lostIds.slice(0, 8)) {
        const m = messages.find((x) => x.id === id);
        console.error(`lost ${id}: ${await whereIs(stack, m).catch((e) => `unreadable: ${e.message}`)}`);
      }
      for (const m of dead.filter((d) => lostIds.some((id) => d.body.includes(id)))) {
        console.error(`dead-lettered on ${m.queue} after ${m.receives} receives: ${JSON.stringify(m.reason)} ${m.body.slice(0, 300)}`);
      }
      // What the devices that lost something went through, and whether one more resume brings
      // it (then the final resume stopped early) or not (then the server does not replay it).
      for (const d of devices) {
        const missing = messages.filter((m) => m.audience.has(key(d.user)) && !d.shown.has(m.id));
        if (!missing.length) continue;
        const position = d.position();
        const again = await d.again();
        const recovered = missing.filter((m) => d.shown.has(m.id)).length;
        const records = await connectionRecords(stack, d.user).catch((e) => `records unreadable: ${e.message}`);
        console.error(`device ${d.name} (${d.kind}): state ${d.state}, ${position}, drops ${d.drops}, groups ${d.user.teams}; connections of the user: ${records}; ` +
          `missing ${missing.length} (${[...new Set(missing.map((m) => Object.keys(m.to)[0] + (m.to.group ? `:${m.to.group}` : "")))].join(", ")}); ` +
          `${again}, recovered ${recovered}; errors: ${JSON.stringify(d.errors)}`);
      }
    }
    failed = lost.length > 0 || deviceLost > 0 || dupShown > 0;
    note = failed ? "" : "nothing lost";
    say(failed ? "FAILED: the delivery promise did not hold" : "nothing lost");
  } catch (e) {
    note = `failed: ${String(e.message ?? e).split("\n")[0]}`;
    console.error(`chaos: ${e.stack || e}`);
    if (stackLog.length) console.error(`--- last lines of the local stack ---\n${stackLog.slice(-60).join("\n")}`);
  } finally {
    clearTimeout(hardStop);
    for (const d of devices) d.close();
    await local.stop();
    // After the stop: the log is whole.
    const file = keepStackLog(o, stackLog, failed);
    if (file) console.log(`[chaos] the stack's log (seed ${o.seed}) is in ${file}`);
  }
  return { failed, figures: figuresOut, note };
}

main();
