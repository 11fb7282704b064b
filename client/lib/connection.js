// @ts-check
// One WebSocket at a time and its lifecycle: open with the token, re-join and resume (sync),
// route incoming frames, reconnect with backoff, keep alive while the page is visible.

import { HeraldError, errText } from "./errors.js";
import { Methods } from "./methods.js";
import { SUBPROTOCOL } from "./protocol.js";

/** @typedef {import("./requests.js").Pending} Pending */

/** @type {Readonly<Required<import("../herald.js").HeraldBackoff>>} */
export const DEFAULT_BACKOFF = Object.freeze({ initialMs: 1000, maxMs: 30000, factor: 2 });

const noop = () => {};

/**
 * The delay before reconnect attempt `attempt` (1-based): exponential, capped at `maxMs`, with
 * "equal jitter" (a random point in the upper half) so that clients dropped together do not
 * come back together.
 * @param {number} attempt
 * @param {import("../herald.js").HeraldBackoff} [backoff]
 * @param {() => number} [random]
 * @returns {number}
 */
export function backoffDelay(attempt, backoff = {}, random = Math.random) {
  const { initialMs, maxMs, factor } = { ...DEFAULT_BACKOFF, ...backoff };
  const ceiling = Math.min(maxMs, initialMs * Math.pow(factor, Math.max(0, attempt - 1)));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * @typedef {object} Connection  one WebSocket and what belongs to it
 * @property {WebSocket} ws
 * @property {"opening" | "syncing" | "ready"} phase
 * @property {Map<string, Pending>} pending
 * @property {{history: boolean, skip: boolean} | null} resume  set while a resume runs
 * @property {Promise<import("../herald.js").ResumeResult> | null} resuming
 * @property {number} live  live notifications since the last completed resume
 * @property {number} lastSentAt
 * @property {unknown} lastError
 */

function pageHidden() {
  const doc = /** @type {any} */ (globalThis).document;
  return Boolean(doc && doc.visibilityState === "hidden");
}

/** HeraldClient's connection methods. */
export class ConnectionMethods extends Methods {
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

    // `batch=1`: the server may pack several frames into one message (fewer billed messages on
    // a resume); `_onMessage` unpacks them in order. String concatenation, not URL.searchParams:
    // React Native's URL does not implement it.
    let url = `${this._o.url}${this._o.url.includes("?") ? "&" : "?"}batch=1`;
    /** @type {string[]} */
    let protocols = [SUBPROTOCOL, token];
    if (this._o.tokenTransport === "query") {
      url = `${url}&token=${encodeURIComponent(token)}`;
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
      // Tabs sharing this connection: the groups every tab joined.
      const groups = this._tabs ? this._tabs.allGroups() : [...this._groups];
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
    if (frame && frame.type === "batch" && Array.isArray(frame.frames)) {
      for (const inner of frame.frames) {
        // A frame may close or replace the connection; the rest of the batch was for it.
        if (this._conn !== conn) return;
        this._onFrame(conn, inner);
      }
      return;
    }
    this._onFrame(conn, frame);
  }

  /** @private @param {Connection} conn @param {any} frame  one server frame, parsed */
  _onFrame(conn, frame) {
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
    } else if (frame.type === "receipt" && typeof frame.group === "string" && typeof frame.user === "string") {
      this._emit("receipt", frame);
    } else if (frame.type === "read") {
      this._onRead(frame); // a read on another device of the user (lib/inbox.js)
    } else if (frame.type === "recalled") {
      this._onRecalled(frame);
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

  // ---------------------------------------------------------------- keep-alive and page

  /**
   * API Gateway closes a connection after 10 idle minutes (counted from the client's last
   * message): ping when nothing was sent for `pingIntervalMs`, while the page is visible.
   * @private @param {Connection} conn
   */
  _schedulePing(conn) {
    this._clearTimer("_pingTimer");
    if (this._closed || this._conn !== conn || conn.phase !== "ready" || this._hidden()) return;
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

  /**
   * Whether no page uses the connection now: this one is hidden (and, when tabs share the
   * connection, every other tab too), so keep-alive pings would only cost.
   * @private
   */
  _hidden() {
    return this._tabs ? this._tabs.allHidden() : pageHidden();
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
        if (this._hidden()) {
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
}
