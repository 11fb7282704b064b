// A sample service worker for Herald's Web Push (`client.enablePush({serviceWorker: "/push-sw.js"})`).
// Serve it from your app's origin. Each push carries the notification frame a connected client
// would have received (`{"type":"notification","id","topic","event","title","body","link",...}`;
// `data` may be dropped to fit a push message). It is shown as a system notification; a click
// focuses an open tab of the app (navigating it to `link`) or opens one.

/* eslint-env serviceworker */
/// <reference lib="webworker" />

self.addEventListener("push", (event) => {
  /** @type {any} */
  let n = {};
  try {
    n = event.data ? event.data.json() : {};
  } catch {
    n = { title: event.data ? event.data.text() : "" };
  }
  const title = n.title || n.event || "New notification";
  event.waitUntil(
    self.registration.showNotification(title, {
      body: n.body || "",
      // One system notification per Herald id: a redelivered push replaces it instead of adding one.
      tag: n.id,
      data: { id: n.id, link: n.link || "/", topic: n.topic },
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const link = new URL(event.notification.data?.link || "/", self.location.origin).href;
  event.waitUntil(
    (async () => {
      const tabs = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const tab = tabs.find((c) => new URL(c.url).origin === self.location.origin);
      if (tab) {
        await tab.focus();
        if ("navigate" in tab && tab.url !== link) await tab.navigate(link);
        return;
      }
      await self.clients.openWindow(link);
    })(),
  );
});
