// The tab layer's pure logic (client/lib/tabs.js) and its leader/follower protocol, without a
// browser or a server: Node's own BroadcastChannel carries the messages between clients of one
// process, a few lines stand in for Web Locks, and a fake socket answers requests. What a real
// browser does with several tabs against the real stack is client/browser-test/tabs.test.mjs.

import { afterEach, describe, test } from "node:test";
import assert from "node:assert/strict";

import { HeraldClient, HeraldError } from "../herald.js";
import { decodeError, echoKey, encodeError, groupOf, shareName, sharingSupport } from "../lib/tabs.js";

/** A JWT with `claims` as its payload (unsigned: only its payload is read client-side). */
const jwt = (claims) => `e30.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.sig`;

/** Waits until `fn()` is truthy, polling (event-driven code, bounded). */
async function until(fn, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("pure logic", () => {
  test("sharing needs a page, Web Locks and BroadcastChannel", () => {
    const locks = { request() {} };
    assert.equal(sharingSupport({}), null, "Node");
    assert.equal(sharingSupport({ document: {}, BroadcastChannel: class {} }), null, "no Web Locks");
    assert.equal(sharingSupport({ document: {}, navigator: { locks } }), null, "no BroadcastChannel");
    assert.equal(sharingSupport({ navigator: { locks }, BroadcastChannel: class {} }), null, "a worker: no page");
    assert.ok(sharingSupport({ document: {}, navigator: { locks }, BroadcastChannel: class {} }));
  });

  test("the shared connection is per endpoint and user, or per shareKey", () => {
    const a = { url: "wss://ws.example.com/prod", tenant: "acme", sub: "alice" };
    assert.notEqual(shareName(a), shareName({ ...a, sub: "bob" }));
    assert.notEqual(shareName(a), shareName({ ...a, tenant: "other" }));
    assert.notEqual(shareName(a), shareName({ ...a, url: "wss://ws.example.com/test" }));
    assert.equal(shareName(a, "k1"), shareName({ ...a, sub: "bob" }, "k1"));
  });

  test("the group an event concerns, and a publish's key from its id", () => {
    assert.equal(groupOf("notification", [{ topic: "room:7" }]), "room:7");
    assert.equal(groupOf("presence", [{ group: "room:7" }]), "room:7");
    assert.equal(groupOf("left", [{ group: "course:9" }]), "course:9");
    assert.equal(groupOf("error", [new HeraldError("forbidden", "no", { group: "course:7" })]), "course:7");
    assert.equal(groupOf("error", [new HeraldError("timeout", "slow")]), null);
    assert.equal(groupOf("state", [{ state: "ready" }]), null);
    assert.equal(echoKey("~alice~k-1"), "k-1");
    assert.equal(echoKey("grade-7781"), null);
    assert.equal(echoKey(undefined), null);
  });

  test("errors cross the channel with their code, frame and group", () => {
    const e = decodeError(structuredClone(encodeError(new HeraldError("forbidden", "not entitled", { frame: { type: "error" }, group: "course:7" }))));
    assert.ok(e instanceof HeraldError);
    assert.deepEqual([e.code, e.message, e.frame, e.group], ["forbidden", "not entitled", { type: "error" }, "course:7"]);
  });

  test("in Node a client has its own socket", () => {
    const client = new HeraldClient({ url: "ws://x", token: "t", WebSocketImpl: class {}, autoConnect: false });
    assert.equal(client.tabRole, null);
    client.close();
  });
});

// ------------------------------------------------------------------------------ the protocol

/** Web Locks, for one process: exclusive, granted in request order, released when `fn` settles. */
function fakeLocks() {
  /** @type {Map<string, {fn: Function, resolve: Function, reject: Function, signal?: AbortSignal}[]>} */
  const queues = new Map();
  const grant = (name) => {
    const q = queues.get(name);
    const next = q?.[0];
    if (!next || next.running) return;
    next.running = true;
    Promise.resolve()
      .then(() => next.fn({ name }))
      .then(next.resolve, next.reject)
      .finally(() => {
        q.shift();
        grant(name);
      });
  };
  return {
    request(name, options, fn) {
      return new Promise((resolve, reject) => {
        const entry = { fn, resolve, reject, running: false };
        if (!queues.has(name)) queues.set(name, []);
        queues.get(name).push(entry);
        options.signal?.addEventListener("abort", () => {
          const q = queues.get(name);
          const i = q.indexOf(entry);
          if (i >= 0 && !entry.running) {
            q.splice(i, 1);
            reject(Object.assign(new Error("aborted"), { name: "AbortError" }));
          }
        });
        grant(name);
      });
    },
  };
}

/** A server for the fake sockets: answers requests, records frames, delivers notifications. */
function fakeServer() {
  const sockets = [];
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.sent = [];
      this.open = true;
      sockets.push(this);
      setTimeout(() => this.onopen?.({}), 0);
    }
    send(text) {
      const f = JSON.parse(text);
      this.sent.push(f);
      const answer = {
        join: { type: "joined", group: f.group },
        leave: { type: "left", group: f.group },
        resume: { type: "resumed", cursor: "01CURSOR0000000000000000001", count: 0, more: false },
        ping: { type: "pong" },
        ack: { type: "acked", count: f.ids?.length },
        publish: { type: "published", id: `~u1~${f.id ?? "srv"}` },
      }[f.action];
      setTimeout(() => this.push({ ...answer, ref: f.ref }), 0);
      // The server's copy for the sender's own connection, only when asked for.
      if (f.action === "publish" && f.echo) setTimeout(() => this.push({ type: "notification", id: `~u1~${f.id}`, topic: f.group, event: f.event }), 0);
    }
    push(frame) {
      if (this.open) this.onmessage?.({ data: JSON.stringify(frame) });
    }
    close(code = 1000) {
      this.open = false;
      setTimeout(() => this.onclose?.({ code }), 0);
    }
  }
  return { sockets, FakeSocket, open: () => sockets.filter((s) => s.open) };
}

