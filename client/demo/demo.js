// @ts-check
// Herald demo page: every feature of the browser client on the local stack, in plain JavaScript.
//
// It imports the client exactly as it ships (../herald.js; the local stack serves client/), and
// talks to three things, all served by the local stack:
// - the WebSocket API, through HeraldClient (join, leave, ack, resume, reconnect);
// - the HTTP API (missed notifications, read state, presence, POST /notifications);
// - the local stack's control API on this page's own origin (/_herald: development tokens, the
//   stack's endpoints, sending to the dispatch queue, dropping a connection).
//
// The page is a set of panels sharing one context (`ctx`). A panel is a function that wires its
// part of index.html to the context; features the server adds later (collapse, client publish,
// presence events) are a new panel, a new sender option (SEND_OPTIONS) or a new event handler
// (ctx.handle) — nothing else needs to change.

import { HeraldClient, HeraldError } from "../herald.js";

// ------------------------------------------------------------------------------ small helpers

/** @param {string} sel @param {ParentNode} [root] @returns {any} */
const $ = (sel, root = document) => {
  const el = root.querySelector(sel);
  if (!el) throw new Error(`demo: ${sel} is missing from index.html`);
  return el;
};

/** Builds an element: h("li", {class: "x", dataset: {id}}, "text", child). */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const list = (/** @type {string | null} */ text) =>
  (text ?? "").split(",").map((s) => s.trim()).filter(Boolean);

const clock = (/** @type {string | number | Date} */ t) =>
  new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

