// Type declarations for herald.js (Herald browser client). No runtime code here.

/** The subprotocol Herald answers: `"herald.v1"`. */
export declare const SUBPROTOCOL: "herald.v1";
/** API Gateway's WebSocket frame limit (32 KB); bigger client frames are refused before sending. */
export declare const MAX_FRAME_BYTES: number;
/** Ids per `ack` frame accepted by the server (`ack()` splits longer lists). */
export declare const MAX_ACK_IDS: number;

export type HeraldState = "idle" | "connecting" | "syncing" | "ready" | "reconnecting" | "polling" | "closed";

/** Error codes: the server's, then the client's own. */
export type HeraldErrorCode =
  | "unknown_action"
  | "bad_request"
  | "forbidden"
  | "too_large"
  | "rate_limited"
  | "internal"
  | "timeout"
  | "disconnected"
  | "closed"
  | "cancelled"
  | "connect_failed"
  | "token_failed"
  | "sync_failed"
  | "ping_timeout"
  | "resume_stalled"
  | "storage_failed"
  | "bad_frame"
  | "gateway_error"
  | "server_error"
  | "unsupported"
  | (string & {});

export declare class HeraldError extends Error {
  constructor(code: string, message: string, extra?: { frame?: unknown; group?: string; cause?: unknown });
  readonly name: "HeraldError";
  /** The server's `code` from `{"type":"error"}`, or a client-side code. */
  code: HeraldErrorCode;
  /** The server's error frame, when the server sent one. */
  frame?: ErrorFrame;
  /** The group concerned (join / re-join failures). */
  group?: string;
  cause?: unknown;
}

/** Storage adapter: `localStorage`, React Native's AsyncStorage, or your own. Sync or async. */
export interface HeraldStorage {
  getItem(key: string): string | null | undefined | Promise<string | null | undefined>;
  setItem(key: string, value: string): void | Promise<void>;
}

export interface HeraldBackoff {
  /** First reconnect delay ceiling in ms (default 1000; the delay is a random point in its upper half). */
  initialMs?: number;
  /** Cap in ms (default 30000). */
  maxMs?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
}

/** What the default storage key is built from. */
export interface HeraldIdentity {
  /** The WebSocket URL without its query. */
  url: string;
  /** The token's tenant claim (unverified, read only to key local state). */
  tenant: string;
  /** The token's `sub`. */
  sub: string;
}

