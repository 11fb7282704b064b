// @ts-check
// The inbox across devices (issue #33): read state other devices sent (`read` frames with the
// user's unread count), producers' updates (a notification again with a higher `version`) and
// recalls (`recalled`), and the user's notification preferences over HTTP.
//
// The unread count is exact when several devices read at once because every count carries the
// server's read sequence number `seq`: this client keeps the count of the highest `seq` it saw,
// whatever order frames and answers arrive in.

import { Methods } from "./methods.js";

/** Versions of ids remembered, to tell an update from a copy. */
const MAX_VERSIONS = 1000;

/** @param {unknown} v @returns {v is number} */
const isCount = (v) => typeof v === "number" && Number.isInteger(v) && v >= 0;

export class InboxMethods extends Methods {
  /**
   * The user's unread count as the server last said it (after a read on any device), or null
   * before the first read of this client's lifetime: fetch it with `unreadCount()`.
   * @returns {number | null}
   */
  get unread() {
    return this._inboxState().unread;
  }

  /** @private */
  _inboxState() {
    if (!this._inbox) {
      /** @private */
      this._inbox = { unread: /** @type {number | null} */ (null), seq: 0, versions: new Map() };
    }
    return this._inbox;
  }

  /**
   * Keeps `unread` if `seq` is the newest read the client heard of; emits `unread` when the
   * count changed. Returns whether it was newer.
   * @private @param {unknown} unread @param {unknown} seq
   */
  _applyUnread(unread, seq) {
    const s = this._inboxState();
    if (!isCount(unread) || !isCount(seq) || seq <= s.seq) return false;
    s.seq = seq;
    const changed = s.unread !== unread;
    s.unread = unread;
    if (changed) this._emit("unread", { count: unread, seq });
    return true;
  }

  /**
   * A read on another device: the ids (or everything up to a cursor) are read.
   * @private @param {any} frame
   */
  _onRead(frame) {
    const ids = Array.isArray(frame.ids) ? frame.ids.filter((/** @type {unknown} */ i) => typeof i === "string") : undefined;
    const upTo = typeof frame.upTo === "string" ? frame.upTo : undefined;
    if (!ids && !upTo) return;
    this._applyUnread(frame.unread, frame.seq);
    this._emit("read", { type: "read", ids, upTo, unread: frame.unread, seq: frame.seq });
  }

  /** A producer took a notification back. @private @param {any} frame */
  _onRecalled(frame) {
    if (typeof frame.id !== "string" || !frame.id) return;
    const s = this._inboxState();
    // A recall is final: a late copy of an older version must not bring it back.
    s.versions.set(frame.id, Infinity);
    this._seen.add(frame.id);
    this._emit("recalled", { type: "recalled", id: frame.id, topic: frame.topic, replayed: frame.replayed === true });
  }

  /**
   * Whether notification `n` is a newer version of an id this client holds (then it is shown
   * again, replacing the old one), and remembers its version. A recalled id is never newer.
   * @private @param {any} n
   */
  _newerVersion(n) {
    const s = this._inboxState();
    const version = isCount(n.version) ? n.version : 1;
    const known = s.versions.get(n.id) ?? (this._seen.has(n.id) ? 1 : 0);
    if (version <= known) return false;
    s.versions.delete(n.id);
    s.versions.set(n.id, version);
    while (s.versions.size > MAX_VERSIONS) {
      const oldest = s.versions.keys().next().value;
      if (oldest === undefined) break;
      s.versions.delete(oldest);
    }
    return known > 0;
  }

  /**
   * Whether `n` is to be dropped as held: a copy of a version this client has, or of a recalled id.
   * @private @param {any} n
   */
  _heldVersion(n) {
    if (this._newerVersion(n)) return false;
    const v = this._inboxState().versions.get(n.id);
    return v === Infinity || this._seen.has(n.id);
  }

  /**
   * Marks notifications read over HTTP (`POST /notifications/read`): `ids`, or everything up to
   * a cursor Herald handed out. The user's other devices hear of it; resolves with
   * `{count, unread, seq}`.
   * @param {{ids?: string[], upTo?: string}} read
   */
  async markRead(read) {
    const body = {};
    if (read?.ids !== undefined) body.ids = read.ids;
    if (read?.upTo !== undefined) body.upTo = read.upTo;
    const answer = await this._httpJson("POST", `${this._httpBase("markRead")}/notifications/read`, await this._httpToken(), body);
    this._applyUnread(answer?.unread, answer?.seq);
    return answer;
  }

  /**
   * The user's unread count from the server (`GET /notifications/unread-count`):
   * `{count, capped}`.
   */
  async unreadCount() {
    return this._httpJson("GET", `${this._httpBase("unreadCount")}/notifications/unread-count`, await this._httpToken());
  }

  /**
   * The user's notification preferences (`GET /preferences`): categories off per channel
   * (`inapp`, `push`, `escalation`), quiet hours, and `source` (`user`, `tenant`, `none`).
   */
  async getPreferences() {
    return this._httpJson("GET", `${this._httpBase("getPreferences")}/preferences`, await this._httpToken());
  }

  /**
   * Replaces the user's preferences (`PUT /preferences`), e.g.
   * `{off: {push: ["forum.*"]}, quietHours: {start: "22:00", end: "07:00", timeZone: "Europe/Berlin"}}`.
   * Rejects with `bad_request` naming the field (an unknown channel, a bad time zone).
   * @param {{off?: Record<string, string[]>, quietHours?: {start: string, end: string, timeZone: string} | null}} prefs
   */
  async setPreferences(prefs) {
    return this._httpJson("PUT", `${this._httpBase("setPreferences")}/preferences`, await this._httpToken(), prefs);
  }
}
