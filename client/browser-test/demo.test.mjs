// The demo page (client/demo/) in a real browser: headless Chromium from Debian's packages
// (/usr/bin/chromium, or $CHROMIUM), driven by playwright-core, against the REAL local stack
// (infra/herald_local running the Rust binary of target/$HERALD_PROFILE). Node's built-in runner.
//
// One stack and one browser for all tests; each test has its own browser context (its own
// localStorage) and its own tenant, so tests never see each other's notifications. Everything
// waits for a DOM condition or a server state with a deadline; nothing sleeps a fixed time.
//
// The screenshot of the README is taken here: target/browser-tests/demo.png on every run, and
// docs/demo.png too with HERALD_UPDATE_SCREENSHOT=1.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { repo, startStack, trouble, until as waitUntil } from "../test-support/stack.mjs";

const profile = process.env.HERALD_PROFILE || "debug";
const verbose = Boolean(process.env.HERALD_TEST_VERBOSE);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
// As the end-to-end tests' wait: `make test` runs several stacks (and this browser) on two cores.
const DEADLINE_MS = 45_000;

/** @type {any} */
let stack; // the ready file
/** @type {ReturnType<typeof startStack> | undefined} */
let local; // the running stack
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

async function mintToken(claims) {
  const res = await http("POST", `${stack.controlUrl}/token`, { json: { alg: "HS256", ...claims } });
  assert.equal(res.status, 200, `POST /_herald/token: ${JSON.stringify(res.body)}`);
  return res.body.token;
}

/** A producer message on the SQS dispatch queue (SendMessage, through the control API). */
async function sendThroughSqs(message) {
  const res = await http("POST", `${stack.controlUrl}/queues/DispatchQueue/messages`, { text: JSON.stringify(message) });
  assert.equal(res.status, 200, `SendMessage: ${JSON.stringify(res.body)}`);
}

/** Polls until `fn()` is truthy (server state; DOM conditions use Playwright's own waits). */
const until = (fn, what, timeoutMs = DEADLINE_MS) =>
  waitUntil(fn, what, timeoutMs).catch((e) => {
    throw new Error(`${e.message}${local ? trouble(local.output) : ""}`);
  });

/** Waits until the notification `id` is in `user`'s log (GET /notifications/missed). */
async function logged(user, id) {
  const token = await mintToken(user);
  await until(async () => {
    const res = await http("GET", `${stack.httpUrl}/notifications/missed?limit=200`, { token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.items.some((n) => n.id === id);
  }, `${id} in the log of ${user.sub}`);
}

/**
 * The demo page as `user` in a fresh browser context, with every console error, uncaught
 * exception and request that leaves the local stack recorded. Closed when the test ends.
 */
async function openDemo(t, user, { viewport = { width: 1280, height: 860 } } = {}) {
  const context = await browser.newContext({ viewport });
  t.after(() => context.close());
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));
  // Everything comes from the local stack: no CDN, no web font, nothing from the internet.
  page.on("request", (r) => {
    if (!/^(https?|wss?):\/\/127\.0\.0\.1[:/]|^data:/.test(r.url())) problems.push(`request off the local stack: ${r.url()}`);
  });
  const q = new URLSearchParams({ sub: user.sub, tenant: user.tenant, roles: (user.roles ?? []).join(","), groups: (user.groups ?? []).join(",") });
  await page.goto(`${stack.staticUrls["/client"]}demo/?${q}`);
  await ready(page);
  return { page, context, problems };
}

const ready = (page) => page.locator('#badge[data-state="ready"]').waitFor({ timeout: DEADLINE_MS });
const toast = (page, id) => page.locator(`#toasts .toast[data-id="${id}"]`);
const inboxItem = (page, id) => page.locator(`#inbox-list li[data-id="${id}"]`);
/** Every toast the page has shown for `id` (the activity log keeps them after they fade). */
const toastsShown = (page, id) => page.locator(`#activity-list li[data-toast-id="${id}"]`).count();
const unreadIs = (page, n) => page.locator(`#unread[data-count="${n}"]`).waitFor({ timeout: DEADLINE_MS });

function message(user, id, title) {
  return { id, tenant: user.tenant, to: { user: user.sub }, event: "demo.test", title, body: `sent by ${path.basename(fileURLToPath(import.meta.url))}` };
}

// ------------------------------------------------------------------------------- the stack

// ------------------------------------------------------------------------------------- tests