export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol?: string;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
  onclose: ((ev: any) => any) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface HeraldClientOptions {
  /** The WebSocket stage URL, e.g. `wss://ws.example.com/prod`. */
  url: string;
  /** A fixed token (use `getToken` for tokens that expire). */
  token?: string;
  /** Called before every (re)connect: return a fresh JWT. */
  getToken?: () => string | Promise<string>;
  /** `"subprotocol"` (default: `new WebSocket(url, ["herald.v1", token])`) or `"query"` (`?token=`). */
  tokenTransport?: "subprotocol" | "query";
  /** The WebSocket class (default `globalThis.WebSocket`): `ws` in Node, React Native's, a test double. */
  WebSocketImpl?: new (url: string, protocols?: string | string[]) => WebSocketLike;
  /** Groups to join on connect (and re-join after every reconnect). */
  groups?: string[];
  /** Where the cursor and recent ids are kept. Default `localStorage` when usable; `null` = memory only. */
  storage?: HeraldStorage | null;
  /** Storage key, or a function of the identity (default `herald:<url>:<tenant>:<sub>`). */
  storageKey?: string | ((identity: HeraldIdentity) => string);
  /** Cursor to start from when nothing is saved (e.g. `cursor` from `GET /notifications/missed`). */
  initialCursor?: string | null;
  /**
   * With no saved cursor, the first resume replays the retained history. `true` (default): those
   * notifications are delivered with `meta.history = true`; `false`: consumed silently (only the
   * cursor and dedupe memory are set), so a new device starts at "now".
   */
  replayHistory?: boolean;
  /** Reconnect backoff (default 1 s doubling, capped at 30 s, jittered). */
  backoff?: HeraldBackoff;
  /** Timeout of each request (join/leave/ack/ping/resume page), counted from the call. Default 10000. */
  requestTimeoutMs?: number;
  /** Handshake timeout. Default 15000. */
  connectTimeoutMs?: number;
  /** Keep-alive: ping after this long without sending (default 9 minutes; API Gateway's idle timeout is 10). */
  pingIntervalMs?: number;
  /** How many recent notification ids are remembered for dedupe (default 1000). */
  dedupeSize?: number;
  /** How many of them are saved with the cursor (default 200). */
  persistIds?: number;
  /**
   * Resume in the background after this many live notifications (default 50), so the resume
   * point keeps up while connected. Live cursors never move it: fan-outs arrive out of order.
   */
  syncEvery?: number;
  /** The token claim holding the tenant (default `tenant`); only used for the storage key. */
  tenantClaim?: string;
  /** Connect in the constructor (default true); otherwise call `connect()`. */
  autoConnect?: boolean;
  /**
   * The HTTP API's base URL (e.g. `https://api.example.com`). With it, when the WebSocket cannot
   * be opened (`pollAfterFailures` handshakes failed in a row: a proxy that blocks the upgrade),
   * the client polls `GET /notifications/missed` (state `polling`) with the same resume point,
   * dedupe and events, keeps trying the socket, and switches back to it when it opens. Also
   * what `enablePush()`/`disablePush()` call.
   */
  httpUrl?: string;
  /** Failed handshakes in a row before polling (default 2). */
  pollAfterFailures?: number;
  /** Time between polls (default 5000 ms). */
  pollIntervalMs?: number;
  /**
   * One socket per browser (default `true` where the page has Web Locks and BroadcastChannel;
   * ignored elsewhere: Node, workers, React Native). The tabs of an origin whose tokens are of
   * the same user (and `url`) share one connection: the tab holding a Web Lock (the leader,
   * `tabRole`) connects; the others send it their requests and emit its events as their own.
   * Each tab's listeners get what a connection of its own would bring: the user's and tenant's
   * notifications, and those of the groups this tab joined. When the leader tab closes, another
   * takes the lock, connects and resumes from the cursor the tabs share. `false`: a socket per
   * client, as before.
   */
  shareConnection?: boolean;
  /**
   * What tabs must have in common to share a connection, instead of the default (the URL, the
   * token's tenant and `sub`). Tabs with different keys never share.
   */
  shareKey?: string;
}

/** A notification frame as the server sends it. */
export interface HeraldNotification {
  type: "notification";
  /** Stable across retries, replays and redeliveries. */
  id: string;
  /** Opaque, ordered position in the user's log. Not a resume point: see `HeraldClient.cursor`. */
  cursor: string;
  /** The group it was sent to: `user:u1`, `tenant`, `course:42`, `all`… */
  topic: string;
  event: string;
  title?: string;
  body?: string;
  link?: string;
  data?: unknown;
  createdAt?: string;
  /** True when it came from `resume`. */
  replayed?: boolean;
  /**
   * A producer's update (2, 3, …): the same `id` comes again with a higher version, which
   * replaces what the app shows. Absent on the first version.
   */
  version?: number;
  /** The producer marked it critical: preferences and quiet hours did not hold it back. */
  critical?: boolean;
  /** Set on a member's publish: who sent it (from their token, never from the frame). */
  from?: { user: string };
  /** A latest-value stream's key: a later notification of the same topic and key replaces this one. */
  collapse?: string;
  /** An ephemeral publish (typing, location): never stored, no `cursor`. */
  ephemeral?: boolean;
  [key: string]: unknown;
}

export interface PublishOptions {
  title?: string;
  body?: string;
  data?: Record<string, unknown>;
  /** Not stored, not retried, never replayed; lowest latency (typing indicators, cursors, location). */
  ephemeral?: boolean;
  /** Deliver to this connection too (default: the other members only). */
  echo?: boolean;
  /** Your idempotency key ([A-Za-z0-9._-]{1,64}): sending it again is answered with the same id and cursor, not posted twice. */
  id?: string;
  /** A latest-value stream's key (e.g. `"progress"`): only the latest per group and key is kept. */
  collapse?: string;
}

