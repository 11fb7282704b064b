// @ts-check
/**
 * Herald browser client: a dependency-free ES module (no build step, no framework).
 *
 * Speaks the client ↔ WebSocket contract of docs/DESIGN.md:
 * - authenticates with the JWT as a subprotocol (`["herald.v1", token]`) or `?token=`;
 *   `getToken()` is called before every (re)connect, so a refreshed token is always used;
 * - reconnects with exponential backoff and jitter (capped, reset once connected again);
 * - after every (re)connect re-joins the groups the app joined, then `resume`s from its resume
 *   point (kept in a storage adapter, `localStorage` by default), paging while `more`;
 * - the resume point is what the server answered to a `resume` (`resumed.cursor`). Any cursor
 *   the server hands out is a safe resume point (the server reads a lag before it), but this
 *   one re-reads least. While connected it resumes in the background after every `syncEvery`
 *   live notifications, listing the ids it holds (`have`) so they are not sent again; pages
 *   continue with the server's `next` page token (`page`);
 * - emits `gap` when the server says the resume point is older than its retention window
 *   (notifications may have expired unseen): the app should reload from its own backend;
 * - delivers every notification once: deduplicated by `id` (bounded LRU), so replays and
 *   at-least-once redeliveries never show a duplicate toast;
 * - request/response frames matched by `ref`, with timeouts: `join`, `leave`, `ack`, `ping`,
 *   `resume` return promises that reject with a {@link HeraldError} carrying the server's `code`;
 * - sends a keep-alive `ping` after ~9 idle minutes (API Gateway closes connections idle for
 *   10), only while the page is visible when there is a `document`;
 * - refuses frames over 32 KB (API Gateway's limit) before sending them;
 * - forgets a group the server takes away (`{type:"left", group, reason}` without `ref`, e.g.
 *   after an unsubscribe) and emits `left`;
 * - where the WebSocket cannot be opened (a proxy that blocks the upgrade) and `httpUrl` is
 *   given: polls `GET /notifications/missed` with the same resume point, dedupe and events
 *   (state `polling`), keeps trying the socket in the background, and switches back to it when
 *   it opens;
 * - `enablePush()` registers a service worker (client/push-sw.js is a sample), subscribes with
 *   the PushManager and registers the subscription with Herald (`PUT /push/subscriptions`), so
 *   that notifications sent with `"push"` reach the user while no page is connected;
 *   `disablePush()` undoes it.
 *
 * Types are in herald.d.ts; the JSDoc here mirrors them.
 */

import { HeraldError, errText, reportListenerError } from "./lib/errors.js";
import { MAX_ACK_IDS, REF_ALLOWANCE, SUBPROTOCOL, checkFrameSize, laterCursor } from "./lib/protocol.js";

export { SUBPROTOCOL, MAX_FRAME_BYTES, MAX_ACK_IDS } from "./lib/protocol.js";
export { HeraldError } from "./lib/errors.js";

/** @type {Readonly<Required<import("./herald.js").HeraldBackoff>>} */
const DEFAULT_BACKOFF = Object.freeze({ initialMs: 1000, maxMs: 30000, factor: 2 });
/**
 * @typedef {{tokenTransport: "subprotocol" | "query", requestTimeoutMs: number, connectTimeoutMs: number,
 *   pingIntervalMs: number, dedupeSize: number, persistIds: number, replayHistory: boolean,
 *   tenantClaim: string, autoConnect: boolean, syncEvery: number, pollAfterFailures: number,
 *   pollIntervalMs: number}} Defaults
 */
/** @type {Readonly<Defaults>} */
const DEFAULTS = Object.freeze({
  tokenTransport: "subprotocol",
  requestTimeoutMs: 10000,
  connectTimeoutMs: 15000,
  pingIntervalMs: 9 * 60 * 1000,
  dedupeSize: 1000,
  persistIds: 200,
  replayHistory: true,
  tenantClaim: "tenant",
  autoConnect: true,
  syncEvery: 50,
  pollAfterFailures: 2,
  pollIntervalMs: 5000,
});
/** Notifications a poll asks for per page (the API's page limit is larger). */
const POLL_PAGE = 100;
const STORAGE_VERSION = 1;
/** Consecutive `resume` pages that make no progress before giving up until the next connect. */
const MAX_RESUME_STALLS = 3;
/** Consecutive `resume` pages that deliver nothing (while the cursor moves) before giving up. */
const MAX_EMPTY_RESUME_PAGES = 20;
/** Times a sync request over the user's work budget (`rate_limited`) waits and is sent again. */
const MAX_RATE_LIMITED_WAITS = 8;
/** The longest one such wait, whatever the server says. */
const MAX_RATE_LIMITED_WAIT_MS = 60_000;
const noop = () => {};

/**
 * The delay before reconnect attempt `attempt` (1-based): exponential, capped at `maxMs`, with
 * "equal jitter" (a random point in the upper half) so that clients dropped together do not
 * come back together.
 * @param {number} attempt
 * @param {import("./herald.js").HeraldBackoff} [backoff]
 * @param {() => number} [random]
 * @returns {number}
 */
