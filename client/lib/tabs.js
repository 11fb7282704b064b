// @ts-check
// One socket per browser: the tabs of an origin that use Herald as the same user share one
// connection. The tab holding a Web Lock (the leader) runs the connection exactly as a lone
// client does; the others (followers) send it their requests and receive its events over a
// BroadcastChannel. When the leader goes, a waiting tab gets the lock and connects, resuming
// from the cursor and ids every tab was kept up to date with. Connection minutes and connects
// (API Gateway's 500 new connections/s per account) are then paid per browser, not per tab.
//
// Messages on the channel (`from` is the sending tab's id, `to` a tab's id):
//   hello  {groups, visible}    a tab starts; every tab answers `tab`, the leader also `leader`
//   tab    {groups, visible}    a tab's groups or visibility (the leader re-joins all groups)
//   leader {state, cursor}      the sender holds the lock: requests go to it
//   bye    {}                   a tab closes (a crashed one sends nothing: the lock moves anyway)
//   req    {to, id, frame|call} a request for the leader's socket; answered by
//   res    {to, id, value|error}
//   event  {event, args, scope} an event of the connection (notification, state, error, left,
//                               presence, gap); `scope` is a group when only its holders get it
//   cursor {cursor}             the leader's resume point moved

import { HeraldError, errText } from "./errors.js";
import { laterCursor } from "./protocol.js";

/** Events of the connection that the leader relays to the other tabs. */
const RELAYED = new Set(["notification", "state", "error", "left", "presence", "gap", "read", "recalled", "unread"]);
/** How many publish keys of this tab are remembered to drop their echo. */
const MAX_ECHO_KEYS = 256;

/**
 * What sharing needs from the environment: a page (not Node, not a worker), Web Locks and
 * BroadcastChannel. Null where any is missing: the client then opens its own socket.
 * @param {any} [g]
 * @returns {{locks: any, Channel: any} | null}
 */
export function sharingSupport(g = globalThis) {
  const locks = g.navigator?.locks;
  if (!g.document || !locks || typeof locks.request !== "function" || typeof g.BroadcastChannel !== "function") return null;
  return { locks, Channel: g.BroadcastChannel };
}

/**
 * The lock and channel name of a user's shared connection. Locks and channels are per origin
 * already; the endpoint and the token's user are in the name so that two users (or two stages)
 * in one origin never share a socket.
 * @param {{url: string, tenant: string, sub: string}} identity
 * @param {string} [shareKey]
 */
export function shareName(identity, shareKey) {
  if (typeof shareKey === "string" && shareKey) return `herald.tabs:${shareKey}`;
  return `herald.tabs:${identity.url}|${identity.tenant}|${identity.sub}`;
}

/**
 * The group an event concerns, if any: a notification's topic, a presence, left or (re-join)
 * error frame's group.
 * @param {string} event @param {any[]} args @returns {string | null}
 */
export function groupOf(event, args) {
  const x = args[0];
  if (!x || typeof x !== "object") return null;
  const g = event === "notification" ? x.topic : event === "presence" || event === "left" || event === "error" ? x.group : null;
  return typeof g === "string" && g ? g : null;
}

/**
 * The key a publish was sent with, from the id of the notification it became (`~user~key`):
 * the sender's own copies are recognised by it.
 * @param {unknown} id @returns {string | null}
 */
export function echoKey(id) {
  if (typeof id !== "string" || !id.startsWith("~")) return null;
  const i = id.lastIndexOf("~");
  return i > 0 ? id.slice(i + 1) : null;
}

/** An error as it crosses the channel (structured clone drops an Error's own fields). @param {any} e */
export function encodeError(e) {
  if (e instanceof HeraldError) return { code: e.code, message: e.message, frame: e.frame, group: e.group };
  return { code: "server_error", message: errText(e) };
}

/** @param {any} x @returns {HeraldError} */
export function decodeError(x) {
  return new HeraldError(String(x?.code ?? "server_error"), String(x?.message ?? ""), { frame: x?.frame, group: x?.group });
}

/** @param {string} event @param {any[]} args */
function encodeArgs(event, args) {
  return event === "error" ? [encodeError(args[0])] : args;
}

