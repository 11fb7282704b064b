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
 * - in a browser, the tabs of an origin share one socket per user (`shareConnection`): the tab
 *   holding a Web Lock connects, the others send it their requests and emit the events it relays
 *   over a BroadcastChannel; another tab takes over, resuming, when it closes (lib/tabs.js);
 * - chat (lib/chat.js): `history(group, {before, limit})` pages a room's history backwards,
 *   `markRoomRead(group, upTo)` sends a read receipt (others get "receipt" events), `receipts(group)`
 *   lists them, `upload(group, file)` shares a file through a presigned URL, `download(key)`;
 * - `enablePush()` registers a service worker (client/push-sw.js is a sample), subscribes with
 *   the PushManager and registers the subscription with Herald (`PUT /push/subscriptions`), so
 *   that notifications sent with `"push"` reach the user while no page is connected;
 *   `disablePush()` undoes it.
 *
 * This file is the one import for apps: HeraldClient's state and its public methods but
 * `enablePush`/`disablePush`. The rest is in lib/, one module per concern (connection, resume,
 * polling, requests, storage, push), whose methods become HeraldClient's own (lib/methods.js);
 * lib/tabs.js is an object of its own per client (`_tabs`), hooked into requests and events.
 * Types are in herald.d.ts; the JSDoc here mirrors them.
 */

import { ChatMethods } from "./lib/chat.js";
import { ConnectionMethods, DEFAULT_BACKOFF } from "./lib/connection.js";
import { HeraldError, reportListenerError } from "./lib/errors.js";
import { InboxMethods } from "./lib/inbox.js";
import { installMethods } from "./lib/methods.js";
import { PollingMethods } from "./lib/polling.js";
import { MAX_ACK_IDS, REF_ALLOWANCE, checkFrameSize } from "./lib/protocol.js";
import { PushMethods } from "./lib/push.js";
import { RequestMethods } from "./lib/requests.js";
import { ResumeMethods } from "./lib/resume.js";
import { RecentIds, StorageMethods, defaultStorage } from "./lib/storage.js";
import { shareConnection } from "./lib/tabs.js";

/** @typedef {import("./lib/connection.js").Connection} Connection */
/** @typedef {import("./lib/requests.js").Pending} Pending */

export { SUBPROTOCOL, MAX_FRAME_BYTES, MAX_ACK_IDS } from "./lib/protocol.js";
export { HeraldError } from "./lib/errors.js";
export { backoffDelay } from "./lib/connection.js";
export { base64UrlBytes } from "./lib/push.js";
export { MAX_HISTORY } from "./lib/chat.js";

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
    this._listeners = {
      notification: new Set(),
      state: new Set(),
      error: new Set(),
      left: new Set(),
      presence: new Set(),
      gap: new Set(),
      receipt: new Set(),
      read: new Set(),
      recalled: new Set(),
      unread: new Set(),
    };
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
    /** @private @type {import("./lib/tabs.js").TabShare | null} sharing one socket between tabs */
    this._tabs = shareConnection(this);
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
  /**
   * With `shareConnection`: `"leader"` when this tab holds the socket the tabs share,
   * `"follower"` when another tab does (or none yet); null when this client has its own socket.
   */
  get tabRole() {
    return this._tabs ? this._tabs.role : null;
  }
  /** The groups this client keeps joined (re-joined after every reconnect). */
  get groups() {
    return [...this._groups];
  }

  /**
   * Subscribes to `"notification"` (notification, meta), `"state"` (change), `"error"`
   * (HeraldError), `"left"` (frame), `"presence"` (`{group, user, state}`), `"receipt"`
   * (`{group, user, upTo}`: another member read a chat up to a cursor) or `"gap"`
   * (`{since, via}`: the resume point was older than the server's retention window, so
   * notifications may have expired unseen). Returns the function that unsubscribes.
   * @param {"notification" | "state" | "error" | "left" | "presence" | "receipt" | "gap" | "read" | "recalled" | "unread"} event
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
    // Sharing tabs first find the tab that holds the socket, or become it.
    queueMicrotask(() => {
      if (!this._closed) void (this._tabs ? this._tabs.start() : this._open());
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
    if (!this._tabs?.remote && (!this._conn || this._conn.phase === "opening")) {
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
    // Each answer carries the unread count after it and its read sequence (lib/inbox.js).
    for (const r of replies) this._applyUnread(r.unread, r.seq);
    const last = replies.reduce((a, r) => (Number(r.seq) > Number(a?.seq ?? -1) ? r : a), replies[0]);
    return { type: "acked", count: replies.reduce((n, r) => n + (Number(r.count) || 0), 0), unread: last?.unread, seq: last?.seq };
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
    // (Not where this tab holds a socket shared with others: its echo must still reach them.)
    if (typeof reply.id === "string" && reply.id && !this._tabs?.echoed(reply.id)) {
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
    if (this._tabs?.remote) return this._tabs.resume();
    const conn = this._conn;
    if (!conn) {
      return Promise.reject(new HeraldError("disconnected", "not connected: the next connection resumes by itself"));
    }
    // While syncing, the connection's own resume is running (or about to): share it.
    if (conn.phase !== "ready") return conn.resuming ?? Promise.resolve({ count: 0, cursor: this._cursor });
    return this._resumeAll(conn);
  }


  /** Stops everything: closes the socket, cancels timers and rejects pending requests. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._tabs?.close();
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
    // Sharing tabs: the leader relays it to the others, and it may not be this tab's (a group
    // only another tab joined).
    if (this._tabs && !this._tabs.emitting(event, args)) return;
    this._fire(event, ...args);
  }

  /** Calls the listeners. @private @param {string} event @param {unknown[]} args */
  _fire(event, ...args) {
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

// The private methods, one group per concern in lib/, become HeraldClient's own methods.
installMethods(HeraldClient, [ConnectionMethods, ResumeMethods, PollingMethods, RequestMethods, StorageMethods, PushMethods, ChatMethods, InboxMethods]);

/**
 * Same as `new HeraldClient(options)`.
 * @param {import("./herald.js").HeraldClientOptions} options
 * @returns {HeraldClient}
 */
export function createHeraldClient(options) {
  return new HeraldClient(options);
}
