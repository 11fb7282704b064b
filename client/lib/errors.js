// @ts-check
// HeraldError, and how the client reports failures it cannot throw to a caller.

/**
 * An error from Herald: `code` is the server's error code (`forbidden`, `bad_request`,
 * `unknown_action`, `too_large`, `rate_limited`, `internal`) or one of the client's own
 * (`timeout`, `disconnected`, `closed`, `too_large`, `cancelled`, `connect_failed`,
 * `token_failed`, `sync_failed`, `ping_timeout`, `resume_stalled`, `storage_failed`,
 * `bad_frame`, `gateway_error`, `server_error`, `poll_failed`, `push_unsupported`,
 * `push_failed`).
 */
export class HeraldError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{frame?: any, group?: string, cause?: unknown}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "HeraldError";
    /** @type {string} */
    this.code = code;
    /** The server's frame (`{"type":"error",...}`) when the server sent one. */
    this.frame = extra.frame;
    /** The group concerned, for join/re-join failures. */
    this.group = extra.group;
    if (extra.cause !== undefined) this.cause = extra.cause;
  }
}

/** Reports an exception thrown by an app listener without breaking the client. */
export function reportListenerError(/** @type {unknown} */ e) {
  const g = /** @type {any} */ (globalThis);
  if (typeof g.reportError === "function") g.reportError(e);
  else
    setTimeout(() => {
      throw e;
    }, 0);
}

/** @param {unknown} e */
export function errText(e) {
  if (e && typeof e === "object" && "message" in e && e.message) return String(e.message);
  if (e && typeof e === "object" && "type" in e) return `${String(e.type)} event`;
  return String(e);
}