/** The answer to `publish`: `id` and `cursor` for a logged publish, neither for an ephemeral one. */
export interface PublishedFrame {
  type: "published";
  id?: string;
  cursor?: string;
}

/** A member of a presence-enabled group came online (first connection) or went offline (last one, after a grace period). */
export interface PresenceFrame {
  type: "presence";
  group: string;
  user: string;
  state: "online" | "offline";
}

/** Another member read a chat up to `upTo` (at most about one a second per member and group). */
export interface ReceiptFrame {
  type: "receipt";
  group: string;
  user: string;
  upTo: string;
}

/** `markRoomRead`'s answer: `upTo` is the stored cursor (never backwards). */
export interface ReadFrame {
  type: "marked";
  group: string;
  upTo: string;
  /** Whether this call moved it forward. */
  advanced: boolean;
}

/** One page of a group's history, newest first. */
export interface HistoryPage {
  group: string;
  /** Notification frames, newest first (a very fresh one may come without `cursor`). */
  items: HeraldNotification[];
  /** Pass as `before` for the older page; null on the oldest page. Not a resume point. */
  next: string | null;
}

/**
 * `GET /groups/{group}/receipts`. `mode: "members"`: each member's last-read cursor. `mode:
 * "counts"` (a group with more readers than the server's member cap): only how many.
 * `seen`: members who read at least as far as the `upTo` asked for (null without it).
 */
export type ReceiptsAnswer =
  | { group: string; mode: "members"; receipts: { user: string; upTo: string }[]; readers: number; seen: number | null }
  | { group: string; mode: "counts"; readers: number; capped: boolean; seen: number | null };

/** A file shared with `upload()`: send `key` in a chat message's `data`. */
export interface SharedFile {
  key: string;
  name: string;
  contentType: string;
  size: number;
}

/** `download(key)`: a short-lived URL for the file's bytes. */
export interface DownloadAnswer extends SharedFile {
  group: string;
  from: { user: string };
  download: { url: string; method: "GET"; headers: Record<string, string>; expiresIn: number };
}

export interface NotificationMeta {
  /** Delivered by a `resume` (it was missed while disconnected). */
  replayed: boolean;
  /** Part of the history replayed on a first connect without any saved cursor. */
  history: boolean;
  /** Delivered by a poll of `GET /notifications/missed` (the polling fallback). */
  polled?: boolean;
}

export interface StateChange {
  state: HeraldState;
  previous: HeraldState;
  /** Reconnect attempt number (on `connecting` and `reconnecting`). */
  attempt?: number;
  /** Wait before the next attempt (on `reconnecting`). */
  delayMs?: number;
  /** Close code and reason of the connection that ended (on `reconnecting`). */
  code?: number;
  reason?: string;
}

export interface ErrorFrame {
  type: "error";
  code: string;
  message: string;
  ref?: string | number;
  /** With `rate_limited`: when the connection's frame budget has room again. */
  retryAfterMs?: number;
}
export interface JoinedFrame {
  type: "joined";
  group: string;
  ref?: string;
}
export interface LeftFrame {
  type: "left";
  group: string;
  ref?: string;
  /** True when resolved locally because there was no connection to leave on. */
  local?: boolean;
  /**
   * True when another tab sharing the connection still holds the group: this client forgot it
   * (its listeners get nothing more of it), the shared connection stays in it.
   */
  shared?: boolean;
  /** Set when the server took the group away on its own (`"unsubscribed"`). */
  reason?: string;
}
export interface AckedFrame {
  type: "acked";
  count: number;
  /** The user's unread count after this read, and the read's sequence number. */
  unread?: number;
  seq?: number;
}
/** A read on another device of the user (`ack` or `markRead` there). */
export interface ReadEvent {
  type: "read";
  ids?: string[];
  upTo?: string;
  /** The user's unread count after that read; `HeraldClient.unread` keeps the newest. */
  unread: number;
  seq: number;
}
/** The producer took notification `id` back: remove it (`replayed` when it came from `resume`). */
export interface RecalledEvent {
  type: "recalled";
  id: string;
  topic?: string;
  replayed: boolean;
}
export interface UnreadEvent {
  count: number;
  seq: number;
}
export type Channel = "inapp" | "push" | "escalation";
export interface Preferences {
  /** Categories off per channel: events (`forum.reply`) or prefixes (`forum.*`). */
  off?: Partial<Record<Channel, string[]>>;
  /** Push and escalation wait until `end` (HH:MM) in the IANA `timeZone`. */
  quietHours?: { start: string; end: string; timeZone: string } | null;
}
export interface StoredPreferences extends Preferences {
  /** Whose apply: the user's own, the tenant's defaults, or none. */
  source?: "user" | "tenant" | "none";
}
export interface ReadAnswer {
  count: number;
  unread: number;
  capped: boolean;
  seq: number;
}
export interface ResumeResult {
  /** Notifications replayed by the server (before dedupe). */
  count: number;
  /** The resume point after the resume (the server's `resumed.cursor`). */
  cursor: string | null;
}