/** @param {string} event @param {any[]} args */
function decodeArgs(event, args) {
  return event === "error" ? [decodeError(args[0])] : args;
}

/** A key for a publish without one: unique, in the server's id alphabet. */
function newKey() {
  const rand = Math.random().toString(36).slice(2, 12);
  return `t${Date.now().toString(36)}${rand}`;
}

function pageVisible() {
  const doc = /** @type {any} */ (globalThis).document;
  return !doc || doc.visibilityState !== "hidden";
}

/**
 * The client's groups, telling the tab layer when they change (every tab's groups are re-joined
 * by whichever tab leads). `justDeleted` keeps the group removed in the current synchronous turn:
 * the client forgets a group the server took away just before it emits the event about it.
 */
class WatchedGroups extends Set {
  /** @param {Iterable<string>} items @param {() => void} onChange */
  constructor(items, onChange) {
    super(items);
    /** @type {(() => void) | null} */
    this.onChange = onChange;
    /** @type {string | null} */
    this.justDeleted = null;
  }
  /** @param {string} g */
  add(g) {
    const had = this.has(g);
    super.add(g);
    if (!had) this.onChange?.();
    return this;
  }
  /** @param {string} g */
  delete(g) {
    const had = super.delete(g);
    if (had) {
      this.justDeleted = g;
      queueMicrotask(() => {
        if (this.justDeleted === g) this.justDeleted = null;
      });
      this.onChange?.();
    }
    return had;
  }
}

/**
 * @typedef {object} Forwarded  a follower's request, waiting for the leader's answer
 * @property {number} id
 * @property {{frame?: Record<string, unknown>, call?: "resume"}} body
 * @property {(v: any) => void} resolve
 * @property {(e: Error) => void} reject
 * @property {ReturnType<typeof setTimeout> | null} timer
 * @property {string | null} sentTo  the leader it went to (null: waiting for one)
 */

/**
 * A client's part in sharing one connection between tabs. `client` is the HeraldClient; this
 * object reaches into its private state on purpose, as lib/'s method groups do.
 */
export class TabShare {
  /** @param {any} client @param {{locks: any, Channel: any}} env */
  constructor(client, env) {
    this.client = client;
    this.env = env;
    /** This tab's id on the channel. */
    this.id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
    /** Holding the lock: this tab's client owns the socket. */
    this.leading = false;
    /** @type {string | null} the tab that holds the lock, as far as this tab knows */
    this.leaderId = null;
    this.closed = false;
    /** @type {any} */
    this.channel = null;
    /** @type {AbortController | null} */
    this.abort = null;
    /** @type {(() => void) | null} releases the lock */
    this.release = null;
    /** @type {Map<string, {groups: Set<string>, visible: boolean}>} the other tabs */
    this.peers = new Map();
    /** Groups left by every tab that held them since the connection's last sync (leader only). */
    this.orphans = new Set();
    /** @type {Map<number, Forwarded>} */
    this.pending = new Map();
    this.seq = 0;
    /** Keys of this tab's publishes sent with a forced echo: their copies are not shown here. */
    this.echoes = new Set();
    /** @type {string | null} the last cursor told to the other tabs */
    this.toldCursor = null;
    /** @type {(() => void)[]} */
    this.undo = [];
    client._groups = new WatchedGroups(client._groups, () => this.announce());
  }

  /** "leader" or "follower" (still looking for a leader counts as following). */
  get role() {
    return this.leading ? "leader" : "follower";
  }

  /** A request that goes to the leader (this tab is not it). */
  get remote() {
    return !this.leading;
  }

  // ------------------------------------------------------------------------------ lifecycle