export function backoffDelay(attempt, backoff = {}, random = Math.random) {
  const { initialMs, maxMs, factor } = { ...DEFAULT_BACKOFF, ...backoff };
  const ceiling = Math.min(maxMs, initialMs * Math.pow(factor, Math.max(0, attempt - 1)));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * The JWT's payload, unverified (only used to key local state per user).
 * @param {string} token
 * @returns {Record<string, unknown> | null}
 */
function jwtPayload(token) {
  try {
    const part = token.split(".")[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((part.length + 3) % 4);
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const payload = JSON.parse(new TextDecoder().decode(bytes));
    return payload && typeof payload === "object" ? payload : null;
  } catch {
    return null;
  }
}

/** `localStorage` when the environment has a working one (it throws in some sandboxes). */
function defaultStorage() {
  try {
    const s = /** @type {any} */ (globalThis).localStorage;
    if (s && typeof s.getItem === "function") {
      const probe = "__herald_probe__";
      s.setItem(probe, "1");
      s.removeItem(probe);
      return /** @type {import("./herald.js").HeraldStorage} */ (s);
    }
  } catch {
    // unavailable (private mode, sandboxed iframe, server-side rendering)
  }
  return null;
}

/** A bounded set of ids in least-recently-seen order. */
class RecentIds {
  /** @param {number} max */
  constructor(max) {
    this.max = Math.max(1, max);
    /** @type {Map<string, true>} */
    this.map = new Map();
  }
  /** @param {string} id */
  has(id) {
    return this.map.has(id);
  }
  /** Adds or refreshes `id`, evicting the least recently seen beyond `max`. @param {string} id */
  add(id) {
    this.map.delete(id);
    this.map.set(id, true);
    while (this.map.size > this.max) {
      const oldest = this.map.keys().next().value;
      if (oldest === undefined) break;
      this.map.delete(oldest);
    }
  }
  /** The `n` most recently seen, oldest first. @param {number} n */
  recent(n) {
    const all = [...this.map.keys()];
    return all.slice(Math.max(0, all.length - n));
  }
  clear() {
    this.map.clear();
  }
}

/**
 * @typedef {object} Pending  one request, queued or in flight
 * @property {Record<string, unknown>} frame
 * @property {(frame: any) => void} resolve
 * @property {(err: Error) => void} reject
 * @property {ReturnType<typeof setTimeout> | null} timer
 * @property {Connection | null} conn
 * @property {string | null} ref
 */

/**
 * @typedef {object} Connection  one WebSocket and what belongs to it
 * @property {WebSocket} ws
 * @property {"opening" | "syncing" | "ready"} phase
 * @property {Map<string, Pending>} pending
 * @property {{history: boolean, skip: boolean} | null} resume  set while a resume runs
 * @property {Promise<import("./herald.js").ResumeResult> | null} resuming
 * @property {number} live  live notifications since the last completed resume
 * @property {number} lastSentAt
 * @property {unknown} lastError
 */

/**
 * base64url (padding optional) to bytes: `applicationServerKey` takes the raw key.
 * @param {string} text
 */
export function base64UrlBytes(text) {
  const b64 = text.replace(/=+$/, "").replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** @param {Uint8Array} a @param {Uint8Array} b */
function sameBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * A Herald connection that keeps itself alive. See herald.d.ts and README.md.
 */
export class HeraldClient {
  /** @param {import("./herald.js").HeraldClientOptions} options */
  constructor(options) {
    if (!options || typeof options.url !== "string" || !options.url) {
      throw new TypeError("HeraldClient: options.url (the WebSocket stage URL) is required");
    }
    if (typeof options.getToken !== "function" && (typeof options.token !== "string" || !options.token)) {
      throw new TypeError("HeraldClient: options.token or options.getToken is required");
    }
    const WS = options.WebSocketImpl ?? /** @type {any} */ (globalThis).WebSocket;
    if (typeof WS !== "function") {
      throw new TypeError("HeraldClient: no WebSocket in this environment; pass options.WebSocketImpl");
    }
    if (options.tokenTransport && options.tokenTransport !== "subprotocol" && options.tokenTransport !== "query") {
      throw new TypeError('HeraldClient: tokenTransport must be "subprotocol" or "query"');
    }
    /**
     * @private
     * @type {import("./herald.js").HeraldClientOptions & Defaults & {backoff: Required<import("./herald.js").HeraldBackoff>}}
     */
    this._o = /** @type {any} */ ({
      ...DEFAULTS,
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
      backoff: { ...DEFAULT_BACKOFF, ...(options.backoff ?? {}) },
    });
    /** @private @type {new (url: string, protocols?: string | string[]) => WebSocket} */
    this._WS = WS;
    /** @private @type {import("./herald.js").HeraldStorage | null} */
    this._storage = options.storage === undefined ? defaultStorage() : options.storage;
    /** @private @type {{notification: Set<Function>, state: Set<Function>, error: Set<Function>}} */
    this._listeners = { notification: new Set(), state: new Set(), error: new Set(), left: new Set(), presence: new Set(), gap: new Set() };
    /** @private @type {Map<string, number>} when each group's last typing event was sent */
    this._typingSent = new Map();
    /** @private @type {Set<string>} */
    this._groups = new Set();
    for (const g of options.groups ?? []) {
      if (typeof g !== "string" || !g) throw new TypeError("HeraldClient: groups must be non-empty strings");
      this._groups.add(g);
    }
    /** @private @type {import("./herald.js").HeraldState} */
    this._state = "idle";
    /** @private */
    this._attempt = 0;
    /** @private */
    this._generation = 0;
    /** @private @type {Connection | null} */
    this._conn = null;
    /** @private @type {Pending[]} */
    this._queue = [];
    /** @private */
    this._seq = 0;
    /** @private */
    this._seen = new RecentIds(this._o.dedupeSize);
    /** @private @type {string | null} */
    this._cursor = null;
    /** @private @type {string | null} */
    this._storageKey = null;
    /** @private */
    this._dirty = false;
    /** @private @type {Promise<void>} */
    this._writes = Promise.resolve();
    /** @private @type {ReturnType<typeof setTimeout> | null} */
    this._reconnectTimer = null;
    /** @private @type {ReturnType<typeof setTimeout> | null} */
    this._pingTimer = null;
    /** @private @type {ReturnType<typeof setTimeout> | null} */
    this._connectTimer = null;
    /** @private */
    this._closed = false;
    /** @private Handshakes that failed in a row (the socket never opened). */
    this._handshakeFailures = 0;
    /** @private @type {{timer: ReturnType<typeof setTimeout> | null, running: boolean} | null} */
    this._poll = null;
    /** @private */
    this._starting = false;
    /** @private @type {(() => void) | null} */
    this._unlisten = null;
    if (this._o.autoConnect) this.connect();
  }

  /** The connection state: idle → connecting → syncing → ready (→ reconnecting → …) → closed. */
  get state() {
    return this._state;
  }
  /** True once re-joined and resumed: requests are sent at once. */
  get ready() {
    return this._state === "ready";
  }
  /** The resume point (the server's last `resumed.cursor`; what the next `resume` starts after), or null. */
  get cursor() {
    return this._cursor;
  }
  /** The groups this client keeps joined (re-joined after every reconnect). */
  get groups() {
    return [...this._groups];
  }

  /**
   * Subscribes to `"notification"` (notification, meta), `"state"` (change), `"error"`
   * (HeraldError), `"left"` (frame), `"presence"` (`{group, user, state}`) or `"gap"`
   * (`{since, via}`: the resume point was older than the server's retention window, so
   * notifications may have expired unseen). Returns the function that unsubscribes.
   * @param {"notification" | "state" | "error" | "left" | "presence" | "gap"} event
   * @param {Function} fn
   * @returns {() => void}
   */
  on(event, fn) {
    const set = this._listeners[event];
    if (!set) throw new TypeError(`HeraldClient.on: unknown event ${JSON.stringify(event)}`);
    if (typeof fn !== "function") throw new TypeError("HeraldClient.on: listener must be a function");
    set.add(fn);
    return () => {
      set.delete(fn);
    };
  }

  /** Starts connecting (only needed with `autoConnect: false`). */
  connect() {
    if (this._closed) throw new HeraldError("closed", "this HeraldClient was closed; create a new one");
    if (this._state !== "idle" || this._starting) return;
    this._starting = true;
    this._listenToPage();
    // Deferred, so that listeners added right after the constructor see every state.
    queueMicrotask(() => {
      if (!this._closed) void this._open();
    });
  }

  /**
   * Joins a group (`course:42`). It is remembered and re-joined after every reconnect until
   * `leave()`, unless the server refuses it (`forbidden`, `bad_request`): then the promise
   * rejects with that code and the group is forgotten. Sent once connected (queued before).
   * @param {string} group
   * @returns {Promise<import("./herald.js").JoinedFrame>}
   */
  join(group) {
    if (typeof group !== "string" || !group) {
      return Promise.reject(new HeraldError("bad_request", "join: group must be a non-empty string"));
    }
    const frame = { action: "join", group };
    try {
      checkFrameSize(JSON.stringify(frame), REF_ALLOWANCE);
    } catch (e) {
      return Promise.reject(e);
    }
    this._groups.add(group);
    return this._request(frame).catch((err) => {
      if (err instanceof HeraldError && err.frame && (err.code === "forbidden" || err.code === "bad_request")) {
        this._groups.delete(group);
      }
      throw err;
    });
  }

  /**
   * Leaves a group and stops re-joining it. While disconnected it resolves at once (the next
   * connection will not join it) with `{type:"left", group, local:true}`.
   * @param {string} group
   * @returns {Promise<import("./herald.js").LeftFrame>}
   */
  leave(group) {
    if (typeof group !== "string" || !group) {
      return Promise.reject(new HeraldError("bad_request", "leave: group must be a non-empty string"));
    }
    const frame = { action: "leave", group };
    try {
      checkFrameSize(JSON.stringify(frame), REF_ALLOWANCE);
    } catch (e) {
      return Promise.reject(e);
    }
    this._groups.delete(group);
    // A join still waiting for a connection would undo this leave: cancel it.
    for (const p of [...this._queue]) {
      if (p.frame.action === "join" && p.frame.group === group) {
        this._settle(p, new HeraldError("cancelled", `join ${group} cancelled by leave`));
      }
    }
    if (!this._conn || this._conn.phase === "opening") {
      return Promise.resolve({ type: "left", group, local: true });
    }
    return this._request(frame);
  }

  /**
   * Marks notifications read (`ack`). Lists over 100 ids are sent as several frames; resolves
   * with the total count.
   * @param {string | string[]} ids
   * @returns {Promise<import("./herald.js").AckedFrame>}
   */
  async ack(ids) {
    const list = [...new Set(Array.isArray(ids) ? ids : [ids])];
    if (list.some((id) => typeof id !== "string" || !id)) {
      throw new HeraldError("bad_request", "ack: ids must be non-empty strings");
    }
    if (list.length === 0) return { type: "acked", count: 0 };
    /** @type {Promise<any>[]} */
    const parts = [];
    for (let i = 0; i < list.length; i += MAX_ACK_IDS) {
      const frame = { action: "ack", ids: list.slice(i, i + MAX_ACK_IDS) };
      checkFrameSize(JSON.stringify(frame), REF_ALLOWANCE);
      parts.push(this._request(frame));
    }
    const replies = await Promise.all(parts);
    return { type: "acked", count: replies.reduce((n, r) => n + (Number(r.count) || 0), 0) };
  }

  /**
   * Publishes to a group the connection is a member of (the server checks membership and the
   * group kind's publish policy on every frame; `from` is taken from the token). Logged by
   * default — stored, retried and replayed like any notification — and resolves with
   * `{type:"published", id, cursor}`; `ephemeral: true` (typing, cursors, location) is pushed
   * at once and never stored, and resolves with `{type:"published"}`. Other members receive it;
   * this connection only with `echo: true`. Rejects with the server's code (`forbidden`,
   * `too_large`, `rate_limited` with `frame.retryAfterMs`, `bad_request`), or `unsupported`
   * from a server without client publish.
   * @param {string} group
   * @param {string} event
   * @param {import("./herald.js").PublishOptions} [options]
   * @returns {Promise<import("./herald.js").PublishedFrame>}
   */
  async publish(group, event, options = {}) {
    if (typeof group !== "string" || !group) throw new HeraldError("bad_request", "publish: group must be a non-empty string");
    if (typeof event !== "string" || !event) throw new HeraldError("bad_request", "publish: event must be a non-empty string");
    /** @type {Record<string, unknown>} */
    const frame = { action: "publish", group, event };
    for (const key of ["title", "body", "data", "id", "collapse"]) {
      if (options[key] !== undefined) frame[key] = options[key];
    }
    if (options.ephemeral) frame.ephemeral = true;
    if (options.echo) frame.echo = true;
    let reply;
    try {
      reply = await this._request(frame);
    } catch (e) {
      if (e instanceof HeraldError && e.code === "unknown_action") {
        throw new HeraldError("unsupported", "this server does not support publish (it answered unknown_action)", { frame: e.frame, cause: e });
      }
      throw e;
    }
    // The sender's own message comes back in a later resume (it is in the group's log): it is
    // already known here, so it is not shown again.
    if (typeof reply.id === "string" && reply.id) {
      this._seen.add(reply.id);
      this._persist();
    }
    return reply;
  }

  /**
   * A typing indicator for `group`: call it on every keystroke. It publishes an ephemeral
   * `event` (default `"typing"`) at once, then at most one every `debounceMs` (default 300)
   * while keystrokes keep coming — a burst of typing costs a few frames, far inside the
   * connection's frame budget. Errors (e.g. `forbidden`) go to the `"error"` listeners.
   * @param {string} group
   * @param {{event?: string, debounceMs?: number, data?: Record<string, unknown>}} [options]
   * @returns {boolean} whether this call sent a frame
   */
  typing(group, options = {}) {
    const debounceMs = options.debounceMs ?? 300;
    const now = Date.now();
    const last = this._typingSent.get(group);
    if (last !== undefined && now - last < debounceMs) return false;
    this._typingSent.set(group, now);
    this.publish(group, options.event ?? "typing", { ephemeral: true, data: options.data }).catch((e) => {
      if (!(e instanceof HeraldError && (e.code === "disconnected" || e.code === "closed"))) this._emitError(e);
    });
    return true;
  }

  /**
   * Round trip to the server. Resolves with the time it took in milliseconds.
   * @returns {Promise<number>}
   */
  async ping() {
    const started = Date.now();
    await this._request({ action: "ping" });
    return Date.now() - started;
  }

  /**
   * Fetches what was missed since the last cursor now (it also runs automatically after every
   * (re)connect). Replayed notifications arrive as "notification" events, deduplicated.
   * @returns {Promise<import("./herald.js").ResumeResult>}
   */
  resume() {
    if (this._closed) return Promise.reject(new HeraldError("closed", "client closed"));
    const conn = this._conn;
    if (!conn) {
      return Promise.reject(new HeraldError("disconnected", "not connected: the next connection resumes by itself"));
    }
    // While syncing, the connection's own resume is running (or about to): share it.
    if (conn.phase !== "ready") return conn.resuming ?? Promise.resolve({ count: 0, cursor: this._cursor });
    return this._resumeAll(conn);
  }

  /**
   * Turns on Web Push for this browser: registers `serviceWorker`, subscribes with its
   * PushManager (reusing the browser's subscription when it has one for the same key) and
   * registers the subscription with Herald. Needs `httpUrl`. Call it from a user gesture:
   * browsers ask for the notification permission here.
   * @param {import("./herald.js").EnablePushOptions} [options]
   * @returns {Promise<import("./herald.js").PushSubscriptionJSONLike>}
   */
  async enablePush(options = {}) {
    const base = this._httpBase("enablePush");
    const container = /** @type {any} */ (globalThis).navigator?.serviceWorker;
    if (!container || typeof container.register !== "function") {
      throw new HeraldError("push_unsupported", "this browser has no service workers");
    }
    const token = await this._httpToken();
    let key = options.vapidPublicKey;
    if (!key) {
      const res = await this._httpJson("GET", `${base}/push/vapid-public-key`, token);
      key = res?.publicKey;
      if (typeof key !== "string" || !key) throw new HeraldError("push_failed", "the server sent no VAPID public key");
    }
    /** @type {any} */
    let registration;
    try {
      registration = await container.register(options.serviceWorker ?? "/push-sw.js", options.scope ? { scope: options.scope } : undefined);
    } catch (e) {
      throw new HeraldError("push_unsupported", `the service worker could not be registered: ${errText(e)}`, { cause: e });
    }
    const manager = registration?.pushManager;
    if (!manager) throw new HeraldError("push_unsupported", "this browser has no PushManager");
    const applicationServerKey = base64UrlBytes(key);
    let subscription = await manager.getSubscription();
    // A subscription made with another key (the server's key changed) cannot be pushed to.
    const existingKey = subscription?.options?.applicationServerKey;
    if (subscription && existingKey && !sameBytes(new Uint8Array(existingKey), applicationServerKey)) {
      await subscription.unsubscribe();
      subscription = null;
    }
    if (!subscription) {
      try {
        subscription = await manager.subscribe({ userVisibleOnly: true, applicationServerKey });
      } catch (e) {
        // Permission denied, or the browser's push service refused.
        throw new HeraldError("push_unsupported", `subscribing failed: ${errText(e)}`, { cause: e });
      }
    }
    const json = subscription.toJSON();
    await this._httpJson("PUT", `${base}/push/subscriptions`, token, json);
    return json;
  }

  /**
   * Turns Web Push off for this browser: tells Herald to forget the subscription, then
   * unsubscribes it. Resolves `false` when there was none.
   * @returns {Promise<boolean>}
   */
  async disablePush() {
    const base = this._httpBase("disablePush");
    const container = /** @type {any} */ (globalThis).navigator?.serviceWorker;
    const registration = container ? await container.getRegistration?.() : null;
    const subscription = registration?.pushManager ? await registration.pushManager.getSubscription() : null;
    if (!subscription) return false;
    const token = await this._httpToken();
    await this._httpJson("DELETE", `${base}/push/subscriptions`, token, { endpoint: subscription.endpoint });
    await subscription.unsubscribe();
    return true;
  }

  /** @private @param {string} what */
  _httpBase(what) {
    if (!this._o.httpUrl) throw new TypeError(`HeraldClient: ${what} needs options.httpUrl (the HTTP API base URL)`);
    return this._o.httpUrl.replace(/\/+$/, "");
  }

  /** @private */
  async _httpToken() {
    const token = this._o.getToken ? await this._o.getToken() : this._o.token;
    if (typeof token !== "string" || !token) throw new HeraldError("token_failed", "getToken() returned no token");
    return token;
  }

  /**
   * @private
   * @param {string} method @param {string} url @param {string} token @param {unknown} [body]
   */
  async _httpJson(method, url, token, body) {
    /** @type {Record<string, string>} */
    const headers = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    let res;
    try {
      res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new HeraldError("push_failed", `${method} ${url} failed: ${errText(e)}`, { cause: e });
    }
    const text = await res.text();
    /** @type {any} */
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!res.ok) {
      // The server's `{"error":{"code","message"}}`: `bad_request` says what is wrong.
      throw new HeraldError(json?.error?.code ?? "push_failed", json?.error?.message ?? `${method} ${url}: HTTP ${res.status}`, {
        frame: json,
      });
    }
    return json;
  }

  /** Stops everything: closes the socket, cancels timers and rejects pending requests. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._stopPolling();
    this._generation++;
    this._clearTimers();
    this._unlisten?.();
    this._unlisten = null;
    const conn = this._conn;
    this._conn = null;
    if (conn) {
      this._detach(conn);
      try {
        conn.ws.close(1000, "client closed");
      } catch {
        // already closing
      }
      this._failPending(conn, "closed", "client closed");
    }
    for (const p of this._queue.splice(0)) this._settle(p, new HeraldError("closed", "client closed"));
    this._persist();
    this._setState("closed");
  }

  // ---------------------------------------------------------------- connection lifecycle

  /** @private */
  async _open() {
    const generation = ++this._generation;
    const stale = () => this._closed || generation !== this._generation;
    this._clearTimer("_reconnectTimer");
    // While polling, socket attempts run in the background: the state stays `polling`.
    if (!this._poll) this._setState("connecting", { attempt: this._attempt });
    let token;
    try {
      token = this._o.getToken ? await this._o.getToken() : this._o.token;
      if (typeof token !== "string" || !token) throw new TypeError("getToken() returned no token");
    } catch (e) {
      if (stale()) return;
      this._emitError(new HeraldError("token_failed", `could not get a token: ${errText(e)}`, { cause: e }));
      this._scheduleReconnect();
      return;
    }
    if (stale()) return;
    await this._loadState(token);
    if (stale()) return;

    let url = this._o.url;
    /** @type {string[]} */
    let protocols = [SUBPROTOCOL, token];
    if (this._o.tokenTransport === "query") {
      // String concatenation, not URL.searchParams: React Native's URL does not implement it.
      url = `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
      protocols = [SUBPROTOCOL];
    }
    let ws;
    try {
      ws = new this._WS(url, protocols);
    } catch (e) {
      this._emitError(new HeraldError("connect_failed", `cannot open the WebSocket: ${errText(e)}`, { cause: e }));
      this._scheduleReconnect();
      return;
    }
    /** @type {Connection} */
    const conn = {
      ws,
      phase: "opening",
      pending: new Map(),
      resume: null,
      resuming: null,
      live: 0,
      lastSentAt: Date.now(),
      lastError: null,
    };
    this._conn = conn;
    ws.onopen = () => this._onOpen(conn);
    ws.onmessage = (ev) => this._onMessage(conn, ev);
    ws.onerror = (ev) => {
      conn.lastError = ev;
    };
    ws.onclose = (ev) => this._onClose(conn, ev);
    this._connectTimer = setTimeout(() => {
      this._connectTimer = null;
      if (this._conn === conn && conn.phase === "opening") {
        conn.lastError = new Error(`no handshake within ${this._o.connectTimeoutMs} ms`);
        this._drop(conn, "connect timeout");
      }
    }, this._o.connectTimeoutMs);
  }

  /** @private @param {Connection} conn */
  _onOpen(conn) {
    if (this._conn !== conn) return;
    this._clearTimer("_connectTimer");
    this._handshakeFailures = 0;
    // The socket works (again): it takes over from polling, resuming from the same point.
    this._stopPolling();
    conn.phase = "syncing";
    this._setState("syncing");
    void this._sync(conn);
  }

  /**
   * Re-joins the remembered groups, then resumes; only then is the connection ready.
   * @private @param {Connection} conn
   */
  async _sync(conn) {
    try {
      const groups = [...this._groups];
      await Promise.all(
        groups.map(async (group) => {
          try {
            await this._send(conn, { action: "join", group });
          } catch (e) {
            if (!(e instanceof HeraldError) || !e.frame) throw e; // transport: the sync fails
            // Refused for good: the group is forgotten and the others resume. Any other failure
            // (throttled, internal) fails the sync: a resume now would read without this group
            // and hand back a resume point past its notifications.
            if (e.code !== "forbidden" && e.code !== "bad_request") throw e;
            this._groups.delete(group);
            this._emitError(
              new HeraldError(e.code, `re-joining ${group} failed: ${e.message}`, { frame: e.frame, group }),
            );
          }
        }),
      );
      if (this._conn !== conn) return;
      await this._resumeAll(conn);
      if (this._conn !== conn) return;
      conn.phase = "ready";
      this._attempt = 0;
      this._setState("ready");
      for (const p of this._queue.splice(0)) this._dispatch(conn, p);
      this._schedulePing(conn);
    } catch (e) {
      if (this._conn !== conn || this._closed) return; // the close handler took over
      this._emitError(new HeraldError("sync_failed", `re-join/resume failed: ${errText(e)}`, { cause: e }));
      this._drop(conn, "sync failed");
    }
  }

  /**
   * Resumes from the last cursor, paging while the server says `more`.
   * @private @param {Connection} conn
   * @returns {Promise<import("./herald.js").ResumeResult>}
   */
  _resumeAll(conn) {
    if (conn.resuming) return conn.resuming;
    const run = async () => {
      let total = 0;
      let stalls = 0;
      let emptyPages = 0;
      let resetOnce = false;
      const history = this._cursor == null;
      conn.resume = { history, skip: history && !this._o.replayHistory };
      // Counted from here: live notifications after this point are not covered by this resume.
      conn.live = 0;
      // Where the next page starts: the resume point first, then the server's `next` page token.
      let from = this._cursor;
      /** @type {string | null} */
      let page = null;
      try {
        for (;;) {
          const since = page ?? from;
          /** @type {Record<string, unknown>} */
          const frame = page != null ? { action: "resume", page } : since == null ? { action: "resume" } : { action: "resume", since };
          // The ids this client holds; the server reads past them without sending them again.
          const have = this._seen.recent(MAX_ACK_IDS);
          if (have.length > 0) frame.have = have;
          let reply;
          try {
            reply = await this._send(conn, frame);
          } catch (e) {
            if (e instanceof HeraldError && e.frame && e.code === "bad_request" && since != null && !resetOnce) {
              // The server no longer understands our cursor: start over from its retention window.
              resetOnce = true;
              this._emitError(new HeraldError(e.code, `saved cursor refused, resuming from the start: ${e.message}`, { frame: e.frame }));
              this._cursor = null;
              from = null;
              page = null;
              conn.resume = { history: true, skip: !this._o.replayHistory };
              continue;
            }
            throw e;
          }
          const count = Number(reply.count) || 0;
          total += count;
          if (reply.gap === true) this._emit("gap", { since: from, via: "resume" });
          // The resume point is the server's answer (it stays behind anything that can still
          // appear); `next` is the page token the next page continues from.
          if (typeof reply.cursor === "string") this._cursor = laterCursor(this._cursor, reply.cursor);
          page = typeof reply.next === "string" ? reply.next : null;
          if (page == null && typeof reply.cursor === "string") from = reply.cursor;
          this._persist();
          if (!reply.more) break;
          // Guards against a server that keeps answering `more` without delivering anything:
          // a few retries when the position does not move (a replay post failed: back off a
          // bit), a bounded number of empty pages when it does.
          emptyPages = count === 0 ? emptyPages + 1 : 0;
          stalls = count === 0 && (page ?? from) === since ? stalls + 1 : 0;
          if (stalls >= MAX_RESUME_STALLS || emptyPages >= MAX_EMPTY_RESUME_PAGES) {
            this._emitError(
              new HeraldError("resume_stalled", `resume keeps answering more without notifications after ${since}; trying again on the next connect`),
            );
            break;
          }
          if (stalls > 0) {
            await new Promise((r) => setTimeout(r, 250 * stalls));
            if (this._conn !== conn) throw new HeraldError("disconnected", "connection lost during resume");
          }
        }
        this._persist();
        return { count: total, cursor: this._cursor };
      } finally {
        conn.resume = null;
        conn.resuming = null;
      }
    };
    conn.resuming = run();
    return conn.resuming;
  }

  /** @private @param {Connection} conn @param {{data: unknown}} ev */
  _onMessage(conn, ev) {
    if (this._conn !== conn) return;
    if (typeof ev.data !== "string") {
      this._emitError(new HeraldError("bad_frame", "binary frame ignored"));
      return;
    }
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      this._emitError(new HeraldError("bad_frame", `frame is not JSON: ${ev.data.slice(0, 100)}`));
      return;
    }
    if (!frame || typeof frame !== "object" || Array.isArray(frame)) {
      this._emitError(new HeraldError("bad_frame", "frame is not a JSON object"));
      return;
    }
    if (frame.type === "notification") {
      this._onNotification(conn, frame);
      return;
    }
    if (frame.ref != null) {
      const p = conn.pending.get(String(frame.ref));
      if (p) {
        if (frame.type === "error") {
          const code = typeof frame.code === "string" ? frame.code : "server_error";
          this._settle(p, new HeraldError(code, String(frame.message ?? code), { frame }));
        } else {
          this._settle(p, null, frame);
        }
      }
      return; // a late reply to a request that timed out
    }
    if (frame.type === "error") {
      const code = typeof frame.code === "string" ? frame.code : "server_error";
      this._emitError(new HeraldError(code, String(frame.message ?? code), { frame }));
    } else if (frame.type === "presence" && typeof frame.group === "string" && typeof frame.user === "string") {
      this._emit("presence", frame);
    } else if (frame.type === "left" && typeof frame.group === "string") {
      // The server took the group away (e.g. the user's subscription was removed): forget it,
      // so the next reconnect does not try to re-join it.
      this._groups.delete(frame.group);
      this._emit("left", frame);
    } else if (frame.type === undefined && typeof frame.message === "string") {
      // API Gateway's own answer to a failed integration ({"message":"Internal server error",...}).
      this._emitError(new HeraldError("gateway_error", frame.message, { frame }));
    }
    // other types: newer servers may send frames this client does not know; ignore them
  }

  /** @private @param {Connection} conn @param {any} n */
  _onNotification(conn, n) {
    if (typeof n.id !== "string" || !n.id) {
      this._emitError(new HeraldError("bad_frame", "notification without id ignored", { frame: n }));
      return;
    }
    const replayed = n.replayed === true;
    const resume = conn.resume;
    // A live frame's cursor never moves the resume point: an older notification may still be
    // on its way. Enough live ones since the last resume: resume in the background, so the
    // resume point keeps up and a reconnect replays little.
    if (!replayed && ++conn.live >= this._o.syncEvery && conn.phase === "ready" && !conn.resuming) {
      this._resumeAll(conn).catch((e) => {
        if (!(e instanceof HeraldError && (e.code === "disconnected" || e.code === "closed"))) this._emitError(e);
      });
    }
    const duplicate = this._seen.has(n.id);
    this._seen.add(n.id);
    this._persist();
    if (duplicate) return;
    if (resume && replayed && resume.skip) return;
    /** @type {import("./herald.js").NotificationMeta} */
    const meta = { replayed, history: Boolean(resume && replayed && resume.history) };
    this._emit("notification", n, meta);
  }

  /** @private @param {Connection} conn @param {{code?: number, reason?: string}} ev */
  _onClose(conn, ev) {
    if (this._conn !== conn) return;
    this._conn = null;
    this._detach(conn);
    this._clearTimer("_connectTimer");
    this._clearTimer("_pingTimer");
    this._failPending(conn, "disconnected", `connection closed (${ev?.code ?? "?"}) before the reply`);
    if (this._closed) return;
    if (conn.phase === "opening") {
      this._handshakeFailures += 1;
      const why = conn.lastError ? errText(conn.lastError) : `closed with ${ev?.code ?? "?"}`;
      this._emitError(new HeraldError("connect_failed", `WebSocket handshake failed: ${why}`, { cause: conn.lastError }));
    }
    this._scheduleReconnect({ code: ev?.code, reason: ev?.reason });
  }

  /**
   * Abandons a connection at once (dead socket, failed sync): no waiting for a close handshake.
   * @private @param {Connection} conn @param {string} reason
   */
  _drop(conn, reason) {
    if (this._conn !== conn) return;
    const ws = /** @type {any} */ (conn.ws);
    this._detach(conn);
    try {
      if (typeof ws.terminate === "function") ws.terminate();
      else ws.close(4000, reason);
    } catch {
      // already closed
    }
    this._onClose(conn, { code: 4000, reason });
  }

  /** @private @param {Connection} conn */
  _detach(conn) {
    // No-ops rather than null: some implementations (ws) throw on an unhandled "error".
    conn.ws.onopen = noop;
    conn.ws.onmessage = noop;
    conn.ws.onerror = noop;
    conn.ws.onclose = noop;
  }

  /** @private @param {{code?: number, reason?: string}} [detail] */
  _scheduleReconnect(detail = {}) {
    if (this._closed) return;
    this._attempt += 1;
    const delayMs = backoffDelay(this._attempt, this._o.backoff);
    if (this._o.httpUrl && this._handshakeFailures >= this._o.pollAfterFailures) this._startPolling();
    if (!this._poll) this._setState("reconnecting", { ...detail, attempt: this._attempt, delayMs });
    this._clearTimer("_reconnectTimer");
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      void this._open();
    }, delayMs);
  }

  /** Skips the backoff wait (the network came back, the page became visible). @private */
  _reconnectNow() {
    if (this._closed || !this._reconnectTimer) return;
    this._clearTimer("_reconnectTimer");
    void this._open();
  }

  // ---------------------------------------------------------------- polling fallback

  /**
   * The socket cannot be opened (several handshakes failed in a row): poll the HTTP API until it
   * can. Socket attempts go on in the background (`_scheduleReconnect`).
   * @private
   */
  _startPolling() {
    if (this._poll || this._closed) return;
    this._poll = { timer: null, running: false };
    this._setState("polling", { attempt: this._attempt });
    void this._pollNow();
  }

  /** @private */
  _stopPolling() {
    if (!this._poll) return;
    if (this._poll.timer) clearTimeout(this._poll.timer);
    this._poll = null;
  }

  /**
   * One poll: `missed` from the resume point, page after page (`next`) while there is more;
   * the resume point becomes the server's `cursor`, as after a `resume`.
   * @private
   */
  async _pollNow() {
    const poll = this._poll;
    if (!poll || poll.running) return;
    poll.running = true;
    try {
      const token = this._o.getToken ? await this._o.getToken() : this._o.token;
      if (typeof token !== "string" || !token) throw new TypeError("getToken() returned no token");
      if (this._poll !== poll) return;
      await this._loadState(token);
      const history = this._cursor == null;
      const skip = history && !this._o.replayHistory;
      const from = this._cursor;
      /** @type {string | null} */
      let next = null;
      for (let page = 0; page < 1000; page++) {
        const query =
          `limit=${POLL_PAGE}` +
          (next != null ? `&page=${encodeURIComponent(next)}` : from == null ? "" : `&since=${encodeURIComponent(from)}`);
        const base = /** @type {string} */ (this._o.httpUrl).replace(/\/+$/, "");
        const res = await fetch(`${base}/notifications/missed?${query}`, { headers: { authorization: `Bearer ${token}` } });
        if (this._poll !== poll) return; // the socket took over meanwhile: it resumes by itself
        if (!res.ok) {
          let detail = "";
          try {
            const body = await res.json();
            detail = body?.error?.message ?? "";
          } catch {
            // not JSON
          }
          throw new HeraldError(res.status === 429 ? "rate_limited" : "poll_failed", `GET /notifications/missed answered ${res.status} ${detail}`.trim());
        }
        const body = await res.json();
        if (body.gap === true && page === 0) this._emit("gap", { since: from, via: "poll" });
        for (const n of Array.isArray(body.items) ? body.items : []) {
          this._deliverPolled(n, { history, skip });
        }
        if (typeof body.cursor === "string") this._cursor = laterCursor(this._cursor, body.cursor);
        this._persist();
        if (typeof body.next !== "string" || !body.next) break;
        next = body.next;
      }
    } catch (e) {
      if (this._poll === poll) this._emitError(e instanceof HeraldError ? e : new HeraldError("poll_failed", `polling failed: ${errText(e)}`, { cause: e }));
    } finally {
      poll.running = false;
      if (this._poll === poll) poll.timer = setTimeout(() => void this._pollNow(), this._o.pollIntervalMs);
    }
  }

  /** A notification from a poll: the same dedupe and events as a replayed one. @private */
  _deliverPolled(n, { history, skip }) {
    if (!n || typeof n.id !== "string" || !n.id) return;
    const duplicate = this._seen.has(n.id);
    this._seen.add(n.id);
    if (duplicate || skip) return;
    /** @type {import("./herald.js").NotificationMeta} */
    const meta = { replayed: true, history, polled: true };
    this._emit("notification", { type: "notification", ...n, replayed: true }, meta);
  }

  // ---------------------------------------------------------------- requests

  /**
   * A request from the app: sent when the connection is ready (queued until then); rejects
   * after `requestTimeoutMs` counted from the call.
   * @private @param {Record<string, unknown>} frame @returns {Promise<any>}
   */
  _request(frame) {
    if (this._closed) return Promise.reject(new HeraldError("closed", "client closed"));
    try {
      checkFrameSize(JSON.stringify(frame), REF_ALLOWANCE);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      /** @type {Pending} */
      const p = { frame, resolve, reject, timer: null, conn: null, ref: null };
      this._arm(p);
      const conn = this._conn;
      if (conn && conn.phase === "ready") this._dispatch(conn, p);
      else this._queue.push(p);
    });
  }

  /**
   * A request on a given connection (re-join and resume during the sync).
   * @private @param {Connection} conn @param {Record<string, unknown>} frame @returns {Promise<any>}
   */
  async _send(conn, frame) {
    // Over the user's budget (a resume page's posts count against it): nothing was done, so the
    // same request is sent again once the server says it fits, instead of failing the sync and
    // reconnecting, which would only spend more.
    for (let waits = 0; ; waits++) {
      try {
        return await this._sendOnce(conn, frame);
      } catch (e) {
        if (!(e instanceof HeraldError) || e.code !== "rate_limited" || waits >= MAX_RATE_LIMITED_WAITS) throw e;
        const ms = Math.min(Math.max(Number(e.frame?.retryAfterMs) || 1000, 50), MAX_RATE_LIMITED_WAIT_MS);
        await new Promise((r) => setTimeout(r, ms));
        if (this._conn !== conn) throw new HeraldError("disconnected", "connection lost while waiting for the rate budget");
      }
    }
  }

  /** @private @param {Connection} conn @param {Record<string, unknown>} frame @returns {Promise<any>} */
  _sendOnce(conn, frame) {
    return new Promise((resolve, reject) => {
      /** @type {Pending} */
      const p = { frame, resolve, reject, timer: null, conn: null, ref: null };
      this._arm(p);
      this._dispatch(conn, p);
    });
  }

  /** @private @param {Pending} p */
  _arm(p) {
    p.timer = setTimeout(() => {
      p.timer = null;
      const what = String(p.frame.action);
      this._settle(p, new HeraldError("timeout", `no answer to ${what} within ${this._o.requestTimeoutMs} ms`));
    }, this._o.requestTimeoutMs);
  }

  /** @private @param {Connection} conn @param {Pending} p */
  _dispatch(conn, p) {
    if (this._conn !== conn) {
      this._settle(p, new HeraldError("disconnected", "connection lost before sending"));
      return;
    }
    const ref = `h${++this._seq}`;
    const text = JSON.stringify({ ...p.frame, ref });
    try {
      checkFrameSize(text);
      p.ref = ref;
      p.conn = conn;
      conn.pending.set(ref, p);
      conn.ws.send(text);
    } catch (e) {
      this._settle(p, e instanceof HeraldError ? e : new HeraldError("disconnected", `send failed: ${errText(e)}`, { cause: e }));
      return;
    }
    conn.lastSentAt = Date.now();
    if (conn.phase === "ready") this._schedulePing(conn);
  }

  /**
   * Settles a request once, whether it was queued or in flight.
   * @private @param {Pending} p @param {Error | null} err @param {any} [value]
   */
  _settle(p, err, value) {
    if (p.timer) clearTimeout(p.timer);
    p.timer = null;
    if (p.conn && p.ref) p.conn.pending.delete(p.ref);
    const i = this._queue.indexOf(p);
    if (i >= 0) this._queue.splice(i, 1);
    if (err) p.reject(err);
    else p.resolve(value);
  }

  /** @private @param {Connection} conn @param {string} code @param {string} message */
  _failPending(conn, code, message) {
    for (const p of [...conn.pending.values()]) this._settle(p, new HeraldError(code, message));
  }

  // ---------------------------------------------------------------- keep-alive and page

  /**
   * API Gateway closes a connection after 10 idle minutes (counted from the client's last
   * message): ping when nothing was sent for `pingIntervalMs`, while the page is visible.
   * @private @param {Connection} conn
   */
  _schedulePing(conn) {
    this._clearTimer("_pingTimer");
    if (this._closed || this._conn !== conn || conn.phase !== "ready" || pageHidden()) return;
    const wait = Math.max(0, conn.lastSentAt + this._o.pingIntervalMs - Date.now());
    this._pingTimer = setTimeout(() => {
      this._pingTimer = null;
      this._keepAlive(conn);
    }, wait);
  }

  /** @private @param {Connection} conn */
  _keepAlive(conn) {
    if (this._conn !== conn || conn.phase !== "ready") return;
    this._send(conn, { action: "ping" }).catch((e) => {
      if (this._conn !== conn) return;
      this._emitError(new HeraldError("ping_timeout", `keep-alive ping failed (${errText(e)}); reconnecting`, { cause: e }));
      this._drop(conn, "ping timeout");
    });
  }

  /** @private */
  _listenToPage() {
    const g = /** @type {any} */ (globalThis);
    const doc = g.document;
    /** @type {(() => void)[]} */
    const undo = [];
    if (doc && typeof doc.addEventListener === "function") {
      const onVisibility = () => {
        const conn = this._conn;
        if (pageHidden()) {
          this._clearTimer("_pingTimer");
          return;
        }
        this._reconnectNow();
        if (conn && conn.phase === "ready") {
          // Back from the background (or a sleep): check the connection now if it was quiet.
          if (Date.now() - conn.lastSentAt > 60000) this._keepAlive(conn);
          else this._schedulePing(conn);
        }
      };
      doc.addEventListener("visibilitychange", onVisibility);
      undo.push(() => doc.removeEventListener("visibilitychange", onVisibility));
    }
    if (typeof g.addEventListener === "function" && typeof g.removeEventListener === "function") {
      const onOnline = () => this._reconnectNow();
      const onPageHide = () => this._persist();
      g.addEventListener("online", onOnline);
      g.addEventListener("pagehide", onPageHide);
      undo.push(() => {
        g.removeEventListener("online", onOnline);
        g.removeEventListener("pagehide", onPageHide);
      });
    }
    this._unlisten = () => undo.forEach((f) => f());
  }

  // ---------------------------------------------------------------- persisted state

  /**
   * Loads the cursor and recently seen ids of the token's user (keyed by URL, tenant and sub).
   * @private @param {string} token
   */
  async _loadState(token) {
    const payload = jwtPayload(token) ?? {};
    const identity = {
      url: this._o.url.split("?")[0],
      tenant: String(payload[this._o.tenantClaim] ?? ""),
      sub: String(payload.sub ?? ""),
    };
    const custom = this._o.storageKey;
    const key =
      typeof custom === "function"
        ? custom(identity)
        : typeof custom === "string"
          ? custom
          : `herald:${identity.url}:${identity.tenant}:${identity.sub}`;
    if (key === this._storageKey) return;
    // Another user (or the first connect): that user's own cursor and dedupe memory.
    await this._writes;
    this._storageKey = key;
    this._cursor = this._o.initialCursor ?? null;
    this._seen.clear();
    if (!this._storage) return;
    try {
      const raw = await this._storage.getItem(key);
      if (!raw) return;
      const saved = JSON.parse(raw);
      if (saved && saved.v === STORAGE_VERSION) {
        if (typeof saved.cursor === "string") this._cursor = saved.cursor;
        if (Array.isArray(saved.seen)) for (const id of saved.seen) if (typeof id === "string") this._seen.add(id);
      }
    } catch (e) {
      this._emitError(new HeraldError("storage_failed", `could not read saved state: ${errText(e)}`, { cause: e }));
    }
  }

  /** Writes the cursor and recent ids, coalescing bursts, one write at a time. @private */
  _persist() {
    const storage = this._storage;
    if (!storage || !this._storageKey || this._dirty) return;
    this._dirty = true;
    this._writes = this._writes.then(async () => {
      this._dirty = false;
      const key = this._storageKey;
      if (!key) return;
      const value = JSON.stringify({
        v: STORAGE_VERSION,
        cursor: this._cursor,
        seen: this._seen.recent(this._o.persistIds),
      });
      try {
        await storage.setItem(key, value);
      } catch (e) {
        this._emitError(new HeraldError("storage_failed", `could not save state: ${errText(e)}`, { cause: e }));
      }
    });
  }

  // ---------------------------------------------------------------- events and timers

  /** @private @param {import("./herald.js").HeraldState} state @param {Record<string, unknown>} [detail] */
  _setState(state, detail = {}) {
    const previous = this._state;
    if (previous === state && Object.keys(detail).length === 0) return;
    this._state = state;
    this._emit("state", { ...detail, state, previous });
  }

  /** @private @param {HeraldError} err */
  _emitError(err) {
    this._emit("error", err);
  }

  /** @private @param {"notification" | "state" | "error"} event @param {unknown[]} args */
  _emit(event, ...args) {
    for (const fn of [...this._listeners[event]]) {
      try {
        fn(...args);
      } catch (e) {
        reportListenerError(e);
      }
    }
  }

  /** @private @param {"_reconnectTimer" | "_pingTimer" | "_connectTimer"} name */
  _clearTimer(name) {
    const t = this[name];
    if (t) clearTimeout(t);
    this[name] = null;
  }

  /** @private */
  _clearTimers() {
    this._clearTimer("_reconnectTimer");
    this._clearTimer("_pingTimer");
    this._clearTimer("_connectTimer");
  }
}

/**
 * Same as `new HeraldClient(options)`.
 * @param {import("./herald.js").HeraldClientOptions} options
 * @returns {HeraldClient}
 */
export function createHeraldClient(options) {
  return new HeraldClient(options);
}

function pageHidden() {
  const doc = /** @type {any} */ (globalThis).document;
  return Boolean(doc && doc.visibilityState === "hidden");
}
