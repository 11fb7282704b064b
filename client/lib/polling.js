// @ts-check
// The fallback where the WebSocket cannot be opened: `GET /notifications/missed` on a timer,
// with the same resume point, dedupe and events, until the socket opens.

import { HeraldError, errText } from "./errors.js";
import { Methods } from "./methods.js";
import { laterCursor } from "./protocol.js";

/** Notifications a poll asks for per page (the API's page limit is larger). */
const POLL_PAGE = 100;

/** HeraldClient's polling methods. */
export class PollingMethods extends Methods {
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
    /** @type {import("../herald.js").NotificationMeta} */
    const meta = { replayed: true, history, polled: true };
    this._emit("notification", { type: "notification", ...n, replayed: true }, meta);
  }
}
