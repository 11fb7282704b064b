// One socket per browser (client/lib/tabs.js) in a real browser: several tabs of the demo page
// (pages of one browser context share an origin, so their Web Locks and BroadcastChannels meet)
// against the REAL local stack, in headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM)
// driven by playwright-core. Node's built-in runner.
//
// The connections are counted by the stack (its control API lists the open WebSockets), not in
// the page. Each test has its own browser context and tenant; everything waits for a DOM
// condition or a server state with a deadline, nothing sleeps a fixed time.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";

import { chromium } from "playwright-core";

import { startStack, trouble, until as waitUntil } from "../test-support/stack.mjs";

const profile = process.env.HERALD_PROFILE || "debug";
const verbose = Boolean(process.env.HERALD_TEST_VERBOSE);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const DEADLINE_MS = 45_000;

/** @type {any} */
let stack;
/** @type {ReturnType<typeof startStack> | undefined} */
let local;
/** @type {import("playwright-core").Browser | null} */
let browser = null;

// ------------------------------------------------------------------------------------- helpers

let counter = 0;
const unique = (prefix) => `${prefix}-${process.pid}-${++counter}-${Math.random().toString(36).slice(2, 7)}`;

async function http(method, url, { token, json, text } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (json !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(url, { method, headers, body: json !== undefined ? JSON.stringify(json) : text });
  const raw = await res.text();
  let body = null;
  try {
    body = raw ? JSON.parse(raw) : null;
  } catch {
    body = raw;
  }
  return { status: res.status, body };
}

const until = (fn, what, timeoutMs = DEADLINE_MS) =>
  waitUntil(fn, what, timeoutMs).catch((e) => {
    throw new Error(`${e.message}${local ? trouble(local.output) : ""}`);
  });

async function send(message) {
  const res = await http("POST", `${stack.controlUrl}/queues/DispatchQueue/messages`, { text: JSON.stringify(message) });
  assert.equal(res.status, 200, `SendMessage: ${JSON.stringify(res.body)}`);
}

/** The user's open WebSockets, as the stack's gateway lists them. */
async function connectionsOf(user) {
  const res = await http("GET", `${stack.controlUrl}/connections`);
  assert.equal(res.status, 200);
  return res.body.filter((c) => c.tenant === user.tenant && c.user === user.sub);
}

/** Waits until `id` is in `user`'s log: it was sent, whatever reached the browser. */
async function logged(user, id) {
  const res = await http("POST", `${stack.controlUrl}/token`, { json: { alg: "HS256", ...user } });
  const token = res.body.token;
  await until(async () => {
    const missed = await http("GET", `${stack.httpUrl}/notifications/missed?limit=200`, { token });
    return missed.body?.items?.some((n) => n.id === id);
  }, `${id} in the log of ${user.sub}`);
}

/** One more tab of the demo page as `user` in `context`; console errors are collected. */
async function openTab(context, user, problems) {
  const page = await context.newPage();
  page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  const q = new URLSearchParams({ sub: user.sub, tenant: user.tenant, roles: "", groups: (user.groups ?? []).join(",") });
  await page.goto(`${stack.staticUrls["/client"]}demo/?${q}`);
  await ready(page);
  return page;
}

const ready = (page) => page.locator('#badge[data-state="ready"]').waitFor({ timeout: DEADLINE_MS });
const toast = (page, id) => page.locator(`#toasts .toast[data-id="${id}"]`);
const toastsShown = (page, id) => page.locator(`#activity-list li[data-toast-id="${id}"]`).count();
const role = (page) => page.evaluate(() => /** @type {any} */ (window).herald.tabRole);

/** The tabs by role: the one leader and the followers (fails unless there is exactly one leader). */
async function roles(pages) {
  const all = await Promise.all(pages.map(role));
  assert.equal(all.filter((r) => r === "leader").length, 1, `one leader among ${JSON.stringify(all)}`);
  assert.ok(all.every((r) => r === "leader" || r === "follower"), JSON.stringify(all));
  return { leader: pages[all.indexOf("leader")], followers: pages.filter((_, i) => all[i] === "follower") };
}

function message(user, id, extra = {}) {
  return { id, tenant: user.tenant, to: { user: user.sub }, event: "demo.test", title: `tabs ${id}`, ...extra };
}

// ------------------------------------------------------------------------------------- tests

describe(`tabs of one browser share one WebSocket, in Chromium (target/${profile})`, () => {
  before(async () => {
    if (!existsSync(executablePath)) {
      throw new Error(`${executablePath} is missing: apt-get install -y chromium (or set CHROMIUM)`);
    }
    local = startStack({ profile, verbose });
    [stack, browser] = await Promise.all([
      local.ready,
      chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-dev-shm-usage"] }),
    ]);
  }, { timeout: 120_000 });

  after(async () => {
    await browser?.close();
    await local?.stop();
  });

  test("three tabs open one connection; each shows the user's notifications; followers join and publish", async (t) => {
    const room = `room:${unique("r")}`;
    const user = { sub: "u1", tenant: unique("t"), groups: [room] };
    const context = await browser.newContext();
    t.after(() => context.close());
    const problems = [];
    const tabs = [];
    for (let i = 0; i < 3; i++) tabs.push(await openTab(context, user, problems));

    // Every tab is ready, and the stack holds one WebSocket of this user: the leader's.
    const open = await connectionsOf(user);
    assert.equal(open.length, 1, `open connections: ${JSON.stringify(open)}`);
    const { leader, followers } = await roles(tabs);
    const [f1, f2] = followers;

    const id = unique("n");
    await send(message(user, id));
    for (const page of tabs) await toast(page, id).waitFor({ timeout: DEADLINE_MS });

    // A follower's join goes through the leader's socket; the room's notifications then reach
    // the tabs that joined it, and only those, as with a socket per tab.
    const joined = await f1.evaluate((g) => /** @type {any} */ (window).herald.join(g), room);
    assert.deepEqual({ type: joined.type, group: joined.group }, { type: "joined", group: room });
    await f2.evaluate((g) => /** @type {any} */ (window).herald.join(g), room);
    const inRoom = unique("n");
    await send({ id: inRoom, tenant: user.tenant, to: { group: room }, event: "demo.test", title: "to the room" });
    await toast(f1, inRoom).waitFor({ timeout: DEADLINE_MS });
    await toast(f2, inRoom).waitFor({ timeout: DEADLINE_MS });

    // A follower publishes: the other tab in the room gets it, the sender does not (no echo
    // asked), the leader (not in the room) neither.
    const published = await f1.evaluate(
      (g) => /** @type {any} */ (window).herald.publish(g, "demo.test", { title: "from a follower tab" }),
      room,
    );
    assert.equal(published.type, "published");
    await toast(f2, published.id).waitFor({ timeout: DEADLINE_MS });
    // A barrier: a later notification to everyone arrives after anything sent before it.
    const barrier = unique("n");
    await send(message(user, barrier));
    for (const page of tabs) await toast(page, barrier).waitFor({ timeout: DEADLINE_MS });
    assert.equal(await toastsShown(f1, published.id), 0, "the sender does not get its own message");
    assert.equal(await toastsShown(leader, published.id), 0, "a tab outside the room does not get it");
    assert.equal(await toastsShown(leader, inRoom), 0, "a tab outside the room does not get it");
    for (const page of tabs) assert.equal(await toastsShown(page, id), 1);
    assert.equal((await connectionsOf(user)).length, 1, "still one connection");
    assert.deepEqual(problems, []);
  });

  test("closing the leader tab: another tab connects and resumes, and what was sent meanwhile arrives once", async (t) => {
    const user = { sub: "u1", tenant: unique("t") };
    const context = await browser.newContext();
    t.after(() => context.close());
    const problems = [];
    const tabs = [];
    for (let i = 0; i < 3; i++) tabs.push(await openTab(context, user, problems));
    const { leader, followers } = await roles(tabs);
    const before = unique("n");
    await send(message(user, before));
    for (const page of tabs) await toast(page, before).waitFor({ timeout: DEADLINE_MS });

    // No connection while the leader goes: the browser is offline and the stack drops the one
    // there was. Then the leader tab closes and a notification is sent.
    await context.setOffline(true);
    for (const conn of await connectionsOf(user)) {
      await http("POST", `${stack.controlUrl}/connections/${conn.connectionId}/drop`); // 404: closed already
    }
    await until(async () => (await connectionsOf(user)).length === 0, "the connection gone");
    await leader.close();
    const missed = unique("n");
    await send(message(user, missed));
    await logged(user, missed);

    // Back online: one of the others holds the connection now, resumed from the shared cursor.
    await context.setOffline(false);
    for (const page of followers) await toast(page, missed).waitFor({ timeout: DEADLINE_MS });
    for (const page of followers) await ready(page);
    await roles(followers);
    await until(async () => (await connectionsOf(user)).length === 1, "one connection again");
    const live = unique("n");
    await send(message(user, live));
    for (const page of followers) await toast(page, live).waitFor({ timeout: DEADLINE_MS });
    for (const page of followers) {
      assert.equal(await toastsShown(page, missed), 1, "the one sent meanwhile, once");
      assert.equal(await toastsShown(page, before), 1, "nothing shown again");
    }
    assert.equal((await connectionsOf(user)).length, 1);
    // Offline, the connection attempts fail: those errors are the page's own log, not problems.
    assert.deepEqual(problems.filter((p) => !/ERR_INTERNET_DISCONNECTED|WebSocket|Failed to fetch|net::/.test(p)), []);
  });

  test("tabs of two users in one browser do not share a connection", async (t) => {
    const tenant = unique("t");
    const [alice, bob] = [{ sub: "alice", tenant }, { sub: "bob", tenant }];
    const context = await browser.newContext();
    t.after(() => context.close());
    const problems = [];
    const a = await openTab(context, alice, problems);
    const b = await openTab(context, bob, problems);
    assert.equal(await role(a), "leader");
    assert.equal(await role(b), "leader");
    assert.equal((await connectionsOf(alice)).length, 1);
    assert.equal((await connectionsOf(bob)).length, 1);
    const forBob = unique("n");
    await send(message(bob, forBob));
    await toast(b, forBob).waitFor({ timeout: DEADLINE_MS });
    const forAlice = unique("n");
    await send(message(alice, forAlice));
    await toast(a, forAlice).waitFor({ timeout: DEADLINE_MS });
    assert.equal(await toastsShown(a, forBob), 0);
    assert.deepEqual(problems, []);
  });
});
