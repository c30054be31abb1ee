// onerec service worker: keeps the app shell (page, script, wasm, css) so that the feed opens with
// no network. The API is left to the page: offline it serves its own saved pool and queues events.
const CACHE = 'onerec-shell-v1';

// The page's first load happens before this worker controls it, so the worker fetches the shell
// itself: the page, and every same-origin asset it links (Trunk hashes their names).
async function cacheShell() {
  const cache = await caches.open(CACHE);
  const response = await fetch('/', { cache: 'no-store' });
  const html = await response.clone().text();
  await cache.put('/', response);
  const assets = [...html.matchAll(/(?:href|src)="(\/[^"]+)"/g)].map((m) => m[1]);
  await cache.addAll([...new Set(assets)].filter((a) => a !== '/sw.js'));
}

self.addEventListener('install', (event) => {
  event.waitUntil(cacheShell().then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

function isApi(url) {
  return url.pathname.startsWith('/v1/') || url.pathname.startsWith('/admin/') ||
    ['/healthz', '/readyz', '/metrics', '/openapi.json'].includes(url.pathname);
}

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== self.location.origin || isApi(url)) {
    return;
  }
  // Network first, so a new build is picked up at once; the cache answers when the network
  // cannot. Trunk hashes asset names, so each build's files are cached as they are fetched.
  const navigation = event.request.mode === 'navigate';
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(navigation ? '/' : event.request, copy));
        }
        return response;
      })
      .catch(() => caches.match(navigation ? '/' : event.request)
        .then((hit) => hit || Response.error())),
  );
});