  /** Finds the user's channel (from the token), then waits for the lock; follows meanwhile. */
  async start() {
    const client = this.client;
    client._setState("connecting", { attempt: 0 });
    let token;
    for (let attempt = 1; ; attempt++) {
      try {
        token = client._o.getToken ? await client._o.getToken() : client._o.token;
        if (typeof token !== "string" || !token) throw new TypeError("getToken() returned no token");
        break;
      } catch (e) {
        if (this.closed) return;
        client._emitError(new HeraldError("token_failed", `could not get a token: ${errText(e)}`, { cause: e }));
        const { initialMs, maxMs, factor } = client._o.backoff;
        await new Promise((r) => setTimeout(r, Math.min(maxMs, initialMs * Math.pow(factor, attempt - 1))));
        if (this.closed) return;
      }
    }
    if (this.closed) return;
    await client._loadState(token);
    if (this.closed) return;
    const name = shareName(client._identity(token), client._o.shareKey);
    try {
      this.channel = new this.env.Channel(name);
    } catch {
      // Not usable here after all (a sandboxed frame): this client opens its own socket.
      client._tabs = null;
      this.takeOver(null);
      this.close();
      void client._open();
      return;
    }
    this.channel.onmessage = (/** @type {MessageEvent} */ ev) => this.onMessage(ev.data);
    this.listenToPage();
    this.post({ t: "hello", ...this.info() });
    this.abort = new AbortController();
    this.env.locks
      .request(name, { signal: this.abort.signal }, () => {
        if (this.closed) return undefined;
        // Held until this client closes or the page goes (the browser releases it then).
        return new Promise((release) => {
          this.release = () => release(undefined);
          this.lead();
        });
      })
      .catch((/** @type {any} */ e) => {
        if (!this.closed && e?.name !== "AbortError") {
          client._emitError(new HeraldError("connect_failed", `cannot take the tabs' lock: ${errText(e)}`, { cause: e }));
        }
      });
  }

  /** This tab got the lock: it connects, and the others' requests come to it. */
  lead() {
    const client = this.client;
    const previous = this.leaderId;
    this.leading = true;
    this.leaderId = this.id;
    this.orphans.clear();
    this.takeOver(previous);
    this.post({ t: "leader", state: client._state, cursor: client._cursor });
    void (async () => {
      // What the previous leader saved last (its final cursor and ids) may be newer than what it
      // told this tab before it went.
      await client._mergeSaved();
      if (!this.closed && !client._closed) void client._open();
    })();
  }

  /**
   * This client's requests that waited for a leader go on its own connection now; those sent to
   * the leader that went (`previous`) may or may not have been sent: as on a lost connection.
   * @private @param {string | null} previous
   */
  takeOver(previous) {
    const client = this.client;
    for (const p of [...this.pending.values()]) {
      this.pending.delete(p.id);
      if (p.timer) clearTimeout(p.timer);
      if (p.sentTo && p.sentTo === previous) {
        p.reject(new HeraldError("disconnected", "the tab holding the connection went away before the reply"));
      } else {
        (p.body.call === "resume" ? client.resume() : client._requestHere(p.body.frame)).then(p.resolve, p.reject);
      }
    }
  }

  /** The client closes: the others are told, the lock (if held) goes to another tab. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.post({ t: "bye" });
    for (const f of this.undo.splice(0)) f();
    this.abort?.abort();
    this.release?.();
    this.release = null;
    try {
      this.channel?.close();
    } catch {
      // already closed
    }
    this.channel = null;
    this.client._groups.onChange = null;
    for (const p of [...this.pending.values()]) this.settle(p, new HeraldError("closed", "client closed"));
  }

  /** @private */
  listenToPage() {
    const g = /** @type {any} */ (globalThis);
    if (typeof g.addEventListener !== "function") return;
    // A page that goes says so (its lock is released with it); one restored from the
    // back-forward cache introduces itself again.
    const onHide = () => this.post({ t: "bye" });
    const onShow = (/** @type {any} */ ev) => {
      if (ev?.persisted) this.post({ t: "hello", ...this.info() });
    };
    const onVisibility = () => this.announce();
    g.addEventListener("pagehide", onHide);
    g.addEventListener("pageshow", onShow);
    g.document?.addEventListener?.("visibilitychange", onVisibility);
    this.undo.push(() => {
      g.removeEventListener("pagehide", onHide);
      g.removeEventListener("pageshow", onShow);
      g.document?.removeEventListener?.("visibilitychange", onVisibility);
    });
  }

  // ------------------------------------------------------------------------------ the channel

