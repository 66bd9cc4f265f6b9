// Small DOM helpers: every text goes in through textContent, never as HTML.

import { NotAvailable } from './api.js';

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key.startsWith('on')) el.addEventListener(key.slice(2).toLowerCase(), value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let toastTimer = null;
export function toast(message, bad = false) {
  const el = document.getElementById('toast');
  el.textContent = message;
  el.className = bad ? 'toast bad' : 'toast';
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, bad ? 6000 : 3000);
}

// Run an action from a button: errors become a red toast, success an optional message.
export async function act(fn, done) {
  try {
    const result = await fn();
    if (done) toast(done);
    return result;
  } catch (err) {
    toast(err.message || String(err), true);
    return undefined;
  }
}

export function unavailable(err) {
  const text = err instanceof NotAvailable ? err.message : `could not load: ${err.message || err}`;
  return h('div', { class: 'unavailable', text });
}

export function badge(text, kind = '') {
  return h('span', { class: `badge ${kind}`, text });
}

const VERSIONS = { 3: '3.1', 4: '3.1.1', 5: '5.0' };
export const fmtProto = (c) => `${c.proto_name} ${VERSIONS[c.proto_ver] || c.proto_ver}`;

export const fmtNum = (n) => (n === undefined || n === null ? '-' : Number(n).toLocaleString('en-US'));

export function fmtBytes(n) {
  if (typeof n === 'string') return n;
  if (n === undefined || n === null) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function fmtEpoch(value) {
  if (!value) return '-';
  if (typeof value === 'string') return value;
  const ms = value > 1e12 ? value : value * 1000;
  return new Date(ms).toLocaleString('sv-SE');
}

export function card(title, ...children) {
  return h('section', { class: 'card' }, title ? h('h2', { text: title }) : null, ...children);
}

export function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', {}, v ?? '-')]));
}

export function field(label, input) {
  return h('label', {}, label, input);
}

export function select(name, options, value) {
  return h('select', { name }, options.map(([v, text]) => h('option', { value: v, text, selected: v === value })));
}

// A table that pages through a list endpoint: fetch(page, limit) -> {data, meta}.
export function pagedTable({ columns, fetch, limit = 20, empty = 'nothing here', id }) {
  let page = 1;
  const tbody = h('tbody');
  const info = h('span');
  const prev = h('button', { class: 'secondary', text: 'Previous', onclick: () => load(page - 1) });
  const next = h('button', { class: 'secondary', text: 'Next', onclick: () => load(page + 1) });
  const table = h('table', { id },
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : '', text: c.title })))),
    tbody);
  const status = h('div');
  const pager = h('div', { class: 'pager' }, info, prev, next);
  const el = h('div', {}, status, table, pager);

  async function load(p = page) {
    page = Math.max(1, p);
    let body;
    try {
      body = await fetch(page, limit);
    } catch (err) {
      clear(status, unavailable(err));
      table.hidden = pager.hidden = true;
      return;
    }
    clear(status);
    table.hidden = pager.hidden = false;
    const rows = body.data || [];
    const meta = body.meta || { page, limit, count: rows.length, hasnext: false };
    if (!rows.length && page > 1 && meta.count > 0) return load(Math.ceil(meta.count / limit));
    const first = (page - 1) * limit;
    clear(tbody, rows.length ? rows.map((row, i) => h('tr', {},
      columns.map((c) => h('td', { class: c.num ? 'num' : '' }, c.value(row, first + i) ?? '-'))))
      : h('tr', { class: 'empty' }, h('td', { colspan: columns.length, text: empty })));
    const pages = Math.max(1, Math.ceil((meta.count || 0) / limit));
    info.textContent = `${fmtNum(meta.count)} in all · page ${page} of ${fmtNum(pages)}`;
    prev.disabled = page <= 1;
    next.disabled = !meta.hasnext;
  }
  return { el, load, reload: () => load(page) };
}

// Payload views of the retained page and the WebSocket tool.
export function payloadView(bytes) {
  const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  let json = null;
  try { json = JSON.stringify(JSON.parse(text), null, 2); } catch { /* not JSON */ }
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0'))
    .join(' ').replace(/((?:\S\S ){16})/g, '$1\n');
  const views = { text, json: json ?? 'not valid JSON', hex };
  const pre = h('pre', { class: 'payload' });
  const buttons = Object.keys(views).map((name) => h('button', {
    'data-view': name,
    text: name === 'json' ? 'JSON' : name[0].toUpperCase() + name.slice(1),
    onclick: () => show(name),
  }));
  function show(name) {
    pre.textContent = views[name];
    for (const b of buttons) b.classList.toggle('on', b.dataset.view === name);
  }
  show(json !== null ? 'json' : 'text');
  return h('div', {}, h('div', { class: 'tabs' }, buttons), pre);
}