describe(`the demo page in Chromium (target/${profile})`, () => {
  before(async () => {
    if (!existsSync(executablePath)) {
      throw new Error(`${executablePath} is missing: apt-get install -y chromium (or set CHROMIUM)`);
    }
    // The browser starts while the stack does.
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

  test("loads with no console errors and connects", async (t) => {
    const { page, problems } = await openDemo(t, { sub: "u1", tenant: unique("t") });
    assert.equal(await page.textContent("#badge"), "ready");
    assert.deepEqual(problems, []);
  });

  test("a notification sent through SQS shows as a toast and in the inbox", async (t) => {
    const user = { sub: "u1", tenant: unique("t") };
    const { page, problems } = await openDemo(t, user);
    const id = unique("n");
    await sendThroughSqs(message(user, id, "Assignment graded"));
    await toast(page, id).waitFor({ timeout: DEADLINE_MS });
    await inboxItem(page, id).waitFor({ timeout: DEADLINE_MS });
    assert.match(await toast(page, id).textContent(), /Assignment graded/);
    assert.deepEqual(problems, []);
  });

  test("the unread count drops on read", async (t) => {
    const user = { sub: "u1", tenant: unique("t") };
    const { page, problems } = await openDemo(t, user);
    const [a, b] = [unique("n"), unique("n")];
    await sendThroughSqs(message(user, a, "first"));
    await sendThroughSqs(message(user, b, "second"));
    await inboxItem(page, a).waitFor({ timeout: DEADLINE_MS });
    await inboxItem(page, b).waitFor({ timeout: DEADLINE_MS });
    await unreadIs(page, 2);
    await inboxItem(page, a).getByRole("button", { name: "Mark read" }).click();
    await unreadIs(page, 1);
    await page.locator(`#inbox-list li.read[data-id="${a}"]`).waitFor({ timeout: DEADLINE_MS });
    assert.deepEqual(problems, []);
  });

  test("a reload resumes without a duplicate toast", async (t) => {
    const user = { sub: "u1", tenant: unique("t") };
    const { page, problems } = await openDemo(t, user);
    const before = unique("n");
    await sendThroughSqs(message(user, before, "before the reload"));
    await toast(page, before).waitFor({ timeout: DEADLINE_MS });
    // The client saved its resume point in localStorage; the reloaded page resumes from it.
    await page.reload();
    await ready(page);
    const afterReload = unique("n");
    await sendThroughSqs(message(user, afterReload, "after the reload"));
    await toast(page, afterReload).waitFor({ timeout: DEADLINE_MS });
    // Live delivery works again and the one sent before is listed once, not toasted again.
    assert.equal(await inboxItem(page, before).count(), 1);
    assert.equal(await toastsShown(page, before), 0);
    assert.equal(await toastsShown(page, afterReload), 1);
    const saved = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith("herald:")));
    assert.equal(saved.length, 1, "the client keeps its resume point per user");
    assert.deepEqual(problems, []);
  });

  test("a forced disconnect while a notification is sent still shows it once after the reconnect", async (t) => {
    const user = { sub: "u1", tenant: unique("t") };
    const { page, context } = await openDemo(t, user);
    // The button: the stack drops the socket without a close frame; the client comes back.
    await page.getByRole("button", { name: "Drop connection" }).click();
    await page.locator('#activity-list li[data-state="reconnecting"]').waitFor({ timeout: DEADLINE_MS });
    await ready(page);

    // Now keep it down while the notification is sent: the browser is offline (no reconnect
    // can succeed) and the stack drops the connection.
    await context.setOffline(true);
    const all = (await http("GET", `${stack.controlUrl}/connections`)).body;
    for (const conn of all.filter((c) => c.tenant === user.tenant && c.user === user.sub)) {
      // 404 if the browser closed it first on going offline: down either way.
      await http("POST", `${stack.controlUrl}/connections/${conn.connectionId}/drop`);
    }
    await page.locator('#badge:is([data-state="reconnecting"], [data-state="polling"])').waitFor({ timeout: DEADLINE_MS });
    const id = unique("n");
    await sendThroughSqs(message(user, id, "sent while you were away"));
    await logged(user, id);
    assert.equal(await toastsShown(page, id), 0, "nothing can arrive while offline");

    await context.setOffline(false);
    await toast(page, id).waitFor({ timeout: DEADLINE_MS });
    await ready(page);
    // Back and resumed: a live one arrives, and the missed one was shown exactly once.
    const next = unique("n");
    await sendThroughSqs(message(user, next, "live again"));
    await toast(page, next).waitFor({ timeout: DEADLINE_MS });
    assert.equal(await toastsShown(page, id), 1);
    assert.equal(await inboxItem(page, id).count(), 1);
  });

  test("a forbidden join shows the server's error, and so does a dead-lettered message", async (t) => {
    const user = { sub: "u1", tenant: unique("t"), groups: ["course:42"] };
    const { page, problems } = await openDemo(t, user);
    const form = page.locator("#join-form");
    await form.locator('input[name="group"]').fill("course:42");
    await form.getByRole("button", { name: "Join" }).click();
    await page.locator('#group-list li[data-group="course:42"]').waitFor({ timeout: DEADLINE_MS });
    await form.locator('input[name="group"]').fill("course:7");
    await form.getByRole("button", { name: "Join" }).click();
    const status = page.locator('#join-status[data-kind="error"]');
    await status.waitFor({ timeout: DEADLINE_MS });
    assert.match(await status.textContent(), /^forbidden: /);
    assert.equal(await page.locator('#group-list li[data-group="course:7"]').count(), 0);

    // SendMessage takes anything; dispatch dead-letters a bad message with its reason.
    const sender = page.locator("#send-form");
    await sender.locator('input[name="toGroup"]').fill("not a group");
    await sender.getByRole("button", { name: "Send" }).click();
    const sent = page.locator('#send-status[data-kind="error"]');
    await sent.waitFor({ timeout: DEADLINE_MS });
    assert.match(await sent.textContent(), /^dead-lettered by dispatch: bad_request: to\.group: /);
    assert.deepEqual(problems, []);
  });

  test("two tabs, two tenants: a tenant broadcast reaches only its own tenant", async (t) => {
    const alice = { sub: "alice", tenant: unique("acme") };
    const eve = { sub: "eve", tenant: unique("other") };
    const [a, e] = await Promise.all([openDemo(t, alice), openDemo(t, eve)]);
    const broadcast = unique("n");
    await sendThroughSqs({ id: broadcast, tenant: alice.tenant, to: { tenant: true }, event: "demo.test", title: "to acme" });
    await toast(a.page, broadcast).waitFor({ timeout: DEADLINE_MS });
    // A barrier: once eve has her own later notification, acme's would have arrived too.
    const own = unique("n");
    await sendThroughSqs({ id: own, tenant: eve.tenant, to: { tenant: true }, event: "demo.test", title: "to other" });
    await toast(e.page, own).waitFor({ timeout: DEADLINE_MS });
    assert.equal(await toastsShown(e.page, broadcast), 0);
    assert.equal(await inboxItem(e.page, broadcast).count(), 0);
    assert.equal(await toastsShown(a.page, own), 0);
    assert.deepEqual([...a.problems, ...e.problems], []);
  });

  test("two users chat in a room: history on open and scroll, messages, typing, seen by, a shared file", async (t) => {
    const tenant = unique("t");
    const room = `room:${unique("r")}`;
    const alice = { sub: "alice", tenant, groups: [room] };
    const bob = { sub: "bob", tenant, groups: [room] };
    // 25 older messages from a service: more than the panel's first page of 20.
    const seeded = [];
    for (let i = 0; i < 25; i++) {
      const id = unique("seed");
      seeded.push(id);
      await sendThroughSqs({ id, tenant, to: { group: room }, event: "chat.message", body: `old message ${i}` });
    }
    const memberToken = await mintToken(alice);
    // Newest first, in cursor order: dispatch logs concurrent sends in any order.
    let newestFirst = [];
    await until(async () => {
      const res = await http("GET", `${stack.httpUrl}/groups/${encodeURIComponent(room)}/history?limit=100`, { token: memberToken });
      newestFirst = res.status === 200 ? res.body.items.map((n) => `(service)${n.body}`) : [];
      return newestFirst.length === seeded.length;
    }, "the seeded messages in the room's history");

    const [a, b] = [await openDemo(t, alice), await openDemo(t, bob)];
    const messages = (page) => page.locator("#chat-messages li");
    for (const { page } of [a, b]) {
      await page.locator('#chat-room input[name="room"]').fill(room);
      await page.locator("#chat-room").getByRole("button", { name: "Open" }).click();
      await page.locator(`#chat-room[data-open="${room}"]`).waitFor({ timeout: DEADLINE_MS });
    }
    assert.equal(await messages(a.page).count(), 20, "the newest page on open");
    assert.equal(await a.page.locator("#chat-messages li").last().textContent(), newestFirst[0]);
    // Scrolled to the top, the older page is loaded above.
    await a.page.locator("#chat-log").evaluate((el) => el.scrollTo(0, 0));
    await until(async () => (await messages(a.page).count()) === 25, "the older page after scrolling up");
    assert.equal(await messages(a.page).first().textContent(), newestFirst[seeded.length - 1]);
    assert.equal(await a.page.locator("#chat-older").isHidden(), true, "no older page left");

    // Typing, then a message: bob sees both.
    await a.page.locator('#chat-form input[name="text"]').fill("hello bob");
    await b.page.locator("#chat-typing", { hasText: "alice is typing" }).waitFor({ timeout: DEADLINE_MS });
    await a.page.locator("#chat-form").getByRole("button", { name: "Send" }).click();
    await b.page.locator('#chat-messages li[data-from="alice"]', { hasText: "hello bob" }).waitFor({ timeout: DEADLINE_MS });
    // Bob's page marks what it shows read: alice's message says so.
    await a.page.locator('#chat-messages li.mine .seen[data-seen="1"]').waitFor({ timeout: DEADLINE_MS });
    assert.match(await a.page.locator("#chat-messages li.mine .seen").textContent(), /seen by 1/);

    // Bob shares a file; alice opens it through a presigned GET and gets the bytes.
    const text = "agenda: receipts, history, files\n";
    await b.page.locator('#chat-form input[name="file"]').setInputFiles({ name: "agenda.txt", mimeType: "text/plain", buffer: Buffer.from(text) });
    await b.page.locator("#chat-form").getByRole("button", { name: "Send" }).click();
    await b.page.locator('#chat-status:not([data-kind="pending"])', { hasText: "agenda.txt" }).waitFor({ timeout: DEADLINE_MS });
    assert.equal(await b.page.textContent("#chat-status"), "shared agenda.txt");
    const fileButton = a.page.locator('#chat-messages li[data-from="bob"] button.file');
    await fileButton.waitFor({ timeout: DEADLINE_MS });
    await fileButton.click();
    const link = a.page.locator('#chat-messages li[data-from="bob"] a.file-link');
    await link.waitFor({ timeout: DEADLINE_MS });
    const href = await link.getAttribute("href");
    assert.match(href, /^http:\/\/127\.0\.0\.1:\d+\//, "the local stack's S3");
    const got = await a.page.evaluate(async (url) => (await fetch(url)).text(), href);
    assert.equal(got, text);
    assert.deepEqual([...a.problems, ...b.problems], []);
  });

  test("screenshot for the README", async (t) => {
    // The page's default user (no other test uses tenant dev).
    const user = { sub: "dev-user", tenant: "dev", groups: ["course:42"] };
    const { page, problems } = await openDemo(t, user, { viewport: { width: 1280, height: 820 } });
    const form = page.locator("#join-form");
    await form.getByRole("button", { name: "Join" }).click(); // course:42, the default
    await page.locator('#group-list li[data-group="course:42"]').waitFor({ timeout: DEADLINE_MS });
    const sent = [
      ["Welcome to Herald", "Notifications from your services, live in the browser."],
      ["Class starts in 5 minutes", "Room 101 · Intro to distributed systems"],
      ["Assignment graded", "Your essay got an A."],
    ];
    for (const [title, body] of sent) {
      const id = unique("n");
      await sendThroughSqs({ id, tenant: user.tenant, to: { user: user.sub }, event: "demo.message", title, body });
      await inboxItem(page, id).waitFor({ timeout: DEADLINE_MS });
    }
    await form.locator('input[name="group"]').fill("course:7");
    await form.getByRole("button", { name: "Join" }).click();
    await page.locator('#join-status[data-kind="error"]').waitFor({ timeout: DEADLINE_MS });
    await page.locator('#presence-status[data-kind="ok"]').waitFor({ timeout: DEADLINE_MS });
    await unreadIs(page, 3);
    // A job under way: its progress notifications move the bar (and are not toasted).
    await page.getByRole("button", { name: "Start a job" }).click();
    await page.waitForFunction(() => document.querySelector("#job-bar").value >= 40, null, { timeout: DEADLINE_MS });
    const dir = path.join(repo, "target", "browser-tests");
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, "demo.png");
    await page.screenshot({ path: file, animations: "disabled" });
    if (process.env.HERALD_UPDATE_SCREENSHOT) copyFileSync(file, path.join(repo, "docs", "demo.png"));
    assert.deepEqual(problems, []);
  });
});
