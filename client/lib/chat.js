// @ts-check
// Chat (docs/interactive.md, "Chat"): room history, read receipts and shared files. History,
// receipts lists and files go over the HTTP API (`httpUrl`); a read receipt goes over the
// socket like every other frame (`read`), and other members' receipts arrive as "receipt"
// events.

import { HeraldError } from "./errors.js";
import { Methods } from "./methods.js";

/** The most a history page holds (the server refuses more). */
export const MAX_HISTORY = 100;

/** @param {unknown} group @param {string} what */
function checkGroup(group, what) {
  if (typeof group !== "string" || !group) throw new HeraldError("bad_request", `${what}: group must be a non-empty string`);
}

/** HeraldClient's chat methods. */
export class ChatMethods extends Methods {
  /**
   * One page of a group's history, newest first: `{group, items, next}`. Pass `next` as
   * `before` for the older page; `next` is null on the oldest. Items are notification frames
   * (as `missed` gives them); they are not emitted as "notification" events.
   * @param {string} group
   * @param {{before?: string | null, limit?: number}} [options]
   * @returns {Promise<import("../herald.js").HistoryPage>}
   */
  async history(group, options = {}) {
    checkGroup(group, "history");
    const limit = options.limit ?? 50;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_HISTORY) {
      throw new HeraldError("bad_request", `history: limit must be a whole number in 1..${MAX_HISTORY}`);
    }
    let query = `limit=${limit}`;
    if (options.before) query += `&before=${encodeURIComponent(options.before)}`;
    return this._api("GET", `/groups/${encodeURIComponent(group)}/history?${query}`);
  }

  /**
   * Marks `group` read up to `upTo` (a cursor of one of its messages). Sent over the socket
   * (queued until connected); resolves with `{type:"marked", group, upTo, advanced}` — `upTo` is
   * the stored cursor, which never goes backwards (`advanced: false` when it was ahead already).
   * The other members receive a "receipt" event.
   * @param {string} group
   * @param {string} upTo
   * @returns {Promise<import("../herald.js").ReadFrame>}
   */
  markRoomRead(group, upTo) {
    try {
      checkGroup(group, "markRoomRead");
    } catch (e) {
      return Promise.reject(e);
    }
    if (typeof upTo !== "string" || !upTo) {
      return Promise.reject(new HeraldError("bad_request", "markRoomRead: upTo must be a cursor string"));
    }
    return this._request({ action: "read", group, upTo });
  }

  /**
   * Each member's last-read cursor in `group` (`mode: "members"`), or, in a group above the
   * server's member cap, only counts (`mode: "counts"`). With `upTo`, `seen` is how many have
   * read at least that far ("seen by N").
   * @param {string} group
   * @param {{upTo?: string}} [options]
   * @returns {Promise<import("../herald.js").ReceiptsAnswer>}
   */
  async receipts(group, options = {}) {
    checkGroup(group, "receipts");
    const query = options.upTo ? `?upTo=${encodeURIComponent(options.upTo)}` : "";
    return this._api("GET", `/groups/${encodeURIComponent(group)}/receipts${query}`);
  }

  /**
   * Shares a file in `group`: asks Herald for a presigned upload URL (refused — `bad_request`
   * — over the size limit or for a type the server does not accept), PUTs the bytes to it, and
   * resolves with `{key, name, contentType, size}`. Send `key` in a chat message's `data`; the
   * other members open it with `download(key)`.
   * @param {string} group
   * @param {Blob | {name: string, type: string, size: number, body: BodyInit}} file
   * @returns {Promise<import("../herald.js").SharedFile>}
   */
  async upload(group, file) {
    checkGroup(group, "upload");
    const f = /** @type {any} */ (file);
    if (!f || typeof f.size !== "number" || typeof f.type !== "string") {
      throw new HeraldError("bad_request", "upload: file must be a File/Blob or {name, type, size, body}");
    }
    const name = typeof f.name === "string" && f.name ? f.name : "file";
    const contentType = f.type || "application/octet-stream";
    const answer = await this._api("POST", "/uploads", { group, name, contentType, size: f.size });
    const put = answer.upload;
    const res = await fetch(put.url, { method: put.method || "PUT", headers: put.headers || {}, body: f.body ?? f });
    if (!res.ok) throw new HeraldError("upload_failed", `the upload URL answered ${res.status}`);
    return { key: answer.key, name, contentType, size: f.size };
  }

  /**
   * A short-lived download URL of a shared file, for members of the group it was shared in:
   * `{key, group, name, contentType, size, from, download: {url, expiresIn}}`. Rejects with
   * `forbidden` for others and `not_found` for a key that is not this tenant's.
   * @param {string} key
   * @returns {Promise<import("../herald.js").DownloadAnswer>}
   */
  async download(key) {
    if (typeof key !== "string" || !key) throw new HeraldError("bad_request", "download: key must be a non-empty string");
    return this._api("GET", `/uploads/${key.split("/").map(encodeURIComponent).join("/")}`);
  }

  /**
   * One call of the HTTP API with the current token; an error answer becomes a HeraldError with
   * the server's code (`status` on `frame`).
   * @private @param {string} method @param {string} path @param {unknown} [body] @returns {Promise<any>}
   */
  async _api(method, path, body) {
    if (!this._o.httpUrl) throw new HeraldError("unsupported", "this needs the client's httpUrl option");
    const token = this._o.getToken ? await this._o.getToken() : this._o.token;
    if (typeof token !== "string" || !token) throw new HeraldError("token_failed", "getToken() returned no token");
    /** @type {Record<string, string>} */
    const headers = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    const base = /** @type {string} */ (this._o.httpUrl).replace(/\/+$/, "");
    const res = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    /** @type {any} */
    let json = null;
    try {
      json = await res.json();
    } catch {
      // an empty or non-JSON answer
    }
    if (!res.ok) {
      const code = typeof json?.error?.code === "string" ? json.error.code : "server_error";
      throw new HeraldError(code, String(json?.error?.message ?? `${method} ${path} answered ${res.status}`), {
        frame: { ...(json ?? {}), status: res.status },
      });
    }
    return json;
  }
}