  /** @private @param {Record<string, unknown>} msg */
  post(msg) {
    if (!this.channel) return;
    try {
      this.channel.postMessage({ ...msg, from: this.id });
    } catch (e) {
      this.client._emitError(new HeraldError("bad_frame", `could not tell the other tabs: ${errText(e)}`, { cause: e }));
    }
  }

  /** @private */
  info() {
    return { groups: [...this.client._groups], visible: pageVisible() };
  }

  /** Tells the other tabs this tab's groups and visibility. @private */
  announce() {
    if (!this.closed) this.post({ t: "tab", ...this.info() });
  }

  /** @private @param {any} msg */
  onMessage(msg) {
    if (this.closed || !msg || typeof msg !== "object" || msg.from === this.id) return;
    if (msg.to != null && msg.to !== this.id) return;
    const client = this.client;
    switch (msg.t) {
      case "hello":
        this.peer(msg);
        this.announce();
        if (this.leading) this.post({ t: "leader", state: client._state, cursor: client._cursor });
        break;
      case "tab":
        this.peer(msg);
        break;
      case "leader":
        this.follow(msg);
        break;
      case "bye":
        this.gone(msg.from);
        break;
      case "req":
        if (this.leading) void this.serve(msg);
        break;
      case "res": {
        const p = this.pending.get(msg.id);
        if (p) this.settle(p, msg.error ? decodeError(msg.error) : null, msg.value);
        break;
      }
      case "event":
        if (!this.leading && Array.isArray(msg.args)) this.deliver(msg.event, decodeArgs(msg.event, msg.args), msg.scope ?? null);
        break;
      case "cursor":
        if (!this.leading && typeof msg.cursor === "string") client._cursor = laterCursor(client._cursor, msg.cursor);
        break;
      default:
      // a newer client's message: ignore it
    }
  }

  /** Another tab's groups and visibility. @private @param {any} msg */
  peer(msg) {
    const before = this.peers.get(msg.from);
    const groups = new Set(Array.isArray(msg.groups) ? msg.groups.filter((/** @type {unknown} */ g) => typeof g === "string") : []);
    const visible = msg.visible !== false;
    this.peers.set(msg.from, { groups, visible });
    if (this.leading && visible && !(before?.visible ?? false)) this.woke();
  }

  /** A tab became visible: the leader checks a quiet connection now, as for its own page. @private */
  woke() {
    const client = this.client;
    client._reconnectNow();
    const conn = client._conn;
    if (conn && conn.phase === "ready") {
      if (Date.now() - conn.lastSentAt > 60000) client._keepAlive(conn);
      else client._schedulePing(conn);
    }
  }

  /** Another tab took the lock. @private @param {any} msg */
  follow(msg) {
    const client = this.client;
    if (this.leading) return; // only one tab holds the lock; a stale message
    const previous = this.leaderId;
    this.leaderId = msg.from;
    if (previous && previous !== msg.from) this.failSentTo(previous);
    if (typeof msg.cursor === "string") client._cursor = laterCursor(client._cursor, msg.cursor);
    if (typeof msg.state === "string" && msg.state !== "closed" && msg.state !== "idle") client._setState(msg.state);
    for (const p of this.pending.values()) if (!p.sentTo) this.send(p);
  }

  /** A tab closed. @private @param {string} tab */
  gone(tab) {
    const client = this.client;
    const left = this.peers.get(tab);
    this.peers.delete(tab);
    if (tab === this.leaderId && !this.leading) {
      this.leaderId = null;
      this.failSentTo(tab);
      // Until another tab has the lock and connects, as after a lost connection.
      client._setState("reconnecting", { attempt: 1, delayMs: 0, reason: "the tab holding the connection closed" });
    }
    if (this.leading && left) {
      // Its groups that no tab holds any more are left, as its own connection's memberships
      // would have ended with it.
      for (const g of left.groups) {
        if (this.heldByAny(g)) continue;
        this.orphans.add(g);
        // Queued until ready if the connection is still syncing.
        if (client._conn) client._requestHere({ action: "leave", group: g }).catch(() => {});
      }
    }
  }

  // ------------------------------------------------------------------------------ requests

