// End-to-end tests of client/herald.js against the REAL local stack (infra/herald_local running
// the Rust binaries of target/$HERALD_PROFILE). Node's built-in runner: `node --test test/`.
//
// HERALD_PROFILE=debug|release (default debug) picks the binary; HERALD_TEST_VERBOSE=1 relays
// the stack's output. Every test uses its own tenant and users, waits with deadlines (never fixed
// sleeps), and the stack is stopped at the end (and exits by itself if this process dies).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";

import { HeraldClient, HeraldError, MAX_FRAME_BYTES, MAX_HISTORY, SUBPROTOCOL, backoffDelay, base64UrlBytes } from "../herald.js";
import { startStack, trouble, until as waitUntil } from "../test-support/stack.mjs";

const profile = process.env.HERALD_PROFILE || "debug";
const verbose = Boolean(process.env.HERALD_TEST_VERBOSE);
const DEADLINE_MS = 45_000;

/** @type {any} */
let stack; // the ready file
/** @type {ReturnType<typeof startStack> | undefined} */
let local; // the running stack

// ------------------------------------------------------------------------------------- helpers

let uniqueCounter = 0;
function unique(prefix) {
  uniqueCounter += 1;
  return `${prefix}-${process.pid}-${uniqueCounter}-${Math.random().toString(36).slice(2, 8)}`;
}

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value, or fails with `what` after the deadline. */
const until = (fn, what, timeoutMs = DEADLINE_MS) =>
  waitUntil(fn, what, timeoutMs, 25).catch((e) => {
    throw new Error(`${e.message}${local ? trouble(local.output) : ""}`);
  });

async function http(method, url, { token, body } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

/** A development token from the control API. */
async function mintToken({ sub, tenant, roles = [], groups, claims, alg = "HS256" }) {
  const body = { sub, tenant, roles, alg };
  if (groups) body.groups = groups;
  if (claims) body.claims = claims;
  const res = await http("POST", `${stack.controlUrl}/token`, { body });
  assert.equal(res.status, 200, `POST /_herald/token: ${JSON.stringify(res.json)}`);
  return res.json.token;
}

/** Publishes through the HTTP API as a service of `tenant`; returns the notification id. */
async function publish(tenant, message) {
  const token = await mintToken({ sub: "publisher", tenant, roles: ["service"] });
  const res = await http("POST", `${stack.httpUrl}/notifications`, { token, body: { tenant, ...message } });
  assert.equal(res.status, 202, `POST /notifications: ${res.status} ${JSON.stringify(res.json)}`);
  assert.equal(typeof res.json.id, "string");
  return res.json.id;
}

/** Ids in the user's log after `since` (GET /notifications/missed), to know a publish was logged. */
async function loggedIds(token, since) {
  const q = since ? `?since=${encodeURIComponent(since)}&limit=200` : "?limit=200";
  const res = await http("GET", `${stack.httpUrl}/notifications/missed${q}`, { token });
  assert.equal(res.status, 200, `GET /notifications/missed: ${JSON.stringify(res.json)}`);
  return new Set(res.json.items.map((n) => n.id));
}

async function connectionsOf(tenant, user) {
  const res = await http("GET", `${stack.controlUrl}/connections`);
  assert.equal(res.status, 200);
  return res.json.filter((c) => c.tenant === tenant && c.user === user);
}

/**
 * Stands in for the browser's service worker container and PushManager (Node has neither) for
 * the rest of test `t`; records what the client asked of them. `subscription` is what
 * `pushManager.subscribe` resolves with (`toJSON()` gives it back).
 */
function stubPushManager(t, subscription) {
  const calls = { register: [], subscribe: [], unsubscribed: 0 };
  /** @type {any} */
  let current = null;
  const pushManager = {
    getSubscription: async () => current,
    subscribe: async (options) => {
      calls.subscribe.push(options);
      current = {
        endpoint: subscription.endpoint,
        options: { applicationServerKey: options.applicationServerKey.buffer },
        toJSON: () => ({ endpoint: subscription.endpoint, expirationTime: null, keys: subscription.keys }),
        unsubscribe: async () => {
          calls.unsubscribed += 1;
          current = null;
          return true;
        },
      };
      return current;
    },
  };
  const registration = { pushManager };
  const serviceWorker = {
    register: async (script, options) => {
      calls.register.push({ script, options });
      return registration;
    },
    getRegistration: async () => registration,
  };
  const previous = Object.getOwnPropertyDescriptor(globalThis, "navigator");
  Object.defineProperty(globalThis, "navigator", { value: { serviceWorker }, configurable: true, writable: true });
  t.after(() => {
    if (previous) Object.defineProperty(globalThis, "navigator", previous);
    else delete globalThis.navigator;
  });
  return calls;
}

function memoryStorage() {
  const map = new Map();
  return {
    map,
    getItem: (k) => (map.has(k) ? map.get(k) : null),
    setItem: (k, v) => void map.set(k, String(v)),
  };
}

/**
 * A client on the local stack, with a `ws` WebSocket that records what goes over the wire, and
 * logs of its events. Closed when the test ends.
 */
function makeClient(t, options) {
  // `raw`: every server frame as the wire carried it, a batch message's frames one by one;
  // `messages`: each WebSocket message's size and how many frames it carried.
  const log = { notifications: [], states: [], errors: [], raw: [], messages: [], sent: [], sockets: [] };
  class TapWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const socket = { url, protocols, negotiated: null };
      log.sockets.push(socket);
      this.addEventListener("open", () => {
        socket.negotiated = this.protocol;
      });
      this.addEventListener("message", (e) => {
        const text = String(e.data);
        let frame;
        try {
          frame = JSON.parse(text);
        } catch {
          log.messages.push({ bytes: Buffer.byteLength(text), frames: 1 });
          log.raw.push(text);
          return;
        }
        const frames = frame && frame.type === "batch" && Array.isArray(frame.frames) ? frame.frames : [frame];
        log.messages.push({ bytes: Buffer.byteLength(text), frames: frames.length });
        log.raw.push(...frames);
      });
    }
    send(data, ...rest) {
      log.sent.push(JSON.parse(String(data)));
      return super.send(data, ...rest);
    }
  }
  const client = new HeraldClient({
    url: stack.websocketUrl,
    WebSocketImpl: TapWebSocket,
    storage: memoryStorage(),
    backoff: { initialMs: 400, maxMs: 3000 },
    ...options,
  });
  client.on("notification", (n, meta) => log.notifications.push({ n, meta }));
  client.on("state", (s) => log.states.push(s));
  client.on("error", (e) => log.errors.push(e));
  t.after(() => client.close());
  const received = (id) => log.notifications.filter((x) => x.n.id === id);
  const wire = (id) => log.raw.filter((f) => f && f.type === "notification" && f.id === id);
  const ready = () => until(() => client.state === "ready", "the client to be ready");
  return { client, log, received, wire, ready };
}