/** `gap`: `since` is the resume point the client read from; `via` the read that said so. */
export interface GapEvent {
  since: string | null;
  via: "resume" | "poll";
}

export declare class HeraldClient {
  constructor(options: HeraldClientOptions);
  readonly state: HeraldState;
  /** True once re-joined and resumed. */
  readonly ready: boolean;
  /**
   * The resume point: what the server last answered to a `resume`. It trails the newest
   * notifications on purpose (the server keeps it behind anything still in flight); the next
   * resume starts after it and copies already shown are dropped by id.
   */
  readonly cursor: string | null;
  /** The groups kept joined. */
  readonly groups: string[];
  /**
   * With `shareConnection`: `"leader"` when this tab holds the socket the tabs share,
   * `"follower"` when another tab does (or none does yet); `null` when this client has its own.
   */
  readonly tabRole: "leader" | "follower" | null;

  on(event: "notification", fn: (notification: HeraldNotification, meta: NotificationMeta) => void): () => void;
  on(event: "state", fn: (change: StateChange) => void): () => void;
  on(event: "error", fn: (error: HeraldError) => void): () => void;
  /** The server took a group away (e.g. `reason: "unsubscribed"`); it is no longer in `groups`. */
  on(event: "left", fn: (frame: LeftFrame) => void): () => void;
  /** Presence events of the groups whose kind the server has presence for (e.g. `room`). */
  on(event: "presence", fn: (frame: PresenceFrame) => void): () => void;
  /** Read receipts of the other members of the chats this connection joined. */
  on(event: "receipt", fn: (frame: ReceiptFrame) => void): () => void;
  /**
   * The resume point was older than the server's retention window: notifications may have
   * expired unseen, so reload what the app shows from its own backend.
   */
  on(event: "gap", fn: (gap: GapEvent) => void): () => void;
  /** A read on another device of the user. */
  on(event: "read", fn: (read: ReadEvent) => void): () => void;
  /** A producer recalled a notification. */
  on(event: "recalled", fn: (recalled: RecalledEvent) => void): () => void;
  /** The unread count changed (a read on any device, newest `seq` wins). */
  on(event: "unread", fn: (unread: UnreadEvent) => void): () => void;
  /** The unread count the server last said, or null before the first read. */
  readonly unread: number | null;
  /** Marks read over HTTP (needs `httpUrl`); the user's other devices hear of it. */
  markRead(read: { ids?: string[]; upTo?: string }): Promise<ReadAnswer>;
  /** `GET /notifications/unread-count` (needs `httpUrl`). */
  unreadCount(): Promise<{ count: number; capped: boolean }>;
  /** The user's notification preferences (needs `httpUrl`). */
  getPreferences(): Promise<StoredPreferences>;
  /** Replaces the user's preferences; rejects with `bad_request` naming the field. */
  setPreferences(prefs: Preferences): Promise<Preferences>;