  /**
   * A request of this tab's app (join, leave, ack, ping, publish): on the socket when this tab
   * leads, else sent to the leader.
   * @param {Record<string, unknown>} frame @returns {Promise<any>}
   */
  request(frame) {
    if (this.client._closed) return Promise.reject(new HeraldError("closed", "client closed"));
    frame = this.withEcho(frame);
    return this.leading ? this.onSocket(frame) : this.forward({ frame });
  }

  /** `resume()` of a follower: the leader resumes. @returns {Promise<any>} */
  resume() {
    return this.forward({ call: "resume" });
  }

  /**
   * A publish the other tabs must see: the server sends no copy to the sending connection, which
   * is now every tab's, so it is asked for one (`echo`) under a key this tab keeps to drop it here.
   * @private @param {Record<string, unknown>} frame
   */
  withEcho(frame) {
    if (frame.action !== "publish" || frame.echo || this.peers.size === 0) return frame;
    const key = typeof frame.id === "string" && frame.id ? frame.id : newKey();
    this.echoes.add(key);
    if (this.echoes.size > MAX_ECHO_KEYS) this.echoes.delete(this.echoes.values().next().value);
    return { ...frame, id: key, echo: true };
  }

  /**
   * A request on the leader's socket, from any tab. A `leave` of a group another tab still holds
   * is answered here: the connection stays in it for that tab.
   * @private @param {Record<string, unknown>} frame
   */
  onSocket(frame) {
    const client = this.client;
    if (frame.action === "leave" && typeof frame.group === "string") {
      const g = frame.group;
      if (this.heldByAny(g)) return Promise.resolve({ type: "left", group: g, shared: true });
      const conn = client._conn;
      if (!conn || conn.phase === "opening") return Promise.resolve({ type: "left", group: g, local: true });
      this.orphans.add(g);
    }
    return client._requestHere(frame);
  }

  /** @private @param {Forwarded["body"]} body @returns {Promise<any>} */
  forward(body) {
    return new Promise((resolve, reject) => {
      /** @type {Forwarded} */
      const p = { id: ++this.seq, body, resolve, reject, timer: null, sentTo: null };
      const what = body.call ?? String(body.frame?.action);
      p.timer = setTimeout(() => {
        p.timer = null;
        this.settle(p, new HeraldError("timeout", `no answer to ${what} within ${this.client._o.requestTimeoutMs} ms`));
      }, this.client._o.requestTimeoutMs);
      this.pending.set(p.id, p);
      if (this.leaderId && !this.leading) this.send(p);
    });
  }

  /** @private @param {Forwarded} p */
  send(p) {
    p.sentTo = this.leaderId;
    this.post({ t: "req", to: this.leaderId, id: p.id, ...p.body });
  }

  /** @private @param {Forwarded} p @param {Error | null} err @param {any} [value] */
  settle(p, err, value) {
    if (!this.pending.delete(p.id)) return;
    if (p.timer) clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(value);
  }

  /** Requests sent to a leader that went: the same as those in flight on a lost connection. @private @param {string} tab */
  failSentTo(tab) {
    for (const p of [...this.pending.values()]) {
      if (p.sentTo === tab) this.settle(p, new HeraldError("disconnected", "the tab holding the connection went away before the reply"));
    }
  }

  /** The leader answers another tab's request. @private @param {any} msg */
  async serve(msg) {
    /** @type {Record<string, unknown>} */
    const answer = { t: "res", to: msg.from, id: msg.id };
    try {
      answer.value = msg.call === "resume" ? await this.client.resume() : await this.onSocket(msg.frame);
    } catch (e) {
      answer.error = encodeError(e);
    }
    this.post(answer);
  }

  // ------------------------------------------------------------------------------ the leader's side

  /** Every tab's groups: what the leader's connection joins after each (re)connect. */
  allGroups() {
    this.orphans.clear();
    const all = new Set(this.client._groups);
    for (const { groups } of this.peers.values()) for (const g of groups) all.add(g);
    return [...all];
  }

  /** Whether this client holds `g` (or forgot it in this very turn, to emit the event about it). @private @param {string} g */
  holds(g) {
    const groups = this.client._groups;
    return groups.has(g) || groups.justDeleted === g;
  }