// ------------------------------------------------------------------------------- the stack

// ---------------------------------------------------------------------- tests without a stack

describe("without a server", () => {
  test("backoff grows exponentially, is jittered in the upper half and capped at maxMs", () => {
    const b = { initialMs: 1000, maxMs: 30000, factor: 2 };
    assert.equal(backoffDelay(1, b, () => 0), 500);
    assert.equal(backoffDelay(1, b, () => 1), 1000);
    assert.equal(backoffDelay(3, b, () => 1), 4000);
    assert.equal(backoffDelay(3, b, () => 0), 2000);
    assert.equal(backoffDelay(20, b, () => 1), 30000);
    assert.equal(backoffDelay(20, b, () => 0), 15000);
    for (let attempt = 1; attempt < 12; attempt++) {
      const d = backoffDelay(attempt);
      assert.ok(d > 0 && d <= 30000, `attempt ${attempt}: ${d}`);
    }
  });

  test("resume gives up on a server that answers more forever without notifications", async (t) => {
    // A scripted server (the real one does this after a run of over 200 expired log entries).
    const sent = [];
    class StuckServer {
      constructor() {
        queueMicrotask(() => this.onopen?.({}));
      }
      send(text) {
        const f = JSON.parse(text);
        sent.push(f);
        const reply =
          f.action === "resume"
            ? { type: "resumed", cursor: "01M7HBNC000000000000000000", count: 0, more: true, ref: f.ref }
            : { type: "pong", ref: f.ref };
        setTimeout(() => this.onmessage?.({ data: JSON.stringify(reply) }), 1);
      }
      close() {
        setTimeout(() => this.onclose?.({ code: 1000, reason: "" }), 1);
      }
    }
    const client = new HeraldClient({ url: "ws://stuck.invalid/prod", token: "t", WebSocketImpl: StuckServer, storage: null });
    t.after(() => client.close());
    const errors = [];
    client.on("error", (e) => errors.push(e));
    await until(() => client.state === "ready", "ready despite the stuck resume", 10_000);
    assert.deepEqual(errors.map((e) => e.code), ["resume_stalled"]);
    const resumes = sent.filter((f) => f.action === "resume").length;
    assert.ok(resumes >= 3 && resumes <= 20, `${resumes} resume pages`);
    assert.ok((await client.ping()) >= 0, "the connection is usable");
  });

  test("a re-join that fails for now (not refused) is not followed by a resume: the sync fails and reconnects", async (t) => {
    // Issue "make chaos lost a notification on a herald.js device": a resume without one of the
    // groups would hand back a resume point past that group's notifications. A scripted server
    // answers the first connection's join with `internal`, later ones with `joined`.
    const sent = [];
    let connections = 0;
    class FlakyJoin {
      constructor() {
        this.n = ++connections;
        queueMicrotask(() => this.onopen?.({}));
      }
      send(text) {
        const f = JSON.parse(text);
        sent.push({ conn: this.n, f });
        const reply =
          f.action === "join"
            ? this.n === 1
              ? { type: "error", code: "internal", message: "try again", ref: f.ref }
              : { type: "joined", group: f.group, ref: f.ref }
            : f.action === "resume"
              ? { type: "resumed", cursor: "01M7HBNC000000000000000000", count: 0, more: false, ref: f.ref }
              : { type: "pong", ref: f.ref };
        setTimeout(() => this.onmessage?.({ data: JSON.stringify(reply) }), 1);
      }
      close() {
        setTimeout(() => this.onclose?.({ code: 1000, reason: "" }), 1);
      }
    }
    const client = new HeraldClient({
      url: "ws://flaky.invalid/prod",
      token: "t",
      WebSocketImpl: FlakyJoin,
      storage: null,
      groups: ["team:3"],
      backoff: { initialMs: 10, maxMs: 20 },
    });
    t.after(() => client.close());
    await until(() => client.state === "ready", "ready on the second connection", 10_000);
    assert.equal(sent.filter((s) => s.conn === 1 && s.f.action === "resume").length, 0, "no resume without the group");
    assert.ok(sent.some((s) => s.conn === 2 && s.f.action === "resume"), "resumed once the join was recorded");
    assert.deepEqual(client.groups, ["team:3"], "the group is kept");
  });

  test("a sync request over the user's work budget waits retryAfterMs and is sent again, on the same connection", async (t) => {
    // Issue "a hostile user cannot hurt anyone else": a resume page's posts count against the
    // user's work budget. Refused means nothing was done; failing the sync and reconnecting would
    // only spend more. A scripted server refuses the first two resumes, then answers.
    const sent = [];
    let connections = 0;
    class Budgeted {
      constructor() {
        this.n = ++connections;
        queueMicrotask(() => this.onopen?.({}));
      }
      send(text) {
        const f = JSON.parse(text);
        sent.push({ conn: this.n, f, at: Date.now() });
        const resumes = sent.filter((s) => s.f.action === "resume").length;
        const reply =
          f.action === "join"
            ? { type: "joined", group: f.group, ref: f.ref }
            : f.action === "resume"
              ? resumes <= 2
                ? { type: "error", code: "rate_limited", message: "over budget", retryAfterMs: 120, ref: f.ref }
                : { type: "resumed", cursor: "01M7HBNC000000000000000000", count: 0, more: false, ref: f.ref }
              : { type: "pong", ref: f.ref };
        setTimeout(() => this.onmessage?.({ data: JSON.stringify(reply) }), 1);
      }
      close() {
        setTimeout(() => this.onclose?.({ code: 1000, reason: "" }), 1);
      }
    }
    const client = new HeraldClient({
      url: "ws://budget.invalid/prod",
      token: "t",
      WebSocketImpl: Budgeted,
      storage: null,
      groups: ["team:3"],
      backoff: { initialMs: 10, maxMs: 20 },
    });
    const errors = [];
    client.on("error", (e) => errors.push(e.code));
    t.after(() => client.close());
    await until(() => client.state === "ready", "ready after the budget allowed the resume", 10_000);
    assert.equal(connections, 1, "no reconnect");
    const resumes = sent.filter((s) => s.f.action === "resume");
    assert.equal(resumes.length, 3);
    assert.ok(resumes[1].at - resumes[0].at >= 110 && resumes[2].at - resumes[1].at >= 110, "waited retryAfterMs each time");
    assert.deepEqual(errors, [], "not a failure");
  });

  test("publish on a server without it rejects with unsupported; typing sends at most one frame per 300 ms", async (t) => {
    // A scripted server that predates client publish: unknown_action, as Herald answers any
    // action it does not know.
    const sent = [];
    class OldServer {
      constructor() {
        queueMicrotask(() => this.onopen?.({}));
      }
      send(text) {
        const f = JSON.parse(text);
        sent.push({ at: Date.now(), f });
        const reply =
          f.action === "resume"
            ? { type: "resumed", cursor: "01M7HBNC000000000000000000", count: 0, more: false, ref: f.ref }
            : f.action === "publish"
              ? { type: "error", code: "unknown_action", message: 'unknown action "publish"', ref: f.ref }
              : { type: "pong", ref: f.ref };
        setTimeout(() => this.onmessage?.({ data: JSON.stringify(reply) }), 1);
      }
      close() {
        setTimeout(() => this.onclose?.({ code: 1000, reason: "" }), 1);
      }
    }
    const client = new HeraldClient({ url: "ws://old.invalid/prod", token: "t", WebSocketImpl: OldServer, storage: null });
    t.after(() => client.close());
    const errors = [];
    client.on("error", (e) => errors.push(e));
    await until(() => client.state === "ready", "ready", 10_000);
    await assert.rejects(client.publish("room:1", "chat.message", { body: "hi" }), (e) => e instanceof HeraldError && e.code === "unsupported");

    // Keystrokes: the first sends at once, one within 300 ms does not (per group), one after
    // 300 ms does. The calls in one synchronous block are microseconds apart.
    assert.equal(client.typing("room:1"), true, "the first keystroke sends at once");
    assert.equal(client.typing("room:1"), false, "a keystroke within 300 ms does not");
    assert.equal(client.typing("room:2"), true, "another group has its own debounce");
    await pause(320);
    assert.equal(client.typing("room:1"), true, "300 ms later the next keystroke sends");
    const typing = sent.filter((s) => s.f.action === "publish" && s.f.event === "typing");
    assert.deepEqual(typing.map((s) => s.f.group), ["room:1", "room:2", "room:1"]);
    assert.ok(typing.every((s) => s.f.ephemeral === true));
    await until(() => errors.length === 3, "the typing publishes' errors reported");
    assert.ok(errors.every((e) => e.code === "unsupported"));
  });

  test("enablePush needs httpUrl and a browser with service workers", async (t) => {
    const client = new HeraldClient({ url: "ws://127.0.0.1:9/prod", token: "t", autoConnect: false, storage: null, WebSocketImpl: WebSocket });
    await assert.rejects(client.enablePush(), TypeError);
    const withHttp = new HeraldClient({ url: "ws://127.0.0.1:9/prod", token: "t", autoConnect: false, storage: null, httpUrl: "http://127.0.0.1:9", WebSocketImpl: WebSocket });
    const previous = Object.getOwnPropertyDescriptor(globalThis, "navigator");
    Object.defineProperty(globalThis, "navigator", { value: {}, configurable: true, writable: true });
    t.after(() => {
      if (previous) Object.defineProperty(globalThis, "navigator", previous);
      else delete globalThis.navigator;
    });
    await assert.rejects(withHttp.enablePush(), { code: "push_unsupported" });
    assert.deepEqual([...base64UrlBytes("AQID_-8")], [1, 2, 3, 255, 239]);
  });

  test("chat methods check their arguments, and the HTTP ones need httpUrl", async () => {
    const client = new HeraldClient({ url: "ws://127.0.0.1:9/prod", token: "t", autoConnect: false, storage: null, WebSocketImpl: WebSocket });
    await assert.rejects(client.history("room:1"), { code: "unsupported" });
    await assert.rejects(client.receipts("room:1"), { code: "unsupported" });
    await assert.rejects(client.download("a/b/c"), { code: "unsupported" });
    const withHttp = new HeraldClient({ url: "ws://127.0.0.1:9/prod", token: "t", autoConnect: false, storage: null, httpUrl: "http://127.0.0.1:9", WebSocketImpl: WebSocket });
    await assert.rejects(withHttp.history("room:1", { limit: MAX_HISTORY + 1 }), { code: "bad_request" });
    await assert.rejects(withHttp.history("room:1", { limit: 0 }), { code: "bad_request" });
    await assert.rejects(withHttp.history(""), { code: "bad_request" });
    await assert.rejects(withHttp.markRoomRead("room:1", ""), { code: "bad_request" });
    await assert.rejects(withHttp.upload("room:1", { name: "x" }), { code: "bad_request" });
    await assert.rejects(withHttp.download(""), { code: "bad_request" });
    assert.equal(MAX_HISTORY, 100);
  });

  test("options are checked", () => {
    assert.throws(() => new HeraldClient({ token: "x", WebSocketImpl: WebSocket }), TypeError);
    assert.throws(() => new HeraldClient({ url: "ws://127.0.0.1:1/x", WebSocketImpl: WebSocket }), TypeError);
    assert.throws(
      () => new HeraldClient({ url: "ws://127.0.0.1:1/x", token: "t", WebSocketImpl: WebSocket, tokenTransport: "header" }),
      TypeError,
    );
  });
});

