// The dashboard's only way to the broker: the public /api/v4 API, with the session cookie.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// An endpoint this broker does not serve (404 / 102 "no such path").
export class NotAvailable extends ApiError {}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export const enc = encodeURIComponent;

function url(path, query) {
  const u = new URL('/api/v4' + path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value === '' || value === null || value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) u.searchParams.append(key, v);
  }
  return u;
}

export async function request(method, path, { query, body } = {}) {
  const init = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url(path, query), init);
  let json = null;
  try { json = await res.json(); } catch { /* not JSON */ }
  if (res.status === 401) {
    onUnauthorized();
    throw new ApiError(401, json && json.code, 'not logged in');
  }
  if (!res.ok || !json || json.code !== 0) {
    const message = (json && json.message) || res.statusText || 'request failed';
    if (res.status === 404 && json && json.code === 102 && /no such (path|method)/.test(message)) {
      throw new NotAvailable(404, 102, `${path} is not available on this broker`);
    }
    throw new ApiError(res.status, json && json.code, message);
  }
  return json;
}

export const get = (path, query) => request('GET', path, { query });
export const post = (path, body) => request('POST', path, { body });
export const put = (path, body) => request('PUT', path, { body });
export const del = (path) => request('DELETE', path);

// The session endpoints of the dashboard listener itself (outside /api/v4).
export async function session(method, body) {
  const init = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch('/session', init);
  let json = null;
  try { json = await res.json(); } catch { /* not JSON */ }
  if (!res.ok || !json || json.code !== 0) {
    throw new ApiError(res.status, json && json.code, (json && json.message) || res.statusText);
  }
  return json.data;
}

// Sum one numeric field over the per-node items of /stats or /metrics.
export function sumNodes(items, key, field) {
  let total = 0;
  for (const item of items || []) total += Number((item[key] || {})[field] || 0);
  return total;
}
