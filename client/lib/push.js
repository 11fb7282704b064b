// @ts-check
// Web Push: subscribing this browser with its PushManager and registering the subscription with
// Herald's HTTP API.

import { HeraldError, errText } from "./errors.js";
import { Methods } from "./methods.js";

/**
 * base64url (padding optional) to bytes: `applicationServerKey` takes the raw key.
 * @param {string} text
 */
export function base64UrlBytes(text) {
  const b64 = text.replace(/=+$/, "").replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** @param {Uint8Array} a @param {Uint8Array} b */
function sameBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** HeraldClient's Web Push methods (`enablePush`, `disablePush`). */
export class PushMethods extends Methods {
  /**
   * Turns on Web Push for this browser: registers `serviceWorker`, subscribes with its
   * PushManager (reusing the browser's subscription when it has one for the same key) and
   * registers the subscription with Herald. Needs `httpUrl`. Call it from a user gesture:
   * browsers ask for the notification permission here.
   * @param {import("../herald.js").EnablePushOptions} [options]
   * @returns {Promise<import("../herald.js").PushSubscriptionJSONLike>}
   */
  async enablePush(options = {}) {
    const base = this._httpBase("enablePush");
    const container = /** @type {any} */ (globalThis).navigator?.serviceWorker;
    if (!container || typeof container.register !== "function") {
      throw new HeraldError("push_unsupported", "this browser has no service workers");
    }
    const token = await this._httpToken();
    let key = options.vapidPublicKey;
    if (!key) {
      const res = await this._httpJson("GET", `${base}/push/vapid-public-key`, token);
      key = res?.publicKey;
      if (typeof key !== "string" || !key) throw new HeraldError("push_failed", "the server sent no VAPID public key");
    }
    /** @type {any} */
    let registration;
    try {
      registration = await container.register(options.serviceWorker ?? "/push-sw.js", options.scope ? { scope: options.scope } : undefined);
    } catch (e) {
      throw new HeraldError("push_unsupported", `the service worker could not be registered: ${errText(e)}`, { cause: e });
    }
    const manager = registration?.pushManager;
    if (!manager) throw new HeraldError("push_unsupported", "this browser has no PushManager");
    const applicationServerKey = base64UrlBytes(key);
    let subscription = await manager.getSubscription();
    // A subscription made with another key (the server's key changed) cannot be pushed to.
    const existingKey = subscription?.options?.applicationServerKey;
    if (subscription && existingKey && !sameBytes(new Uint8Array(existingKey), applicationServerKey)) {
      await subscription.unsubscribe();
      subscription = null;
    }
    if (!subscription) {
      try {
        subscription = await manager.subscribe({ userVisibleOnly: true, applicationServerKey });
      } catch (e) {
        // Permission denied, or the browser's push service refused.
        throw new HeraldError("push_unsupported", `subscribing failed: ${errText(e)}`, { cause: e });
      }
    }
    const json = subscription.toJSON();
    await this._httpJson("PUT", `${base}/push/subscriptions`, token, json);
    return json;
  }

  /**
   * Turns Web Push off for this browser: tells Herald to forget the subscription, then
   * unsubscribes it. Resolves `false` when there was none.
   * @returns {Promise<boolean>}
   */
  async disablePush() {
    const base = this._httpBase("disablePush");
    const container = /** @type {any} */ (globalThis).navigator?.serviceWorker;
    const registration = container ? await container.getRegistration?.() : null;
    const subscription = registration?.pushManager ? await registration.pushManager.getSubscription() : null;
    if (!subscription) return false;
    const token = await this._httpToken();
    await this._httpJson("DELETE", `${base}/push/subscriptions`, token, { endpoint: subscription.endpoint });
    await subscription.unsubscribe();
    return true;
  }

  /** @private @param {string} what */
  _httpBase(what) {
    if (!this._o.httpUrl) throw new TypeError(`HeraldClient: ${what} needs options.httpUrl (the HTTP API base URL)`);
    return this._o.httpUrl.replace(/\/+$/, "");
  }

  /** @private */
  async _httpToken() {
    const token = this._o.getToken ? await this._o.getToken() : this._o.token;
    if (typeof token !== "string" || !token) throw new HeraldError("token_failed", "getToken() returned no token");
    return token;
  }

  /**
   * @private
   * @param {string} method @param {string} url @param {string} token @param {unknown} [body]
   */
  async _httpJson(method, url, token, body) {
    /** @type {Record<string, string>} */
    const headers = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    let res;
    try {
      res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new HeraldError("push_failed", `${method} ${url} failed: ${errText(e)}`, { cause: e });
    }
    const text = await res.text();
    /** @type {any} */
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!res.ok) {
      // The server's `{"error":{"code","message"}}`: `bad_request` says what is wrong.
      throw new HeraldError(json?.error?.code ?? "push_failed", json?.error?.message ?? `${method} ${url}: HTTP ${res.status}`, {
        frame: json,
      });
    }
    return json;
  }
}