  /** Whether this tab or another one holds `g` now. @private @param {string} g */
  heldByAny(g) {
    if (this.client._groups.has(g)) return true;
    for (const { groups } of this.peers.values()) if (groups.has(g)) return true;
    return false;
  }

  /**
   * Every event the client emits passes here first. The leader relays the connection's events
   * to the other tabs; returns whether this tab's own listeners get it.
   * @param {string} event @param {any[]} args @returns {boolean}
   */
  emitting(event, args) {
    if (this.closed || !this.leading || !RELAYED.has(event)) return true;
    if (event === "state" && args[0]?.state === "closed") return true; // this tab's own close
    const g = groupOf(event, args);
    // A group some tab joined (or left lately) reaches only the tabs holding it; any other
    // (the user's own, the tenant, a durable subscription) reaches every tab, as each tab's own
    // connection would have received it.
    const scope = g && (this.holds(g) || this.heldByAny(g) || this.orphans.has(g)) ? g : null;
    this.post({ t: "event", event, args: encodeArgs(event, args), scope });
    if (scope && !this.holds(scope)) return false;
    return !this.ownEcho(event, args);
  }

  /** Whether the leader may write the saved state (and then tells the others the cursor). */
  persisting() {
    if (!this.leading || this.closed) return false;
    const cursor = this.client._cursor;
    if (typeof cursor === "string" && cursor !== this.toldCursor) {
      this.toldCursor = cursor;
      this.post({ t: "cursor", cursor });
    }
    return true;
  }

  /** Whether every tab using the connection is hidden (no keep-alive pings then). */
  allHidden() {
    if (pageVisible()) return false;
    for (const { visible } of this.peers.values()) if (visible) return false;
    return true;
  }

  // ------------------------------------------------------------------------------ the followers' side

  /**
   * Whether `id` is a publish of this tab whose copy the socket here still has to relay: the
   * client must not count it as held yet (it would drop the copy as a duplicate).
   * @param {string} id
   */
  echoed(id) {
    const key = echoKey(id);
    return this.leading && key != null && this.echoes.has(key);
  }

  /** @private @param {string} event @param {any[]} args */
  ownEcho(event, args) {
    if (event !== "notification") return false;
    const key = echoKey(args[0]?.id);
    return key != null && this.echoes.has(key);
  }

  /**
   * An event the leader relayed: this tab's client emits it as its own connection's, after the
   * same checks (dedupe by id, the groups this tab holds).
   * @private @param {string} event @param {any[]} args @param {string | null} scope
   */
  deliver(event, args, scope) {
    const client = this.client;
    if (event === "state") {
      const { state, previous: _previous, ...detail } = args[0] ?? {};
      if (typeof state === "string" && state !== "closed" && state !== "idle") client._setState(state, detail);
      return;
    }
    if (!RELAYED.has(event)) return;
    if (event === "notification") {
      const id = args[0]?.id;
      if (typeof id === "string") {
        // Known here, whether shown or not: this tab may lead next and list it in `have`.
        const duplicate = client._heldVersion(args[0]);
        client._seen.add(id);
        if (duplicate) return;
      }
      if (this.ownEcho(event, args)) return;
    }
    // The leader's read state is this tab's too: the count and the recalled ids.
    if (event === "unread") {
      client._applyUnread(args[0]?.count, args[0]?.seq); // emits `unread` here when it changed
      return;
    }
    if (event === "recalled" && typeof args[0]?.id === "string") client._inboxState().versions.set(args[0].id, Infinity);
    if (scope) {
      if (!client._groups.has(scope)) return;
      // The server took the group away, or refused to re-join it: this tab forgets it too.
      const refused = event === "error" && (args[0]?.code === "forbidden" || args[0]?.code === "bad_request");
      if (event === "left" || refused) client._groups.delete(scope);
    }
    client._fire(event, ...args);
  }
}

/**
 * The tab layer of a new client, or null when it opens its own socket: `shareConnection: false`,
 * or no Web Locks / BroadcastChannel / page (Node, workers, React Native, older browsers).
 * @param {any} client
 * @returns {TabShare | null}
 */
export function shareConnection(client) {
  if (client._o.shareConnection === false) return null;
  const env = sharingSupport();
  return env ? new TabShare(client, env) : null;
}
