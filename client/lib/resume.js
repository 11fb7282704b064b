// @ts-check
// Catching up: `resume` pages from the resume point after every (re)connect and in the
// background, and the dedupe that delivers each notification once, live or replayed.

import { HeraldError } from "./errors.js";
import { Methods } from "./methods.js";
import { MAX_ACK_IDS, laterCursor } from "./protocol.js";

/** @typedef {import("./connection.js").Connection} Connection */

/** Consecutive `resume` pages that make no progress before giving up until the next connect. */
const MAX_RESUME_STALLS = 3;
/** Consecutive `resume` pages that deliver nothing (while the cursor moves) before giving up. */
const MAX_EMPTY_RESUME_PAGES = 20;

/** HeraldClient's resume and delivery methods. */
export class ResumeMethods extends Methods {
  /**
   * Resumes from the last cursor, paging while the server says `more`.
   * @private @param {Connection} conn
   * @returns {Promise<import("../herald.js").ResumeResult>}
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
    // A producer's update comes again with the same id and a higher `version` (lib/inbox.js).
    const duplicate = this._heldVersion(n);
    this._seen.add(n.id);
    this._persist();
    if (duplicate) return;
    if (resume && replayed && resume.skip) return;
    /** @type {import("../herald.js").NotificationMeta} */
    const meta = { replayed, history: Boolean(resume && replayed && resume.history) };
    this._emit("notification", n, meta);
  }
}
