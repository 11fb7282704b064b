// @ts-check
// Request/response frames matched by `ref`: queued until the connection is ready, timed out,
// settled once; sync requests wait out the user's rate budget.

import { HeraldError, errText } from "./errors.js";
import { Methods } from "./methods.js";
import { REF_ALLOWANCE, checkFrameSize } from "./protocol.js";

/** @typedef {import("./connection.js").Connection} Connection */

/** Times a sync request over the user's work budget (`rate_limited`) waits and is sent again. */
const MAX_RATE_LIMITED_WAITS = 8;
/** The longest one such wait, whatever the server says. */
const MAX_RATE_LIMITED_WAIT_MS = 60_000;

/**
 * @typedef {object} Pending  one request, queued or in flight
 * @property {Record<string, unknown>} frame
 * @property {(frame: any) => void} resolve
 * @property {(err: Error) => void} reject
 * @property {ReturnType<typeof setTimeout> | null} timer
 * @property {Connection | null} conn
 * @property {string | null} ref
 */

/** HeraldClient's request methods. */
export class RequestMethods extends Methods {
  /**
   * A request from the app. Tabs sharing a connection route it to the tab that holds the socket
   * (lib/tabs.js); otherwise it goes on this client's own connection.
   * @private @param {Record<string, unknown>} frame @returns {Promise<any>}
   */
  _request(frame) {
    return this._tabs ? this._tabs.request(frame) : this._requestHere(frame);
  }

  /**
   * A request on this client's connection: sent when the connection is ready (queued until
   * then); rejects after `requestTimeoutMs` counted from the call.
   * @private @param {Record<string, unknown>} frame @returns {Promise<any>}
   */
  _requestHere(frame) {
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
}
