// @ts-check
// Wire-protocol constants and checks every module shares: the subprotocol, the frame limit, the
// cursor order.

import { HeraldError } from "./errors.js";

/** The subprotocol Herald answers. */
export const SUBPROTOCOL = "herald.v1";
/** API Gateway's WebSocket frame limit: bigger client frames are refused before sending. */
export const MAX_FRAME_BYTES = 32 * 1024;
/** The server accepts at most this many ids per `ack` frame; `ack()` splits longer lists. */
export const MAX_ACK_IDS = 100;

/** Longest ref this client generates, used when sizing a frame before it gets its ref. */
export const REF_ALLOWANCE = '"ref":"h999999999999999",'.length;

/** UTF-8 length of a string, as the server measures frames. */
function utf8Length(/** @type {string} */ text) {
  // Cheap path: every UTF-16 unit is at most 3 UTF-8 bytes.
  if (text.length * 3 <= MAX_FRAME_BYTES) return text.length;
  return new TextEncoder().encode(text).length;
}

/**
 * Throws a `too_large` HeraldError when `text` would exceed the frame limit.
 * @param {string} text
 * @param {number} [extra] bytes still to be added (the ref)
 */
export function checkFrameSize(text, extra = 0) {
  const size = utf8Length(text) + extra;
  if (size > MAX_FRAME_BYTES) {
    throw new HeraldError(
      "too_large",
      `frame of ${size} bytes refused: Herald (API Gateway) accepts WebSocket frames of at most ${MAX_FRAME_BYTES} bytes`,
    );
  }
}

/**
 * Cursors are fixed-length strings whose lexicographic order is the log's order (DESIGN.md:
 * "totally ordered per user"). Returns the later of two cursors.
 * @param {string | null} a
 * @param {string | null} b
 * @returns {string | null}
 */
export function laterCursor(a, b) {
  if (a == null) return b;
  if (b == null) return a;
  if (a.length !== b.length) return a.length > b.length ? a : b;
  return b > a ? b : a;
}