/** An error answered by a server: the HTTP status and the server's own code and message. */
class ApiError extends Error {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** "forbidden: not a member of course:7" — what the server said, as it said it. */
function describe(/** @type {any} */ err) {
  if (err instanceof ApiError) return `${err.status} ${err.code}: ${err.message}`;
  if (err instanceof HeraldError) return `${err.code}: ${err.message}`;
  return String(err?.message ?? err);
}

/**
 * fetch with JSON in and out. Errors become ApiError with the server's code: the HTTP API answers
 * {"error":{"code","message"}}, the control API {"error":"..."}, API Gateway {"message":"..."}.
 * @param {string} method @param {string} url
 * @param {{token?: string, json?: unknown, text?: string}} [options]
 */
async function call(method, url, { token, json, text } = {}) {
  /** @type {Record<string, string>} */
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (json !== undefined) headers["content-type"] = "application/json";
  let res;
  try {
    res = await fetch(url, { method, headers, body: json !== undefined ? JSON.stringify(json) : text });
  } catch (e) {
    throw new ApiError(0, "unreachable", `${method} ${new URL(url).pathname}: ${describe(e)}`);
  }
  const raw = await res.text();
  let body = null;
  try {
    body = raw ? JSON.parse(raw) : null;
  } catch {
    body = null;
  }
  if (!res.ok) {
    const e = body?.error;
    const code = typeof e?.code === "string" ? e.code : `http_${res.status}`;
    const message = typeof e?.message === "string" ? e.message : typeof e === "string" ? e : (body?.message ?? raw);
    throw new ApiError(res.status, code, message || res.statusText);
  }
  return body;
}

// ------------------------------------------------------------------------------ the context

/**
 * Who this tab is: from the URL (?sub=&tenant=&roles=&groups=), so that two tabs can be two
 * users side by side and a reload keeps the user. Defaults to the banner's dev-user, but without
 * the dev token's admin role: a plain user, entitled to course:42 and the chat's room:lobby by the
 * token's groups claim.
 */
function identityFromUrl() {
  const q = new URLSearchParams(location.search);
  return {
    sub: q.get("sub") || "dev-user",
    tenant: q.get("tenant") || "dev",
    roles: q.has("roles") ? list(q.get("roles")) : [],
    groups: q.has("groups") ? list(q.get("groups")) : ["course:42", "room:lobby"],
  };
}

/** @typedef {ReturnType<typeof identityFromUrl>} Identity */
/** @typedef {(n: import("../herald.js").HeraldNotification, meta: {replayed: boolean, history: boolean, polled?: boolean}) => boolean} Handler */

async function createContext() {
  const identity = identityFromUrl();
  const control = `${location.origin}/_herald`;
  const endpoints = await call("GET", `${control}/endpoints`);
  const mint = async (/** @type {Record<string, unknown>} */ claims) =>
    (await call("POST", `${control}/token`, { json: { ttlSeconds: 3600, ...claims } })).token;

  // Tokens are minted on demand and reused for 50 minutes (they live 60).
  /** @type {Map<string, {token: string, at: number}>} */
  const tokens = new Map();
  const cached = async (/** @type {string} */ key, /** @type {() => Promise<string>} */ make) => {
    const hit = tokens.get(key);
    if (hit && Date.now() - hit.at < 50 * 60 * 1000) return hit.token;
    const token = await make();
    tokens.set(key, { token, at: Date.now() });
    return token;
  };
  const userClaims = { sub: identity.sub, tenant: identity.tenant, roles: identity.roles, groups: identity.groups };

  /**
   * Per-user keys in localStorage, so two users in two tabs never share page state; per stack
   * too, like the client's own key (a new `make dev` is a new, empty stack on a new port).
   */
  const storeKey = (/** @type {string} */ what) =>
    `herald-demo:${what}:${endpoints.websocketUrl}:${identity.tenant}:${identity.sub}`;

  const ctx = {
    identity,
    endpoints,
    control,
    storeKey,
    /** A token of this tab's user (the WebSocket gets a fresh one on every connect). */
    userToken: () => cached("user", () => mint(userClaims)),
    freshUserToken: () => mint(userClaims),
    /** A token of a backend service of this tenant: the sender and the job act as producers. */
    serviceToken: () => cached("service", () => mint({ sub: "demo-backend", tenant: identity.tenant, roles: ["service"] })),
    /** The HTTP API as this user. */
    api: async (/** @type {string} */ method, /** @type {string} */ path, /** @type {unknown} */ json) =>
      call(method, endpoints.httpUrl + path, { token: await ctx.userToken(), json }),
    call,
    /**
     * A producer message onto the dispatch queue (the control API does the SendMessage), or
     * through POST /notifications: the two ways services publish.
     * @param {Record<string, unknown>} message @param {"sqs" | "http"} via
     */
    publish: async (message, via = "sqs") => {
      if (via === "http") {
        const res = await call("POST", `${endpoints.httpUrl}/notifications`, { token: await ctx.serviceToken(), json: message });
        return { text: `accepted: 202, id ${res.id}`, messageId: null };
      }
      const res = await call("POST", `${control}/queues/DispatchQueue/messages`, { text: JSON.stringify(message) });
      return { text: `queued: SQS message ${res.messageId.slice(0, 8)}…`, messageId: String(res.messageId) };
    },
    /**
     * What dispatch made of an SQS message: SendMessage cannot refuse a bad notification, dispatch
     * moves it to the dead-letter queue with `reason` and `detail` attributes (and the
     * `sourceMessageId`). Watches that queue for a while; resolves with the dead letter's
     * attributes, or null when none came.
     * @param {string} messageId @param {number} [forMs]
     */
    deadLetter: async (messageId, forMs = 5000) => {
      const deadline = Date.now() + forMs;
      while (Date.now() < deadline) {
        const { messages } = await call("GET", `${control}/queues/DispatchDeadLetterQueue/messages`);
        const found = messages.find((/** @type {any} */ m) => m.attributes.sourceMessageId === messageId);
        if (found) return found.attributes;
        await new Promise((r) => setTimeout(r, 400));
      }
      return null;
    },
    /** @type {HeraldClient} */
    herald: /** @type {any} */ (null),
    /** Where the client starts when nothing is saved: the end of the history the inbox loaded. */
    startCursor: /** @type {string | null} */ (null),
    /** Notification handlers by event: a handler that returns true has consumed it (no toast, no inbox). */
    handlers: /** @type {Map<string, Handler>} */ (new Map()),
    handle(/** @type {string} */ event, /** @type {Handler} */ fn) {
      ctx.handlers.set(event, fn);
    },
    bus: new EventTarget(),
    emit(/** @type {string} */ name, /** @type {unknown} */ detail) {
      ctx.bus.dispatchEvent(new CustomEvent(name, { detail }));
    },
    on(/** @type {string} */ name, /** @type {(detail: any) => void} */ fn) {
      ctx.bus.addEventListener(name, (e) => fn(/** @type {CustomEvent} */ (e).detail));
    },
    log: activityLog(),
    /** Marks a status line: ok (green), error (red, the server's words), or pending. */
    status(/** @type {HTMLElement} */ el, /** @type {string} */ text, /** @type {"ok"|"error"|"pending"} */ kind = "ok") {
      el.textContent = text;
      el.dataset.kind = kind;
    },
  };
  return ctx;
}
/** @typedef {Awaited<ReturnType<typeof createContext>>} Ctx */

function activityLog() {
  const ol = $("#activity-list");
  /** @param {string} text @param {{kind?: string, data?: Record<string, string>}} [opts] */
  return (text, { kind = "info", data = {} } = {}) => {
    ol.prepend(h("li", { class: kind, dataset: data }, h("time", {}, clock(Date.now())), " ", text));
    while (ol.children.length > 200) ol.lastElementChild?.remove();
  };
}

// ------------------------------------------------------------------------------ panels

/** Who am I, and the switcher: a new user is a new URL (and so a new client). */
function identityPanel(/** @type {Ctx} */ ctx) {
  const form = $("#whoami");
  const { sub, tenant, roles, groups } = ctx.identity;
  form.sub.value = sub;
  form.tenant.value = tenant;
  form.roles.value = roles.join(",");
  form.groups.value = groups.join(",");
  const target = () => {
    const q = new URLSearchParams({
      sub: form.sub.value.trim(), tenant: form.tenant.value.trim(),
      roles: list(form.roles.value).join(","), groups: list(form.groups.value).join(","),
    });
    return `${location.pathname}?${q}`;
  };
  const link = $("#new-tab");
  const sync = () => (link.href = target());
  form.addEventListener("input", sync);
  sync();
  form.addEventListener("submit", (/** @type {Event} */ e) => {
    e.preventDefault();
    location.assign(target());
  });
  document.title = `Herald demo — ${sub}@${tenant}`;
}

/**
 * The badge: the client's states (connecting → syncing → ready, reconnecting, and polling while
 * the WebSocket cannot be opened and the client polls GET /notifications/missed). And the drop
 * button.
 */
function connectionPanel(/** @type {Ctx} */ ctx) {
  const badge = $("#badge");
  const detail = $("#badge-detail");
  let openedAt = 0;
  const show = (/** @type {string} */ s, /** @type {string} */ text = "") => {
    badge.dataset.state = s;
    badge.textContent = s;
    detail.textContent = text;
  };
  ctx.herald.on("state", (/** @type {import("../herald.js").StateChange} */ change) => {
    if (change.state === "syncing" && change.previous === "connecting") openedAt = Date.now();
    let text = "";
    if (change.state === "reconnecting") {
      const why = change.code ? ` (closed ${change.code}${change.reason ? `: ${change.reason}` : ""})` : "";
      text = `attempt ${change.attempt}, next in ${((change.delayMs ?? 0) / 1000).toFixed(1)} s${why}`;
    } else if (change.state === "syncing") text = "re-joining groups, resuming";
    else if (change.state === "polling") text = "WebSocket down: GET /notifications/missed every 3 s";
    show(change.state, text);
    ctx.log(`connection: ${change.state}${text ? ` — ${text}` : ""}`, { kind: "state", data: { state: change.state } });
    ctx.emit("state", change);
  });

  const drop = $("#drop");
  drop.addEventListener("click", async () => {
    drop.disabled = true;
    try {
      // The control API lists every open connection; ours is this user's one that opened
      // closest to when our socket did (another tab of the same user opened at another time).
      const mine = (await ctx.call("GET", `${ctx.control}/connections`)).filter(
        (/** @type {any} */ c) => c.user === ctx.identity.sub && c.tenant === ctx.identity.tenant);
      if (!mine.length) throw new Error("no open connection of this user");
      mine.sort((/** @type {any} */ a, /** @type {any} */ b) => Math.abs(a.connectedAt - openedAt) - Math.abs(b.connectedAt - openedAt));
      const id = mine[0].connectionId;
      await ctx.call("POST", `${ctx.control}/connections/${encodeURIComponent(id)}/drop`);
      ctx.log(`dropped connection ${id} (no close frame): watch it reconnect and resume`, { kind: "state" });
    } catch (e) {
      ctx.log(`drop failed: ${describe(e)}`, { kind: "error" });
    } finally {
      drop.disabled = false;
    }
  });
}

/** Toasts for live (and missed-while-reconnecting) notifications. */
function toaster(/** @type {Ctx} */ ctx) {
  const box = $("#toasts");
  /** @param {import("../herald.js").HeraldNotification} n @param {{replayed: boolean, polled?: boolean}} meta */
  return (n, meta) => {
    const how = meta.polled ? "polled while the WebSocket was down" : meta.replayed ? "missed while reconnecting" : "";
    const toast = h("div", { class: "toast", role: "status", dataset: { id: n.id } },
      h("button", { class: "close", type: "button", "aria-label": "dismiss", onclick: () => toast.remove() }, "×"),
      h("strong", {}, n.title || n.event),
      n.body ? h("p", {}, n.body) : null,
      h("small", {}, `${n.topic} · ${n.event}${how ? ` · ${how}` : ""}`));
    box.prepend(toast);
    setTimeout(() => toast.remove(), 8000);
    ctx.log(`toast: “${n.title || n.event}” (${n.topic}${how ? `, ${how}` : ", live"})`, { kind: "notification", data: { toastId: n.id } });
  };
}

/**
 * The inbox: the retained history from GET /notifications/missed at start, then everything the
 * client delivers. It is keyed by id, so a notification the client replays after a reconnect (or
 * that the history already listed) is never shown twice. The unread count is the server's; which
 * items were read here is remembered by this browser (the API has no per-item read flag).
 */
function inboxPanel(/** @type {Ctx} */ ctx) {
  const ol = $("#inbox-list");
  const empty = $("#inbox-empty");
  const unread = $("#unread");
  const statusEl = $("#inbox-status");
  /** @type {Map<string, {n: any, el: HTMLElement}>} */
  const items = new Map();
  const readKey = ctx.storeKey("read");
  const read = new Set(JSON.parse(localStorage.getItem(readKey) || "[]"));
  const saveRead = () => localStorage.setItem(readKey, JSON.stringify([...read].slice(-1000)));

  // Bursts of notifications coalesce into one request; of overlapping requests only the latest
  // answer is shown (an older one finishing last would show a stale count).
  let refreshing = /** @type {ReturnType<typeof setTimeout> | null} */ (null);
  let latest = 0;
  const refreshUnread = () => {
    if (refreshing) return;
    refreshing = setTimeout(async () => {
      refreshing = null;
      const mine = ++latest;
      try {
        const { count, capped } = await ctx.api("GET", "/notifications/unread-count");
        if (mine !== latest) return;
        unread.textContent = capped ? `${count}+` : String(count);
        unread.dataset.count = String(count);
      } catch (e) {
        ctx.status(statusEl, `unread count: ${describe(e)}`, "error");
      }
    }, 100);
  };

  const markRead = async (/** @type {string} */ id) => {
    const item = items.get(id);
    try {
      // ack over the WebSocket (queued while reconnecting); POST /notifications/read does the same.
      await ctx.herald.ack([id]);
      read.add(id);
      saveRead();
      item?.el.classList.replace("unread", "read");
      ctx.status(statusEl, "marked read");
    } catch (e) {
      ctx.status(statusEl, `mark read: ${describe(e)}`, "error");
    }
    refreshUnread();
  };

  const render = (/** @type {any} */ n) => {
    const isRead = read.has(n.id);
    const el = h("li", { class: `item ${isRead ? "read" : "unread"}`, dataset: { id: n.id, cursor: n.cursor } },
      h("div", { class: "item-head" },
        h("strong", { class: "title" }, n.title || n.event),
        h("span", { class: "topic" }, n.topic),
        h("time", { datetime: n.createdAt }, n.createdAt ? clock(n.createdAt) : "")),
      n.body ? h("div", { class: "body" }, n.body) : null,
      h("button", { type: "button", class: "mark-read", onclick: () => markRead(n.id) }, "Mark read"));
    return el;
  };

  /** Adds a notification (newest first by cursor); false when it was already there. */
  const add = (/** @type {any} */ n) => {
    const had = items.get(n.id);
    // A producer's update: the same id with a higher version replaces the entry (#33).
    if (had && (n.version ?? 1) > (had.n.version ?? 1)) {
      const el = render(n);
      el.classList.add("updated");
      had.el.replaceWith(el);
      items.set(n.id, { n, el });
      return true;
    }
    if (had) return false;
    const el = render(n);
    // Newest first, by cursor: live frames and replays arrive out of cursor order.
    const after = [...ol.children].find((li) => li.dataset.cursor < n.cursor);
    ol.insertBefore(el, after ?? null);
    items.set(n.id, { n, el });
    empty.hidden = true;
    return true;
  };

  $("#mark-all").addEventListener("click", async () => {
    const newest = [...items.values()].reduce((m, it) => (it.n.cursor > m ? it.n.cursor : m), "");
    // Frames that came without a cursor (before the catch-up, or claimed just before a read)
    // are marked by id: `upTo` cannot name them.
    const bare = [...items.values()].filter((it) => !it.n.cursor).map((it) => it.n.id).slice(-100);
    if (!newest && bare.length === 0) return;
    const body = { ...(newest ? { upTo: newest } : {}), ...(bare.length ? { ids: bare } : {}) };
    try {
      await ctx.api("POST", "/notifications/read", body);
      for (const [id, it] of items) {
        read.add(id);
        it.el.classList.replace("unread", "read");
      }
      saveRead();
      ctx.status(statusEl, "all marked read");
    } catch (e) {
      ctx.status(statusEl, `mark all read: ${describe(e)}`, "error");
    }
    refreshUnread();
  });

  // The user's other devices read (ack, mark all read): this one follows, with their count.
  // Wired once the client exists (`follow`, from main).
  const markShown = (/** @type {string} */ id) => {
    read.add(id);
    items.get(id)?.el.classList.replace("unread", "read");
  };
  const follow = () => {
  ctx.herald.on("read", (/** @type {any} */ r) => {
    for (const id of r.ids ?? []) markShown(id);
    if (r.upTo) for (const [id, it] of items) if (it.n.cursor && it.n.cursor <= r.upTo) markShown(id);
    saveRead();
    ctx.status(statusEl, `read on another device (${r.unread} unread)`);
  });
  ctx.herald.on("unread", (/** @type {any} */ u) => {
    unread.textContent = String(u.count);
    unread.dataset.count = String(u.count);
  });
  // The producer took one back: it leaves every device's inbox.
  ctx.herald.on("recalled", (/** @type {any} */ r) => {
    const it = items.get(r.id);
    it?.el.remove();
    items.delete(r.id);
    empty.hidden = items.size > 0;
    if (it) ctx.status(statusEl, "a notification was recalled");
    refreshUnread();
  });
  };

  /** The retained history, before the client connects; returns the cursor to start the client at. */
  const loadHistory = async () => {
    let since = "";
    let cursor = null;
    for (let page = 0; page < 10; page += 1) {
      const res = await ctx.api("GET", `/notifications/missed?limit=200${since ? `&since=${encodeURIComponent(since)}` : ""}`);
      for (const n of res.items) {
        if (n.type === "recalled") continue; // a recall's tombstone: nothing to show
        if (!consumedByHandler(ctx, n, { replayed: true, history: true })) add(n);
      }
      cursor = res.cursor || cursor;
      if (!res.next) break;
      since = res.next;
    }
    refreshUnread();
    return cursor;
  };

  return { add, has: (/** @type {string} */ id) => items.has(id), refreshUnread, loadHistory, follow };
}

/** The user's notification preferences (GET/PUT /preferences), edited as JSON. */
function preferencesPanel(/** @type {Ctx} */ ctx) {
  const text = /** @type {HTMLTextAreaElement} */ ($("#prefs-json"));
  const statusEl = $("#prefs-status");
  const load = async () => {
    try {
      const { source, ...prefs } = await ctx.herald.getPreferences();
      text.value = JSON.stringify(prefs, null, 2);
      ctx.status(statusEl, `source: ${source}`);
    } catch (e) {
      ctx.status(statusEl, `load: ${describe(e)}`, "error");
    }
  };
  $("#prefs-save").addEventListener("click", async () => {
    try {
      const saved = await ctx.herald.setPreferences(JSON.parse(text.value || "{}"));
      text.value = JSON.stringify(saved, null, 2);
      ctx.status(statusEl, "saved");
    } catch (e) {
      ctx.status(statusEl, describe(e), "error");
    }
  });
  $("#prefs-load").addEventListener("click", () => void load());
  return { load };
}

/** Lets an event handler (e.g. the job bar) take a notification instead of the inbox. */
function consumedByHandler(/** @type {Ctx} */ ctx, /** @type {any} */ n, /** @type {any} */ meta) {
  const handler = ctx.handlers.get(n.event);
  return Boolean(handler && handler(n, meta));
}

/**
 * The sender, as a backend would publish. SEND_OPTIONS are the producer fields beyond
 * to/event/title/body: each renders its inputs and writes its field into the message. A field the
 * server accepts later (collapse) is one more entry here.
 */
const SEND_OPTIONS = [
  {
    name: "deliverAt",
    render: () =>
      h("label", { class: "row", title: "deliverAt: Herald holds it (SQS delay up to 15 min, EventBridge Scheduler beyond) — a reminder" },
        h("span", {}, "deliver in"), h("input", { name: "delay", type: "number", min: "0", max: "3600", step: "1", placeholder: "0", size: "5" }), "seconds"),
    /** @param {Record<string, unknown>} message @param {HTMLFormElement} form */
    apply: (message, form) => {
      const seconds = Number(/** @type {any} */ (form.elements).delay.value || 0);
      if (seconds > 0) message.deliverAt = new Date(Date.now() + seconds * 1000).toISOString();
    },
  },
];

function senderPanel(/** @type {Ctx} */ ctx) {
  const form = /** @type {HTMLFormElement} */ ($("#send-form"));
  const f = /** @type {any} */ (form.elements);
  const options = $("#send-options");
  for (const option of SEND_OPTIONS) options.append(option.render());
  const preview = $("#send-preview");
  const statusEl = $("#send-status");

  const message = () => {
    const to = f.to.value;
    /** @type {Record<string, unknown>} */
    const m = { tenant: ctx.identity.tenant };
    m.to = to === "me" ? { user: ctx.identity.sub }
      : to === "user" ? { user: f.toUser.value.trim() }
      : to === "group" ? { group: f.toGroup.value.trim() }
      : { tenant: true };
    m.event = f.event.value.trim();
    m.title = f.title.value;
    if (f.body.value) m.body = f.body.value;
    for (const option of SEND_OPTIONS) option.apply(m, form);
    return m;
  };
  const update = () => (preview.textContent = JSON.stringify(message(), null, 2));
  form.addEventListener("input", update);
  // Typing in the user/group field picks that audience.
  f.toUser.addEventListener("input", () => (f.to.value = "user"));
  f.toGroup.addEventListener("input", () => (f.to.value = "group"));
  update();

  let sends = 0;
  form.addEventListener("submit", async (/** @type {Event} */ e) => {
    e.preventDefault();
    const m = message();
    const send = ++sends;
    ctx.status(statusEl, "sending…", "pending");
    try {
      const { text, messageId } = await ctx.publish(m, f.via.value);
      ctx.status(statusEl, m.deliverAt ? `${text}; due ${clock(String(m.deliverAt))}` : text);
      ctx.log(`sent “${m.title}” to ${JSON.stringify(m.to)} via ${f.via.value === "sqs" ? "SQS" : "HTTP"}`);
      // The HTTP API answers a bad message itself (400 and why); over SQS the answer is a dead letter.
      const dead = messageId ? await ctx.deadLetter(messageId) : null;
      if (dead) {
        const why = `dead-lettered by dispatch: ${dead.reason}: ${dead.detail}`;
        if (send === sends) ctx.status(statusEl, why, "error"); // not over a later send's status
        ctx.log(`“${m.title}” ${why}`, { kind: "error" });
      }
    } catch (err) {
      ctx.status(statusEl, describe(err), "error");
      ctx.log(`send failed: ${describe(err)}`, { kind: "error" });
    }
  });
}

/** Join and leave; the server decides, and its refusal is shown as it gave it. */
function groupsPanel(/** @type {Ctx} */ ctx) {
  const form = $("#join-form");
  const statusEl = $("#join-status");
  const ul = $("#group-list");
  const datalist = $("#joined-groups");
  const key = ctx.storeKey("groups");
  $("#own-group").textContent = `user:${ctx.identity.sub}`;

  const render = () => {
    const kept = ctx.herald.groups;
    localStorage.setItem(key, JSON.stringify(kept));
    ul.replaceChildren(
      h("li", { class: "chip fixed", title: "joined automatically" }, `user:${ctx.identity.sub}`),
      h("li", { class: "chip fixed", title: "joined automatically" }, "tenant"),
      ...kept.map((g) => h("li", { class: "chip", dataset: { group: g } }, g,
        h("button", { type: "button", class: "leave", title: `leave ${g}`, onclick: () => leave(g) }, "leave"))));
    datalist.replaceChildren(...[...new Set([...kept, ...ctx.identity.groups])].map((g) => h("option", { value: g })));
    ctx.emit("groups", kept);
  };
  const leave = async (/** @type {string} */ group) => {
    try {
      await ctx.herald.leave(group);
      ctx.status(statusEl, `left ${group}`);
    } catch (e) {
      ctx.status(statusEl, describe(e), "error");
    }
    render();
  };
  form.addEventListener("submit", async (/** @type {Event} */ e) => {
    e.preventDefault();
    const group = form.group.value.trim();
    ctx.status(statusEl, `joining ${group}…`, "pending");
    try {
      await ctx.herald.join(group);
      ctx.status(statusEl, `joined ${group}`);
      ctx.log(`joined ${group}`);
    } catch (err) {
      // e.g. "forbidden: ..." — the server's code and message, not a paraphrase.
      ctx.status(statusEl, describe(err), "error");
      ctx.log(`join ${group} refused: ${describe(err)}`, { kind: "error" });
    }
    render();
  });
  ctx.herald.on("left", (/** @type {any} */ frame) => {
    ctx.log(`the server took ${frame.group} away (${frame.reason ?? "left"})`, { kind: "error" });
    render();
  });
  ctx.herald.on("error", (/** @type {HeraldError} */ err) => {
    if (err.group) render(); // a re-join the server refused: the client forgot the group
  });
  render();
}

/** Saved groups of this user (joined again on load, as the client re-joins after reconnects). */
function savedGroups(/** @type {Ctx} */ ctx) {
  try {
    const saved = JSON.parse(localStorage.getItem(ctx.storeKey("groups")) || "[]");
    return Array.isArray(saved) ? saved.filter((g) => typeof g === "string" && g) : [];
  } catch {
    return [];
  }
}

/** Presence of one of the groups this tab is in, polled while visible and connected. */
function presencePanel(/** @type {Ctx} */ ctx) {
  const form = $("#presence-form");
  const select = form.group;
  const ul = $("#presence-list");
  const statusEl = $("#presence-status");
  const fill = (/** @type {string[]} */ groups) => {
    const current = select.value;
    // The whole tenant's presence is for privileged callers (docs/security.md): others list
    // their own and their groups'.
    const privileged = ctx.identity.roles.some((r) => r === "service" || r === "admin");
    const names = [`user:${ctx.identity.sub}`, ...groups, ...(privileged ? ["tenant"] : [])];
    select.replaceChildren(...names.map((g) => h("option", { value: g }, g)));
    if (names.includes(current)) select.value = current;
  };
  const refresh = async () => {
    const group = select.value;
    try {
      /** @type {string[]} */
      const users = [];
      let connections = 0;
      let after = "";
      do {
        const page = await ctx.api("GET", `/groups/${encodeURIComponent(group)}/presence${after ? `?after=${encodeURIComponent(after)}` : ""}`);
        users.push(...page.users);
        connections += page.connections;
        after = page.next;
      } while (after);
      const unique = [...new Set(users)].sort();
      ul.replaceChildren(...unique.map((u) => h("li", { class: `chip${u === ctx.identity.sub ? " me" : ""}` }, u)));
      ctx.status(statusEl, `${unique.length} user${unique.length === 1 ? "" : "s"}, ${connections} connection${connections === 1 ? "" : "s"}`);
    } catch (e) {
      ctx.status(statusEl, describe(e), "error");
    }
  };
  ctx.on("groups", fill);
  fill(ctx.herald.groups);
  form.addEventListener("submit", (/** @type {Event} */ e) => {
    e.preventDefault();
    void refresh();
  });
  select.addEventListener("change", () => void refresh());
  ctx.on("state", (/** @type {any} */ change) => {
    if (change.state === "ready") void refresh();
  });
  setInterval(() => {
    if (document.visibilityState === "visible" && ctx.herald.ready) void refresh();
  }, 4000);
}

/**
 * A job that reports progress with ordinary notifications. The page plays the backend (a real one
 * would send these from its worker); the handler draws the bar, acks the updates (they are not
 * worth an unread badge) and lets the last one through as a toast.
 */
function jobPanel(/** @type {Ctx} */ ctx) {
  const bar = $("#job-bar");
  const statusEl = $("#job-status");
  const button = $("#job-start");
  /** @type {Map<string, number>} */
  const progress = new Map();
  ctx.handle("job.progress", (n, meta) => {
    if (meta.history) return true; // old jobs: not worth a bar
    const data = /** @type {any} */ (n.data ?? {});
    const percent = Math.max(progress.get(data.job) ?? 0, Number(data.percent) || 0);
    progress.set(data.job, percent); // updates may arrive out of order: the bar only moves forward
    bar.value = percent;
    ctx.status(statusEl, `${data.job}: ${percent}%`, percent >= 100 ? "ok" : "pending");
    if (percent < 100) {
      ctx.herald.ack([n.id]).catch(() => {}); // best effort: an unacked update only counts as unread
      return true;
    }
    return false; // the final one: inbox and toast
  });
  button.addEventListener("click", async () => {
    button.disabled = true;
    const job = `export-${Date.now().toString(36)}`;
    try {
      for (let percent = 0; percent <= 100; percent += 20) {
        const done = percent === 100;
        await ctx.publish({
          tenant: ctx.identity.tenant, to: { user: ctx.identity.sub }, event: "job.progress",
          title: done ? "Report export finished" : `Report export ${percent}%`,
          ...(done ? { body: "Your CSV is ready.", link: "#" } : {}),
          data: { job, percent },
        });
        // Pacing of the pretend backend, so the bar visibly moves; nothing waits on it.
        if (!done) await new Promise((r) => setTimeout(r, 600));
      }
    } catch (e) {
      ctx.status(statusEl, `job: ${describe(e)}`, "error");
    } finally {
      button.disabled = false;
    }
  });
}

/**
 * A chat room: its history on open and when scrolled to the top (GET /groups/{group}/history,
 * page by page backwards), live messages and typing (client publish, the first logged, the
 * second ephemeral), "seen by N" from read receipts (this page marks what it shows read; the
 * others' receipts arrive as "receipt" events), and files (upload through a presigned PUT, the
 * key in the message's data; opening one asks for a presigned GET).
 */
function chatPanel(/** @type {Ctx} */ ctx) {
  const roomForm = $("#chat-room");
  const form = /** @type {HTMLFormElement} */ ($("#chat-form"));
  const log = $("#chat-log");
  const ol = $("#chat-messages");
  const older = $("#chat-older");
  const typingEl = $("#chat-typing");
  const statusEl = $("#chat-status");
  const me = ctx.identity.sub;
  /** @type {{room: string | null, next: string | null, loading: boolean, ids: Set<string>, receipts: Map<string, string>, readUpTo: string, readTimer: any, typingTimer: any}} */
  const st = { room: null, next: null, loading: false, ids: new Set(), receipts: new Map(), readUpTo: "", readTimer: null, typingTimer: null };

  const size = (/** @type {number} */ n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`);

  /** One message as a list item (ids keep it unique; the cursor orders it). */
  const render = (/** @type {any} */ n) => {
    const from = n.from?.user ?? "(service)";
    const file = n.data && typeof n.data === "object" ? n.data.file : null;
    const li = h("li", { class: from === me ? "mine" : "", dataset: { id: n.id, cursor: n.cursor ?? "", from } },
      h("span", { class: "who" }, from), n.body ?? n.title ?? "");
    if (file && typeof file.key === "string") {
      const open = h("button", { type: "button", class: "linkish file", dataset: { key: file.key } }, `📎 ${file.name ?? "file"} (${size(Number(file.size) || 0)})`);
      open.addEventListener("click", async () => {
        try {
          const d = await ctx.herald.download(file.key);
          // A short-lived presigned GET; served as an attachment, so it is saved, never rendered here.
          open.replaceWith(h("a", { class: "file file-link", href: d.download.url, target: "_blank", rel: "noopener", download: d.name }, `⬇ ${d.name}`));
        } catch (e) {
          ctx.status(statusEl, `open ${file.name}: ${describe(e)}`, "error");
        }
      });
      li.append(open);
    }
    return li;
  };

  /** Updates "seen by N" under my newest message that has a cursor. */
  const drawSeen = () => {
    for (const el of ol.querySelectorAll(".seen")) el.remove();
    const mine = [...ol.querySelectorAll("li.mine")].filter((li) => li.dataset.cursor);
    const last = mine[mine.length - 1];
    if (!last) return;
    const seen = [...st.receipts].filter(([user, upTo]) => user !== me && upTo >= last.dataset.cursor).length;
    last.append(h("span", { class: "seen", dataset: { seen: String(seen) } }, seen ? `✓ seen by ${seen}` : "sent"));
  };

  /** Marks the newest shown message read, at most once a second (the server coalesces too). */
  const markRead = () => {
    const cursors = [...ol.querySelectorAll("li")].map((li) => li.dataset.cursor).filter(Boolean);
    const newest = cursors.sort().pop();
    if (!st.room || !newest || newest <= st.readUpTo || st.readTimer) return;
    const room = st.room;
    st.readTimer = setTimeout(async () => {
      st.readTimer = null;
      try {
        const read = await ctx.herald.markRoomRead(room, newest);
        if (read.upTo > st.readUpTo) st.readUpTo = read.upTo;
      } catch (e) {
        ctx.log(`read ${room}: ${describe(e)}`, { kind: "error" });
      }
      markRead();
    }, st.readUpTo ? 1000 : 0);
  };

  /** Adds messages, newest last; `before` puts them above what is shown (older pages). */
  const add = (/** @type {any[]} */ items, before = false) => {
    const fresh = items.filter((n) => n && !st.ids.has(n.id));
    for (const n of fresh) st.ids.add(n.id);
    const els = fresh.map(render);
    if (before) ol.prepend(...els);
    else ol.append(...els);
    return els.length;
  };

  const loadOlder = async () => {
    if (!st.room || !st.next || st.loading) return;
    st.loading = true;
    const room = st.room;
    try {
      const page = await ctx.herald.history(room, { before: st.next, limit: 20 });
      if (st.room !== room) return;
      const height = log.scrollHeight;
      add([...page.items].reverse(), true);
      log.scrollTop += log.scrollHeight - height; // keep what was in view where it was
      st.next = page.next;
      older.hidden = !st.next;
    } catch (e) {
      ctx.status(statusEl, `history: ${describe(e)}`, "error");
    } finally {
      st.loading = false;
    }
  };

  const open = async (/** @type {string} */ room) => {
    Object.assign(st, { room, next: null, ids: new Set(), receipts: new Map(), readUpTo: "" });
    ol.replaceChildren();
    older.hidden = true;
    ctx.status(statusEl, `opening ${room}…`, "pending");
    try {
      await ctx.herald.join(room);
      const [page, receipts] = await Promise.all([ctx.herald.history(room, { limit: 20 }), ctx.herald.receipts(room)]);
      if (st.room !== room) return;
      if (receipts.mode === "members") for (const r of receipts.receipts) st.receipts.set(r.user, r.upTo);
      add([...page.items].reverse());
      st.next = page.next;
      older.hidden = !st.next;
      log.scrollTop = log.scrollHeight;
      drawSeen();
      markRead();
      ctx.status(statusEl, `${room}: ${page.items.length} recent message${page.items.length === 1 ? "" : "s"}`);
      roomForm.dataset.open = room;
    } catch (e) {
      st.room = null;
      ctx.status(statusEl, `${room}: ${describe(e)}`, "error");
    }
  };

  ctx.handle("chat.message", (n) => {
    if (n.topic !== st.room) return false; // another room's message: the inbox shows it
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    if (add([n]) && atBottom) log.scrollTop = log.scrollHeight;
    drawSeen();
    if (document.visibilityState === "visible") markRead();
    return true;
  });
  ctx.handle("typing", (n) => {
    if (n.topic !== st.room || !n.from) return true;
    typingEl.textContent = `${n.from.user} is typing…`;
    clearTimeout(st.typingTimer);
    st.typingTimer = setTimeout(() => (typingEl.textContent = ""), 3000);
    return true;
  });
  ctx.herald.on("receipt", (/** @type {any} */ r) => {
    if (r.group !== st.room) return;
    const known = st.receipts.get(r.user);
    if (!known || r.upTo > known) st.receipts.set(r.user, r.upTo);
    drawSeen();
  });

  roomForm.addEventListener("submit", (/** @type {Event} */ e) => {
    e.preventDefault();
    void open(String(roomForm.room.value).trim());
  });
  older.addEventListener("click", () => void loadOlder());
  log.addEventListener("scroll", () => {
    if (log.scrollTop < 4) void loadOlder();
  });
  form.text.addEventListener("input", () => {
    if (st.room && form.text.value) ctx.herald.typing(st.room);
  });
  form.addEventListener("submit", async (/** @type {Event} */ e) => {
    e.preventDefault();
    const room = st.room;
    const text = String(form.text.value).trim();
    const file = form.file.files?.[0] ?? null;
    if (!room || (!text && !file)) return;
    const send = $("#chat-send");
    send.disabled = true;
    try {
      /** @type {Record<string, unknown> | undefined} */
      let data;
      if (file) {
        ctx.status(statusEl, `uploading ${file.name}…`, "pending");
        data = { file: await ctx.herald.upload(room, file) };
      }
      const body = text || `shared ${file?.name}`;
      const sent = await ctx.herald.publish(room, "chat.message", { body, data });
      // My own message does not come back to this connection: shown from the answer.
      add([{ id: sent.id, cursor: sent.cursor, topic: room, event: "chat.message", body, data, from: { user: me } }]);
      log.scrollTop = log.scrollHeight;
      drawSeen();
      form.reset();
      ctx.status(statusEl, file ? `shared ${file.name}` : "sent");
    } catch (e) {
      ctx.status(statusEl, `send: ${describe(e)}`, "error");
    } finally {
      send.disabled = false;
    }
  });
}

// ------------------------------------------------------------------------------ start

async function main() {
  /** @type {Ctx} */
  let ctx;
  try {
    ctx = await createContext();
  } catch (e) {
    const fatal = $("#fatal");
    fatal.hidden = false;
    fatal.textContent = `Cannot reach the local stack's control API (${describe(e)}). Is \`make dev\` running, and is this page served by it?`;
    $("#badge").textContent = "offline";
    return;
  }
  // Panels that do not need the connection first: the job panel's event handler must be in
  // place before the history is loaded, so that old progress updates stay out of the inbox.
  identityPanel(ctx);
  senderPanel(ctx);
  jobPanel(ctx);
  const toast = toaster(ctx);
  const inbox = inboxPanel(ctx);

  // Every notification goes through here: a handler may take it (the job bar); otherwise it is
  // added to the inbox and toasted if it was not there already — the page's half of "no
  // duplicate toasts" (the client already drops copies by id).
  const deliver = (/** @type {any} */ n, /** @type {any} */ meta) => {
    if (consumedByHandler(ctx, n, meta)) return;
    if (!inbox.add(n)) return;
    if (!meta.history) toast(n, meta);
    inbox.refreshUnread();
  };

  try {
    ctx.startCursor = await inbox.loadHistory();
  } catch (e) {
    ctx.log(`history: ${describe(e)}`, { kind: "error" });
  }

  ctx.herald = new HeraldClient({
    url: ctx.endpoints.websocketUrl,
    getToken: () => ctx.freshUserToken(),
    groups: savedGroups(ctx),
    // Where a first visit starts: the history above already shows everything before it. After
    // that the client's saved resume point (localStorage, per user) wins.
    initialCursor: ctx.startCursor || null,
    // The stack is local: come back quickly after a drop (defaults: 1 s doubling to 30 s).
    backoff: { initialMs: 500, maxMs: 5000 },
    // Where the WebSocket cannot be opened, the client polls the HTTP API (state "polling").
    httpUrl: ctx.endpoints.httpUrl,
    pollIntervalMs: 3000,
  });
  ctx.herald.on("notification", deliver);
  ctx.herald.on("error", (/** @type {HeraldError} */ err) =>
    ctx.log(`client error ${err.code}: ${err.message}`, { kind: "error", data: { code: err.code } }));
  // The resume point was older than the server keeps notifications: some may have expired
  // unseen. A real app reloads its inbox from its own backend here.
  ctx.herald.on("gap", (/** @type {any} */ gap) =>
    ctx.log(`gap: notifications older than the server's retention may be missing (${gap.via} from ${gap.since}); reload the inbox from your backend`, {
      kind: "error",
      data: { gap: true },
    }));

  connectionPanel(ctx);
  groupsPanel(ctx);
  presencePanel(ctx);
  chatPanel(ctx);
  inbox.follow();
  void preferencesPanel(ctx).load();
  // For people poking at it from the devtools console.
  Object.assign(window, { herald: ctx.herald, demo: ctx });
}

void main();