  /** Starts connecting (only with `autoConnect: false`). */
  connect(): void;
  /** Joins and remembers a group; rejects with the server's code (`forbidden`…) and forgets it then. */
  join(group: string): Promise<JoinedFrame>;
  /** Leaves and forgets a group. */
  leave(group: string): Promise<LeftFrame>;
  /** Marks notifications read; lists over 100 ids are split. */
  ack(ids: string | string[]): Promise<AckedFrame>;
  /**
   * Publishes to a group this connection is a member of (the server checks the group kind's
   * policy). Rejects with `forbidden`, `too_large`, `rate_limited`, `bad_request`, or
   * `unsupported` from a server without client publish.
   */
  publish(group: string, event: string, options?: PublishOptions): Promise<PublishedFrame>;
  /**
   * Typing indicator: call on every keystroke. Publishes an ephemeral `event` (default
   * `"typing"`) at once, then at most one per `debounceMs` (default 300). Returns whether this
   * call sent one; errors go to the `"error"` listeners.
   */
  typing(group: string, options?: { event?: string; debounceMs?: number; data?: Record<string, unknown> }): boolean;
  /** Resolves with the round-trip time in ms. */
  ping(): Promise<number>;
  /**
   * A page of a group's history, newest first (`GET /groups/{group}/history`; needs `httpUrl`).
   * Pass the page's `next` as `before` for the older one. Members only (`forbidden`).
   */
  history(group: string, options?: { before?: string | null; limit?: number }): Promise<HistoryPage>;
  /** A read receipt over the socket: `group` read up to the cursor `upTo`. */
  markRoomRead(group: string, upTo: string): Promise<ReadFrame>;
  /** Each member's last-read cursor (or counts in a big group); with `upTo`, how many saw it. Needs `httpUrl`. */
  receipts(group: string, options?: { upTo?: string }): Promise<ReceiptsAnswer>;
  /**
   * Shares a file: a presigned upload URL from Herald, then the bytes PUT to it. Rejects with
   * `bad_request` over the size limit or for a refused type (no URL is made), `forbidden` for
   * a non-member, `upload_failed` if the PUT fails. Needs `httpUrl`.
   */
  upload(group: string, file: Blob | { name: string; type: string; size: number; body: BodyInit }): Promise<SharedFile>;
  /** A short-lived download URL of a shared file (members of its group only). Needs `httpUrl`. */
  download(key: string): Promise<DownloadAnswer>;
  /** Fetches what was missed since the cursor now (also automatic after every (re)connect). */
  resume(): Promise<ResumeResult>;
  /**
   * Web Push for this browser: registers the service worker, subscribes with its PushManager
   * (asks for the notification permission: call it from a user gesture) and registers the
   * subscription with Herald (`PUT /push/subscriptions`). Needs `httpUrl`. Rejects with
   * `push_unsupported` (no service worker / PushManager, permission denied), `bad_request`
   * (Herald refused the subscription) or `push_failed`.
   */
  enablePush(options?: EnablePushOptions): Promise<PushSubscriptionJSONLike>;
  /** Forgets this browser's subscription at Herald and unsubscribes it; `false` if there was none. */
  disablePush(): Promise<boolean>;
  /** Closes the connection and stops reconnecting, timers and pending requests. */
  close(): void;
}

export interface EnablePushOptions {
  /** base64url VAPID public key; fetched from `GET /push/vapid-public-key` when omitted. */
  vapidPublicKey?: string;
  /** The service worker script (default `/push-sw.js`; client/push-sw.js is a sample). */
  serviceWorker?: string;
  /** The service worker's scope (default: its directory). */
  scope?: string;
}

/** What `PushSubscription.toJSON()` returns, as sent to Herald. */
export interface PushSubscriptionJSONLike {
  endpoint: string;
  expirationTime?: number | null;
  keys: { p256dh: string; auth: string };
}

/** base64url (padding optional) to bytes, as `applicationServerKey` takes it. */
export declare function base64UrlBytes(text: string): Uint8Array;

/** The most items a history page holds. */
export declare const MAX_HISTORY: number;

export declare function createHeraldClient(options: HeraldClientOptions): HeraldClient;

/** Reconnect delay for a 1-based attempt: exponential, capped, jittered (upper half). */
export declare function backoffDelay(attempt: number, backoff?: HeraldBackoff, random?: () => number): number;
