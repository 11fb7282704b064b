// @ts-check
// What the client remembers per user across page loads: the resume point and the recently seen
// ids (the dedupe memory), in a storage adapter keyed by URL, tenant and user.

import { HeraldError, errText } from "./errors.js";
import { Methods } from "./methods.js";
import { laterCursor } from "./protocol.js";

const STORAGE_VERSION = 1;

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
export function defaultStorage() {
  try {
    const s = /** @type {any} */ (globalThis).localStorage;
    if (s && typeof s.getItem === "function") {
      const probe = "__herald_probe__";
      s.setItem(probe, "1");
      s.removeItem(probe);
      return /** @type {import("../herald.js").HeraldStorage} */ (s);
    }
  } catch {
    // unavailable (private mode, sandboxed iframe, server-side rendering)
  }
  return null;
}

/** A bounded set of ids in least-recently-seen order. */
export class RecentIds {
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

/** HeraldClient's methods that load and save the resume point and the seen ids. */
export class StorageMethods extends Methods {
  /**
   * Whose state this is: the URL without its query, and the token's tenant and `sub`.
   * @private @param {string} token @returns {import("../herald.js").HeraldIdentity}
   */
  _identity(token) {
    const payload = jwtPayload(token) ?? {};
    return {
      url: this._o.url.split("?")[0],
      tenant: String(payload[this._o.tenantClaim] ?? ""),
      sub: String(payload.sub ?? ""),
    };
  }

  /**
   * Takes in what another tab of this user saved under the same key since it was loaded: the
   * later resume point and the ids not known here (a tab taking over the shared connection).
   * @private
   */
  async _mergeSaved() {
    if (!this._storage || !this._storageKey) return;
    try {
      const raw = await this._storage.getItem(this._storageKey);
      const saved = raw ? JSON.parse(raw) : null;
      if (!saved || saved.v !== STORAGE_VERSION) return;
      if (typeof saved.cursor === "string") this._cursor = laterCursor(this._cursor, saved.cursor);
      if (Array.isArray(saved.seen)) for (const id of saved.seen) if (typeof id === "string" && !this._seen.has(id)) this._seen.add(id);
    } catch (e) {
      this._emitError(new HeraldError("storage_failed", `could not read saved state: ${errText(e)}`, { cause: e }));
    }
  }

  /**
   * Loads the cursor and recently seen ids of the token's user (keyed by URL, tenant and sub).
   * @private @param {string} token
   */
  async _loadState(token) {
    const identity = this._identity(token);
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
    // Tabs sharing a connection: only the leader writes (and tells the others the cursor).
    if (this._tabs && !this._tabs.persisting()) return;
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
}