// ----------------------------------------------------------------------- tests on the stack

describe(`against the local stack (target/${profile})`, () => {
  before(async () => {
    local = startStack({ profile, verbose });
    stack = await local.ready;
  }, { timeout: 120_000 });

  after(async () => {
    await local?.stop();
  });

  test("connects with the token as subprotocol and receives a notification", async (t) => {
    const tenant = unique("t");
    const user = "u1";
    let tokenCalls = 0;
    const { client, log, received, ready } = makeClient(t, {
      getToken: async () => {
        tokenCalls += 1;
        return mintToken({ sub: user, tenant });
      },
    });
    await ready();
    assert.equal(tokenCalls, 1);
    assert.equal(log.sockets.length, 1);
    assert.equal(log.sockets[0].protocols[0], SUBPROTOCOL);
    assert.equal(log.sockets[0].negotiated, SUBPROTOCOL, "the server answers herald.v1");
    assert.ok(!log.sockets[0].url.includes("token="), "no token in the URL");
    assert.deepEqual(
      log.states.map((s) => s.state),
      ["connecting", "syncing", "ready"],
    );
    assert.equal((await connectionsOf(tenant, user)).length, 1);

    const id = await publish(tenant, {
      to: { user },
      event: "test.hello",
      title: "Hello",
      body: "from the test",
      link: "/x",
      data: { n: 1 },
    });
    await until(() => received(id).length === 1, "the notification");
    const { n, meta } = received(id)[0];
    assert.equal(n.type, "notification");
    assert.equal(n.topic, `user:${user}`);
    assert.equal(n.event, "test.hello");
    assert.equal(n.title, "Hello");
    assert.equal(n.body, "from the test");
    assert.deepEqual(n.data, { n: 1 });
    assert.equal(typeof n.cursor, "string");
    assert.deepEqual(meta, { replayed: false, history: false });
    // The resume point is the server's answer to a resume, never a live cursor (fan-outs arrive
    // out of cursor order; see the out-of-order test below).
    assert.ok(client.cursor < n.cursor, "a live frame does not move the resume point");
    assert.deepEqual(log.errors, []);
  });

  test("the ?token= transport works too", async (t) => {
    const tenant = unique("t");
    const token = await mintToken({ sub: "q1", tenant });
    const { client, log, ready } = makeClient(t, { token, tokenTransport: "query" });
    await ready();
    assert.ok(log.sockets[0].url.includes(`token=${token}`));
    assert.deepEqual(log.sockets[0].protocols, [SUBPROTOCOL]);
    const rtt = await client.ping();
    assert.ok(Number.isFinite(rtt) && rtt >= 0);
  });

  test("joins a group and receives its notifications; leave forgets it", async (t) => {
    const tenant = unique("t");
    const user = "student";
    const { client, received, ready } = makeClient(t, {
      getToken: () => mintToken({ sub: user, tenant, groups: ["course:42"] }),
    });
    await ready();
    const joined = await client.join("course:42");
    assert.equal(joined.type, "joined");
    assert.equal(joined.group, "course:42");
    assert.deepEqual(client.groups, ["course:42"]);

    const id = await publish(tenant, { to: { group: "course:42" }, event: "class.starting", title: "Class starts" });
    await until(() => received(id).length === 1, "the group notification");
    assert.equal(received(id)[0].n.topic, "course:42");

    const left = await client.leave("course:42");
    assert.equal(left.type, "left");
    assert.equal(left.group, "course:42");
    assert.deepEqual(client.groups, []);
  });

  test("members chat (logged, no copy for the sender, not even after a resume), type (ephemeral) and see presence", async (t) => {
    const tenant = unique("t");
    const room = `room:${unique("r")}`;
    const alice = makeClient(t, { getToken: () => mintToken({ sub: "alice", tenant, groups: [room] }), groups: [room] });
    await alice.ready();
    const presence = [];
    alice.client.on("presence", (p) => presence.push(p));
    const bob = makeClient(t, { getToken: () => mintToken({ sub: "bob", tenant, groups: [room] }), groups: [room] });
    await bob.ready();
    await until(() => presence.some((p) => p.user === "bob" && p.state === "online"), "bob online");
    assert.deepEqual(presence[0], { type: "presence", group: room, user: "bob", state: "online" });

    const sent = await alice.client.publish(room, "chat.message", { body: "hi bob" });
    assert.equal(sent.type, "published");
    assert.equal(typeof sent.id, "string");
    await until(() => bob.received(sent.id).length === 1, "bob gets the message");
    const got = bob.received(sent.id)[0].n;
    assert.deepEqual(got.from, { user: "alice" });
    assert.equal(got.body, "hi bob");

    assert.equal(bob.client.typing(room), true);
    assert.equal(bob.client.typing(room), false, "debounced");
    await until(() => alice.log.notifications.some((x) => x.n.event === "typing"), "alice sees bob typing");
    const typing = alice.log.notifications.find((x) => x.n.event === "typing").n;
    assert.equal(typing.ephemeral, true);
    assert.deepEqual(typing.from, { user: "bob" });

    // The message is in the room's log, so alice's resume reads it: she already has it.
    await alice.client.resume();
    assert.equal(alice.received(sent.id).length, 0, "the sender was shown her own message");
    await assert.rejects(alice.client.publish("course:1", "chat.message"), (e) => e instanceof HeraldError && e.code === "forbidden");
  });

  test("chat: history pages back, a read receipt reaches the other member, a file is shared and opened", async (t) => {
    const tenant = unique("t");
    const room = `room:${unique("r")}`;
    const options = (sub, groups) => ({ getToken: () => mintToken({ sub, tenant, groups }), groups, httpUrl: stack.httpUrl });
    const alice = makeClient(t, options("alice", [room]));
    const bob = makeClient(t, options("bob", [room]));
    await alice.ready();
    await bob.ready();
    const receipts = [];
    alice.client.on("receipt", (r) => receipts.push(r));
    const sent = [];
    for (const body of ["one", "two", "three"]) sent.push((await alice.client.publish(room, "chat.message", { body })).id);

    // Newest first, two pages; every item with its cursor once the entries are settled.
    const first = await until(async () => {
      const page = await bob.client.history(room, { limit: 2 });
      return page.items.length === 2 && page.items.every((i) => i.cursor) ? page : null;
    }, "a history page with cursors");
    assert.deepEqual(first.items.map((i) => i.body), ["three", "two"]);
    assert.equal(typeof first.next, "string");
    const second = await bob.client.history(room, { before: first.next, limit: 2 });
    assert.deepEqual(second.items.map((i) => i.body), ["one"]);
    assert.equal(second.next, null);

    // Bob has read up to "two": alice is told, the receipts say who saw "two".
    const read = await bob.client.markRoomRead(room, first.items[1].cursor);
    assert.deepEqual([read.type, read.advanced, read.upTo], ["marked", true, first.items[1].cursor]);
    await until(() => receipts.length === 1, "alice gets bob's receipt");
    assert.deepEqual(receipts[0], { type: "receipt", group: room, user: "bob", upTo: first.items[1].cursor });
    const back = await bob.client.markRoomRead(room, second.items[0].cursor);
    assert.equal(back.advanced, false, "receipts never go backwards");
    assert.equal(back.upTo, first.items[1].cursor);
    const seen = await alice.client.receipts(room, { upTo: first.items[1].cursor });
    assert.deepEqual([seen.mode, seen.seen], ["members", 1]);
    assert.deepEqual(seen.receipts, [{ user: "bob", upTo: first.items[1].cursor }]);

    // A file: uploaded by alice through the presigned PUT, opened by bob through the GET.
    const text = "the minutes of the meeting\n";
    const shared = await alice.client.upload(room, { name: "minutes.txt", type: "text/plain", size: Buffer.byteLength(text), body: text });
    assert.match(shared.key, new RegExp(`^${tenant}/alice/`));
    const file = await bob.client.download(shared.key);
    assert.deepEqual([file.name, file.contentType, file.from.user], ["minutes.txt", "text/plain", "alice"]);
    const res = await fetch(file.download.url);
    assert.equal(await res.text(), text);
    await assert.rejects(alice.client.upload(room, { name: "huge.png", type: "image/png", size: 1e9, body: "" }), { code: "bad_request" });
    await assert.rejects(alice.client.upload(room, { name: "x.html", type: "text/html", size: 4, body: "<p/>" }), { code: "bad_request" });

    // Not a member: no history, no file.
    const carol = makeClient(t, options("carol", []));
    await assert.rejects(carol.client.history(room), { code: "forbidden" });
    await assert.rejects(carol.client.download(shared.key), { code: "forbidden" });
  });

  test("a group the server takes away (unsubscribed) is forgotten and reported", async (t) => {
    const tenant = unique("t");
    const user = unique("student");
    const service = await mintToken({ sub: "sync", tenant, roles: ["service"] });
    const subscription = `${stack.httpUrl}/subscriptions/${user}/course:9`;
    assert.equal((await http("PUT", subscription, { token: service })).status, 204);
    const { client, ready } = makeClient(t, { getToken: () => mintToken({ sub: user, tenant }) });
    await ready();
    await client.join("course:9");
    assert.deepEqual(client.groups, ["course:9"]);
    const left = [];
    client.on("left", (frame) => left.push(frame));
    assert.equal((await http("DELETE", subscription, { token: service })).status, 204);
    await until(() => left.length === 1, "the left frame");
    assert.deepEqual(left[0], { type: "left", group: "course:9", reason: "unsubscribed" });
    assert.deepEqual(client.groups, []);
  });

  test("after a dropped connection it reconnects with a fresh token, re-joins, resumes and delivers exactly once", async (t) => {
    const tenant = unique("t");
    const user = "u-drop";
    const tokens = [];
    let gateOpen = true;
    const getToken = async () => {
      await until(() => gateOpen, "the test to let the reconnect through");
      const token = await mintToken({ sub: user, tenant, groups: ["room:7"], claims: { jti: unique("jti") } });
      tokens.push(token);
      return token;
    };
    const { client, log, received, wire, ready } = makeClient(t, { getToken, groups: ["room:7"] });
    await ready();
    assert.ok(log.sent.some((f) => f.action === "join" && f.group === "room:7"), "joined room:7 on connect");

    // A first notification, live, sets the cursor.
    const first = await publish(tenant, { to: { user }, event: "test.first" });
    await until(() => received(first).length === 1, "the first notification");
    const cursorBefore = client.cursor;
    assert.ok(cursorBefore);

    // Drop the connection (no close frame); hold the reconnect until the publishes are logged.
    const [conn] = await connectionsOf(tenant, user);
    assert.ok(conn, "the connection is listed");
    gateOpen = false;
    const dropped = await http("POST", `${stack.controlUrl}/connections/${encodeURIComponent(conn.connectionId)}/drop`);
    assert.equal(dropped.status, 204);
    const missed = [
      await publish(tenant, { to: { user }, event: "test.missed.user" }),
      await publish(tenant, { to: { group: "room:7" }, event: "test.missed.group" }),
      await publish(tenant, { to: { tenant: true }, event: "test.missed.tenant" }),
    ];
    await until(() => client.state === "connecting" || client.state === "reconnecting", "the client to notice the drop");
    const reader = await mintToken({ sub: user, tenant, groups: ["room:7"] });
    await until(async () => {
      const ids = await loggedIds(reader, cursorBefore);
      return missed.every((id) => ids.has(id));
    }, "the missed notifications to be logged");
    gateOpen = true;

    await until(() => missed.every((id) => received(id).length >= 1), "the missed notifications after reconnect");
    // Replayed frames arrive before the `resumed` reply that ends the sync: ready follows.
    await until(() => client.state === "ready", "the client to be ready after the resume");
    // Published after the reconnect: arrives live, and is a barrier for late duplicates.
    const last = await publish(tenant, { to: { user }, event: "test.after" });
    await until(() => received(last).length === 1, "the notification after the reconnect");

    for (const id of [first, ...missed, last]) {
      assert.equal(received(id).length, 1, `${id} delivered exactly once (wire copies: ${wire(id).length})`);
    }
    t.diagnostic(
      `missed: ${missed.map((id) => `${received(id)[0].meta.replayed ? "replayed" : "live"}×${wire(id).length}`).join(", ")}`,
    );
    assert.ok(
      missed.some((id) => received(id)[0].meta.replayed),
      "the missed notifications came from resume",
    );
    assert.equal(received(missed[1])[0].n.topic, "room:7", "the group was re-joined before the resume");

    // The reconnect used a fresh token, the group was re-joined, and resume started at the cursor.
    assert.equal(log.sockets.length, 2);
    assert.equal(tokens.length, 2);
    assert.notEqual(tokens[0], tokens[1]);
    assert.equal(log.sockets[1].protocols[1], tokens[1]);
    const joins = log.sent.filter((f) => f.action === "join" && f.group === "room:7");
    assert.equal(joins.length, 2, "room:7 joined on each connection");
    const resumes = log.sent.filter((f) => f.action === "resume");
    assert.ok(resumes.length >= 2);
    assert.equal(resumes[1].since, cursorBefore, "resumed from the last cursor seen");
    assert.ok(
      log.sent.indexOf(joins[1]) < log.sent.indexOf(resumes[1]),
      "re-join is sent before resume",
    );
    const states = log.states.map((s) => s.state);
    assert.deepEqual(states.slice(-4), ["reconnecting", "connecting", "syncing", "ready"]);
  });

  test("a connection that cannot take a frame is closed, and the resume after the reconnect brings it once", async (t) => {
    const tenant = unique("t");
    const user = "u-overlap";
    const token = await mintToken({ sub: user, tenant });
    const { client, received, ready } = makeClient(t, { token });
    await ready();
    const [conn] = await connectionsOf(tenant, user);
    t.after(() => http("DELETE", `${stack.controlUrl}/faults`));
    // The post and its one re-post fail: the server closes the connection rather than post the
    // frame late (a later cursor would pass it), and the client's resume brings it.
    const fault = await http("POST", `${stack.controlUrl}/faults/posts`, {
      body: { connectionIds: [conn.connectionId], status: 500, count: 2 },
    });
    assert.ok(fault.status < 300, `fault: ${fault.status}`);
    const id = await publish(tenant, { to: { user }, event: "test.overlap" });
    await until(() => received(id).length === 1, "the notification from the resume after the reconnect");
    assert.equal(received(id)[0].meta.replayed, true);
    await until(() => client.state === "ready", "ready again");
    // A barrier: anything still in flight for this user comes before this one is handled.
    const barrier = await publish(tenant, { to: { user }, event: "test.barrier" });
    await until(() => received(barrier).length === 1, "the barrier notification");
    assert.equal(received(id).length, 1);
  });

  test("a drop after a newer notification arrived first loses nothing (fan-outs out of cursor order)", async (t) => {
    const tenant = unique("t");
    const user = "u-order";
    const token = await mintToken({ sub: user, tenant });
    const { client, received, wire, ready } = makeClient(t, { token });
    await ready();
    const [conn] = await connectionsOf(tenant, user);
    t.after(() => http("DELETE", `${stack.controlUrl}/faults`));
    // N1's log write is slow (2.5 s): claimed first, so older, but logged and pushed after N2.
    const fault = await http("POST", `${stack.controlUrl}/faults/aws`, {
      body: { target: "BatchWriteItem", match: "test.order.first", delayMs: 2500 },
    });
    assert.ok(fault.status < 300, `fault: ${fault.status}`);
    const first = await publish(tenant, { to: { user }, event: "test.order.first" });
    await new Promise((r) => setTimeout(r, 200));
    // N2, newer, arrives live while N1 is still on its way.
    const second = await publish(tenant, { to: { user }, event: "test.order.second" });
    await until(() => received(second).length === 1, "N2 live");
    assert.equal(wire(first).length, 0, "N1 has not arrived");
    // The connection drops; the client reconnects and resumes from its resume point.
    const dropped = await http("POST", `${stack.controlUrl}/connections/${encodeURIComponent(conn.connectionId)}/drop`);
    assert.equal(dropped.status, 204);
    await until(() => received(first).length === 1, "N1 after the reconnect");
    await until(() => client.state === "ready", "ready again");
    assert.equal(received(second).length, 1, "N2 is not shown twice");
  });

  test("where the WebSocket upgrade is refused it polls missed, receives everything once, and goes back to the socket", async (t) => {
    const tenant = unique("t");
    const user = "u-poll";
    const token = await mintToken({ sub: user, tenant });
    // A proxy that blocks the upgrade: while `blocked`, every handshake goes to a loopback port
    // nobody listens on, so it fails the way a refused upgrade does (the socket never opens).
    let blocked = true;
    class BlockingWebSocket extends WebSocket {
      constructor(url, protocols) {
        super(blocked ? "ws://127.0.0.1:9/" : url, protocols);
      }
    }
    const { client, log, received } = makeClient(t, {
      token,
      WebSocketImpl: BlockingWebSocket,
      httpUrl: stack.httpUrl,
      pollAfterFailures: 2,
      pollIntervalMs: 300,
      backoff: { initialMs: 200, maxMs: 400 },
    });
    await until(() => client.state === "polling", "the client to fall back to polling");
    // The first poll set the resume point (history from before it is not this test's).
    await until(() => client.cursor !== null, "a resume point from the first poll");
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push(await publish(tenant, { to: { user }, event: "test.polled" }));
    for (const id of ids) await until(() => received(id).length === 1, `${id} by polling`);
    assert.ok(ids.every((id) => received(id)[0].meta.polled === true), "delivered by the poll");
    assert.equal(client.state, "polling", "the socket stayed blocked");
    // The proxy lets the upgrade through again: the background attempt opens the socket.
    blocked = false;
    await until(() => client.state === "ready", "the socket to take over");
    const live = await publish(tenant, { to: { user }, event: "test.live-again" });
    await until(() => received(live).length >= 1, "a live notification over the socket");
    assert.notEqual(received(live)[0].meta.polled, true);
    for (const id of ids) assert.equal(received(id).length, 1, `${id} shown once across polling and resume`);
    const states = log.states.map((s) => s.state);
    assert.ok(states.indexOf("polling") < states.lastIndexOf("ready"), `states: ${states.join(" → ")}`);
  });

  test("a live client forced onto polling and back misses nothing and shows everything once", async (t) => {
    // The fallback from a working socket (not from the start), with notifications published at
    // every step: live, in the gap before the first poll, while polling, while the socket comes
    // back (each may arrive by poll, by the resume or live), and live again.
    const tenant = unique("t");
    const user = "u-fallback";
    let blocked = false;
    class BlockingWebSocket extends WebSocket {
      constructor(url, protocols) {
        super(blocked ? "ws://127.0.0.1:9/" : url, protocols);
      }
    }
    const { client, log, received, ready } = makeClient(t, {
      getToken: () => mintToken({ sub: user, tenant }),
      WebSocketImpl: BlockingWebSocket,
      httpUrl: stack.httpUrl,
      pollAfterFailures: 2,
      pollIntervalMs: 300,
      backoff: { initialMs: 200, maxMs: 400 },
    });
    await ready();
    const ids = [await publish(tenant, { to: { user }, event: "test.live" })];
    await until(() => received(ids[0]).length === 1, "the live notification");

    // The proxy starts refusing the upgrade and the connection drops.
    blocked = true;
    const [conn] = await connectionsOf(tenant, user);
    assert.ok(conn, "the connection is listed");
    const dropped = await http("POST", `${stack.controlUrl}/connections/${encodeURIComponent(conn.connectionId)}/drop`);
    assert.equal(dropped.status, 204);
    ids.push(await publish(tenant, { to: { user }, event: "test.gap" }));
    await until(() => client.state === "polling", "the client to fall back to polling");
    for (let i = 0; i < 2; i++) ids.push(await publish(tenant, { to: { user }, event: "test.polled" }));
    for (const id of ids) await until(() => received(id).length === 1, `${id} before the return`);
    assert.equal(client.state, "polling", "the socket stayed blocked");

    // The upgrade works again: one notification while the socket takes over, one live after.
    blocked = false;
    ids.push(await publish(tenant, { to: { user }, event: "test.switching" }));
    await until(() => client.state === "ready", "the socket to take over");
    const live = await publish(tenant, { to: { user }, event: "test.live-again" });
    ids.push(live);
    await until(() => received(live).length === 1, "a live notification over the socket");
    assert.notEqual(received(live)[0].meta.polled, true, "the last one came over the socket");
    for (const id of ids) {
      await until(() => received(id).length >= 1, `${id} at all`);
      assert.equal(received(id).length, 1, `${id} shown once across the fallback and the return`);
    }
    const states = log.states.map((s) => s.state);
    const firstReady = states.indexOf("ready");
    assert.ok(firstReady < states.indexOf("polling") && states.indexOf("polling") < states.lastIndexOf("ready"),
      `ready → polling → ready: ${states.join(" → ")}`);
  });

  test("an error frame rejects with the server's code; too big frames are refused locally", async (t) => {
    const tenant = unique("t");
    const { client, log, ready } = makeClient(t, { token: await mintToken({ sub: "u-err", tenant }) });
    await ready();

    await assert.rejects(client.join("user:someone-else"), (e) => {
      assert.ok(e instanceof HeraldError);
      assert.equal(e.code, "forbidden");
      assert.equal(e.frame.type, "error");
      return true;
    });
    await assert.rejects(client.join("course:not-mine"), { code: "forbidden" });
    await assert.rejects(client.join("Not A Group"), { code: "bad_request" });
    assert.deepEqual(client.groups, [], "refused groups are not re-joined later");

    const sentBefore = log.sent.length;
    await assert.rejects(client.join(`room:${"x".repeat(MAX_FRAME_BYTES)}`), (e) => {
      assert.equal(e.code, "too_large");
      assert.match(e.message, /32768 bytes/);
      return true;
    });
    await assert.rejects(client.ack(["a".repeat(MAX_FRAME_BYTES)]), { code: "too_large" });
    assert.equal(log.sent.length, sentBefore, "nothing was sent");
    assert.equal(client.state, "ready", "the connection is unaffected");
  });

  test("ping resolves, ack counts, and requests made before the connection are sent once ready", async (t) => {
    const tenant = unique("t");
    const user = "u-ping";
    const { client, received } = makeClient(t, { getToken: () => mintToken({ sub: user, tenant }) });
    const early = client.ping(); // queued while connecting
    const rtt = await early;
    assert.ok(Number.isFinite(rtt) && rtt >= 0);
    assert.equal(client.state, "ready");
    assert.ok((await client.ping()) >= 0);

    const id = await publish(tenant, { to: { user }, event: "test.ack" });
    await until(() => received(id).length === 1, "the notification");
    assert.deepEqual(await client.ack([id]), { type: "acked", count: 1, unread: 0, seq: 1 });
    assert.equal(client.unread, 0);
    assert.deepEqual(await client.ack([]), { type: "acked", count: 0 });
  });

  test("two devices stay in step: reads, updates and recalls reach both; preferences are validated", async (t) => {
    const tenant = unique("t");
    const user = "u-inbox";
    const getToken = () => mintToken({ sub: user, tenant });
    const phone = makeClient(t, { getToken, httpUrl: stack.httpUrl, shareConnection: false });
    const laptop = makeClient(t, { getToken, httpUrl: stack.httpUrl, shareConnection: false });
    await phone.ready();
    await laptop.ready();
    const reads = [];
    const recalls = [];
    const counts = [];
    laptop.client.on("read", (r) => reads.push(r));
    laptop.client.on("recalled", (r) => recalls.push(r));
    laptop.client.on("unread", (u) => counts.push(u.count));
    const ids = [];
    for (let i = 0; i < 3; i += 1) ids.push(await publish(tenant, { to: { user }, event: "deadline.set", title: `v1 ${i}` }));
    await until(() => ids.every((id) => laptop.received(id).length === 1 && phone.received(id).length === 1), "both devices");

    const acked = await phone.client.ack([ids[0]]);
    assert.equal(acked.unread, 2);
    await until(() => reads.length === 1, "the read on the laptop");
    assert.deepEqual(reads[0].ids, [ids[0]]);
    assert.equal(laptop.client.unread, 2);
    assert.deepEqual(counts, [2]);
    // Over HTTP: the phone hears of it too, and both keep the newest count.
    const answer = await laptop.client.markRead({ ids: [ids[1]] });
    assert.equal(answer.unread, 1);
    await until(() => phone.client.unread === 1, "the phone's count");

    // The producer moves the deadline: the same id again, version 2, on both devices.
    const token = await mintToken({ sub: "publisher", tenant, roles: ["service"] });
    const res = await http("POST", `${stack.httpUrl}/notifications`, {
      token,
      body: { tenant, update: ids[2], version: 2, title: "v2" },
    });
    assert.equal(res.status, 202, JSON.stringify(res.json));
    await until(() => laptop.received(ids[2]).length === 2 && phone.received(ids[2]).length === 2, "the update");
    assert.equal(laptop.received(ids[2])[1].n.version, 2);
    assert.equal(laptop.received(ids[2])[1].n.title, "v2");

    const recall = await http("POST", `${stack.httpUrl}/notifications`, { token, body: { tenant, recall: ids[2] } });
    assert.equal(recall.status, 202);
    await until(() => recalls.length === 1, "the recall");
    assert.equal(recalls[0].id, ids[2]);

    await assert.rejects(laptop.client.setPreferences({ off: { sms: ["forum.*"] } }), { code: "bad_request" });
    await assert.rejects(
      laptop.client.setPreferences({ quietHours: { start: "22:00", end: "07:00", timeZone: "Nowhere/City" } }),
      /quietHours.timeZone/,
    );
    const stored = await laptop.client.setPreferences({ off: { push: ["forum.*"] } });
    assert.deepEqual(stored.off, { push: ["forum.*"] });
    assert.equal((await phone.client.getPreferences()).source, "user");
  });

  test("a refused token is replaced by the next getToken() on the reconnect", async (t) => {
    const tenant = unique("t");
    const user = "u-expired";
    let calls = 0;
    const { log, ready } = makeClient(t, {
      getToken: async () => {
        calls += 1;
        const claims = calls === 1 ? { exp: Math.floor(Date.now() / 1000) - 3600 } : undefined;
        return mintToken({ sub: user, tenant, claims });
      },
    });
    await ready();
    assert.equal(calls, 2);
    assert.equal(log.errors[0]?.code, "connect_failed");
    assert.match(log.errors[0].message, /40[13]/);
    assert.ok(log.states.some((s) => s.state === "reconnecting" && s.delayMs > 0));
  });

  test("a new client with the same storage resumes after the saved cursor (page reload)", async (t) => {
    const tenant = unique("t");
    const user = "u-reload";
    const storage = memoryStorage();
    const token = await mintToken({ sub: user, tenant });
    const one = makeClient(t, { token, storage });
    await one.ready();
    const seen = await publish(tenant, { to: { user }, event: "test.seen" });
    await until(() => one.received(seen).length === 1, "the first notification");
    one.client.close();
    assert.equal(one.client.state, "closed");
    await until(async () => (await connectionsOf(tenant, user)).length === 0, "the connection to be gone");

    const unseen = await publish(tenant, { to: { user }, event: "test.unseen" });
    await until(async () => (await loggedIds(token)).has(unseen), "the second notification to be logged");
    const [key] = storage.map.keys();
    assert.match(key, new RegExp(`${tenant}:${user}$`), "state is kept per tenant and user");

    const two = makeClient(t, { token, storage });
    await until(() => two.received(unseen).length === 1, "the missed notification after the reload");
    await two.ready();
    assert.deepEqual(two.received(unseen)[0].meta, { replayed: true, history: false });
    assert.equal(two.received(seen).length, 0, "what was already seen is not replayed");
  });

  test("a resume packs replayed frames into batch messages of at most 32 KB, in cursor order", async (t) => {
    const tenant = unique("t");
    const user = "u-batch";
    const token = await mintToken({ sub: user, tenant });
    const ids = [];
    for (let i = 0; i < 40; i++) {
      ids.push(await publish(tenant, { to: { user }, event: "test.batch", body: "x".repeat(1500), data: { i } }));
    }
    await until(async () => {
      const logged = await loggedIds(token);
      return ids.every((id) => logged.has(id));
    }, "the 40 notifications to be logged");

    const { log, received } = makeClient(t, { token });
    await until(() => ids.every((id) => received(id).length === 1), "all 40 replayed once");
    assert.ok(log.sockets[0].url.includes("batch=1"), "herald.js opts in");
    const replayed = log.messages.filter((m) => m.frames > 1);
    const frames = replayed.reduce((sum, m) => sum + m.frames, 0);
    // About 70 KB of frames: three messages of at most 32 KB, where one frame each would be 40.
    assert.ok(replayed.length >= 2 && replayed.length <= 3, `batch messages: ${JSON.stringify(log.messages)}`);
    assert.ok(frames >= 38, `frames in batches: ${frames}`);
    assert.ok(log.messages.every((m) => m.bytes <= 32 * 1024), "each message within one 32 KB unit");
    const cursors = log.notifications.filter((x) => ids.includes(x.n.id) && x.n.cursor).map((x) => x.n.cursor);
    assert.deepEqual([...cursors].sort(), cursors, "replayed in cursor order");
    assert.deepEqual(log.errors, []);
  });

  test("with no saved cursor, history is replayed flagged, or skipped with replayHistory: false", async (t) => {
    const tenant = unique("t");
    const user = "u-history";
    const token = await mintToken({ sub: user, tenant });
    const old = await publish(tenant, { to: { user }, event: "test.old" });
    await until(async () => (await loggedIds(token)).has(old), "the old notification to be logged");

    const fresh = makeClient(t, { token });
    await until(() => fresh.received(old).length === 1, "the history replay");
    assert.deepEqual(fresh.received(old)[0].meta, { replayed: true, history: true });

    const quiet = makeClient(t, { token, replayHistory: false });
    await quiet.ready();
    assert.equal(quiet.received(old).length, 0, "history skipped");
    assert.ok(quiet.client.cursor, "but the cursor is set");
    const next = await publish(tenant, { to: { user }, event: "test.next" });
    await until(() => quiet.received(next).length === 1, "a live notification");
  });

  test("keep-alive pings only while the page is visible", async (t) => {
    const tenant = unique("t");
    // A stand-in for the browser's document: only visibilityState and its event matter.
    const doc = Object.assign(new EventTarget(), { visibilityState: "visible" });
    globalThis.document = doc;
    t.after(() => delete globalThis.document);
    const { client, log, ready } = makeClient(t, {
      token: await mintToken({ sub: "u-keepalive", tenant }),
      pingIntervalMs: 150,
    });
    const pings = () => log.sent.filter((f) => f.action === "ping").length;
    await ready();
    await until(() => pings() >= 2, "keep-alive pings while visible");

    doc.visibilityState = "hidden";
    doc.dispatchEvent(new Event("visibilitychange"));
    const hiddenAt = pings();
    await pause(600); // an observation window of four intervals: nothing may be sent
    assert.equal(pings(), hiddenAt, "no keep-alive while hidden");

    doc.visibilityState = "visible";
    doc.dispatchEvent(new Event("visibilitychange"));
    await until(() => pings() > hiddenAt, "a keep-alive once visible again");
    assert.equal(client.state, "ready");
  });

  test("an unanswered keep-alive ping makes the client reconnect", async (t) => {
    const tenant = unique("t");
    const user = "u-deadping";
    t.after(() => http("DELETE", `${stack.controlUrl}/faults`));
    const { log, ready } = makeClient(t, {
      token: await mintToken({ sub: user, tenant }),
      pingIntervalMs: 200,
      requestTimeoutMs: 1500,
    });
    await ready();
    const [conn] = await connectionsOf(tenant, user);
    // The ws-message process dies on the next ping: API Gateway answers "Internal server error"
    // without the ref, so the ping times out, as on a dead connection.
    const fault = await http("POST", `${stack.controlUrl}/faults/kill`, {
      body: { function: "ws-message", match: "ping", count: 1 },
    });
    assert.ok(fault.status < 300, `fault: ${fault.status}`);
    await until(() => log.errors.some((e) => e.code === "ping_timeout"), "the keep-alive to time out");
    assert.ok(log.errors.some((e) => e.code === "gateway_error"), "API Gateway's error frame is reported");
    await until(() => log.sockets.length === 2 && log.states.at(-1).state === "ready", "a new connection");
    await until(async () => {
      const ids = (await connectionsOf(tenant, user)).map((c) => c.connectionId);
      return ids.length === 1 && ids[0] !== conn.connectionId;
    }, "the old connection to be closed");
  });

  test("enablePush subscribes with the server's VAPID key and registers the subscription; an offline user then gets pushes", async (t) => {
    const tenant = unique("t");
    const user = "u-push";
    const token = await mintToken({ sub: user, tenant });
    // No socket: the user is offline, so `push: true` pushes.
    const client = new HeraldClient({ url: stack.websocketUrl, WebSocketImpl: WebSocket, token, httpUrl: stack.httpUrl, autoConnect: false, storage: null });
    t.after(() => client.close());
    const created = await http("POST", `${stack.pushServiceUrl}/subscriptions`);
    assert.equal(created.status, 201);
    const calls = stubPushManager(t, created.json);

    const sent = await client.enablePush({ serviceWorker: "/push-sw.js" });
    assert.deepEqual(calls.register, [{ script: "/push-sw.js", options: undefined }]);
    assert.equal(calls.subscribe.length, 1);
    assert.equal(calls.subscribe[0].userVisibleOnly, true);
    // Fetched from GET /push/vapid-public-key: the stack's key, raw (65-byte uncompressed point).
    assert.deepEqual([...calls.subscribe[0].applicationServerKey], [...base64UrlBytes(stack.vapidPublicKey)]);
    assert.equal(calls.subscribe[0].applicationServerKey.length, 65);
    assert.deepEqual(sent, { endpoint: created.json.endpoint, expirationTime: null, keys: created.json.keys });
    // Enabling again reuses the browser's subscription.
    await client.enablePush({ serviceWorker: "/push-sw.js", vapidPublicKey: stack.vapidPublicKey });
    assert.equal(calls.subscribe.length, 1);

    const id = await publish(tenant, { to: { user }, event: "push.test", title: "Pushed", push: true });
    const messages = await until(async () => {
      const res = await http("GET", `${stack.pushServiceUrl}/subscriptions/${created.json.id}/messages`);
      return res.json.messages.length > 0 && res.json.messages;
    }, "the push");
    assert.equal(messages[0].json.id, id);
    assert.equal(messages[0].json.title, "Pushed");

    assert.equal(await client.disablePush(), true);
    assert.equal(calls.unsubscribed, 1);
    assert.equal(await client.disablePush(), false);
  });

  test("close() stops everything: socket closed, requests rejected, no reconnect", async (t) => {
    const tenant = unique("t");
    const user = "u-close";
    const { client, log, ready } = makeClient(t, { token: await mintToken({ sub: user, tenant }) });
    await ready();
    const pending = client.ping();
    client.close();
    await assert.rejects(pending, (e) => e.code === "closed" || e.code === "disconnected");
    await assert.rejects(client.join("room:1"), { code: "closed" });
    assert.equal(client.state, "closed");
    await until(async () => (await connectionsOf(tenant, user)).length === 0, "the server to see the close");
    assert.equal(log.sockets.length, 1, "no reconnect");
    assert.equal(log.states.at(-1).state, "closed");
  });
});