describe("tabs sharing a connection (BroadcastChannel, fake locks and socket)", () => {
  const saved = {};
  /** @type {HeraldClient[]} */
  let clients = [];
  afterEach(() => {
    for (const c of clients) c.close();
    clients = [];
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete globalThis[k];
      else globalThis[k] = v;
    }
  });

  /** Makes this process look like a browser with Web Locks; returns a client factory. */
  function browserLike() {
    for (const k of ["document", "navigator"]) saved[k] = globalThis[k];
    Object.defineProperty(globalThis, "navigator", { value: { locks: fakeLocks() }, configurable: true, writable: true });
    globalThis.document = { visibilityState: "visible", addEventListener() {}, removeEventListener() {} };
    const server = fakeServer();
    const token = jwt({ sub: "u1", tenant: "t1" });
    const tab = (options = {}) => {
      const client = new HeraldClient({ url: "ws://fake", token, WebSocketImpl: server.FakeSocket, storage: null, ...options });
      const log = { notifications: [], states: [] };
      client.on("notification", (n) => log.notifications.push(n));
      client.on("state", (s) => log.states.push(s.state));
      clients.push(client);
      return { client, log };
    };
    return { server, tab };
  }

  test("two tabs: one socket; the follower's requests go on it; events reach the tabs that hold their group", async () => {
    const { server, tab } = browserLike();
    const a = tab({ groups: ["room:1"] });
    await until(() => a.client.ready, "the first tab ready");
    assert.equal(a.client.tabRole, "leader");
    const b = tab();
    await until(() => b.client.ready, "the second tab ready (mirrored)");
    assert.equal(b.client.tabRole, "follower");
    assert.equal(server.sockets.length, 1, "one socket for two tabs");
    const socket = server.sockets[0];

    const joined = await b.client.join("room:2");
    assert.equal(joined.type, "joined");
    assert.ok(socket.sent.some((f) => f.action === "join" && f.group === "room:2"), "joined on the leader's socket");
    assert.equal((await b.client.ack(["x"])).count, 1);

    socket.push({ type: "notification", id: "n1", topic: "user:u1" });
    socket.push({ type: "notification", id: "n2", topic: "room:1" });
    socket.push({ type: "notification", id: "n3", topic: "room:2" });
    socket.push({ type: "notification", id: "n1", topic: "user:u1" }); // a redelivery
    await until(() => b.log.notifications.length === 2 && a.log.notifications.length === 2, "both tabs' notifications");
    assert.deepEqual(a.log.notifications.map((n) => n.id), ["n1", "n2"]);
    assert.deepEqual(b.log.notifications.map((n) => n.id), ["n1", "n3"]);

    // A leave of a group only this follower holds leaves it on the socket; the leader's own
    // group stays while it holds it, whoever else leaves it.
    await b.client.leave("room:2");
    assert.ok(socket.sent.some((f) => f.action === "leave" && f.group === "room:2"));
    await b.client.join("room:1");
    const shared = await b.client.leave("room:1");
    assert.equal(shared.shared, true);
    assert.ok(!socket.sent.some((f) => f.action === "leave" && f.group === "room:1"), "room:1 is still the leader's");

    // A follower's publish asks for the echo: the leader tab shows it, the sender does not.
    await b.client.join("room:1");
    const published = await b.client.publish("room:1", "chat.message", { body: "hi" });
    const frame = socket.sent.find((f) => f.action === "publish");
    assert.equal(frame.echo, true);
    await until(() => a.log.notifications.some((n) => n.id === published.id), "the leader tab gets the follower's message");
    socket.push({ type: "notification", id: "n4", topic: "user:u1" });
    await until(() => b.log.notifications.some((n) => n.id === "n4"), "a later notification in the sender");
    assert.ok(!b.log.notifications.some((n) => n.id === published.id), "no copy for the sender");
  });

  test("the leader closes: the follower takes the lock, re-joins every group and resumes from the shared cursor", async () => {
    const { server, tab } = browserLike();
    const a = tab({ groups: ["room:1"] });
    await until(() => a.client.ready, "leader ready");
    const b = tab({ groups: ["room:2"] });
    await until(() => b.client.ready, "follower ready");
    const c = tab({ groups: ["room:3"] });
    await until(() => c.client.ready, "second follower ready");
    assert.equal(b.client.cursor, "01CURSOR0000000000000000001", "the leader's resume point reached the follower");

    a.client.close();
    await until(() => server.sockets.length === 2 && b.client.ready && c.client.ready, "a new socket and both tabs ready");
    const [leader, follower] = b.client.tabRole === "leader" ? [b, c] : [c, b];
    assert.equal(follower.client.tabRole, "follower");
    const socket = server.sockets[1];
    // The closed tab's group is not joined, or (its goodbye came after the sync) left again.
    const member = new Set();
    for (const f of socket.sent) {
      if (f.action === "join") member.add(f.group);
      if (f.action === "leave") member.delete(f.group);
    }
    assert.deepEqual([...member].sort(), ["room:2", "room:3"], "the remaining tabs' groups, not the closed tab's");
    const resume = socket.sent.find((f) => f.action === "resume");
    assert.equal(resume.since, "01CURSOR0000000000000000001");
    assert.ok(follower.log.states.includes("reconnecting"), "the follower saw the connection go and come back");
    assert.equal(leader.log.states.at(-1), "ready");
  });
});
