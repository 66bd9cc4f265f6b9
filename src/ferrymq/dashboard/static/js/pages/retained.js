// Retained messages: list (filter with wildcards), view a payload as text, JSON or hex, delete.

import { del, enc, get } from '../api.js';
import { act, card, clear, field, fmtNum, h, kv, pagedTable, payloadView, unavailable } from '../ui.js';

function base64Bytes(text) {
  const bin = atob(text || '');
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

export async function render(root) {
  const filter = h('input', { name: 'topic', placeholder: 'topic or filter, e.g. sensors/#' });
  const viewer = h('div', { id: 'retained-viewer' });
  const remove = (topic) => {
    if (!confirm(`Delete the retained message of ${topic}?`)) return;
    act(() => del(`/retained/${enc(topic)}`), `deleted the retained message of ${topic}`)
      .then(() => { clear(viewer); table.reload(); });
  };
  async function view(topic) {
    let msg;
    try {
      msg = (await get(`/retained/${enc(topic)}`)).data;
    } catch (err) {
      return clear(viewer, card(topic, unavailable(err)));
    }
    clear(viewer, card(`Retained message: ${topic}`,
      kv([['QoS', String(msg.qos)], ['from client', msg.from_clientid ?? '-'], ['published at', msg.publish_at],
        ['size', `${fmtNum(msg.payload_size)} bytes`], ['expires in', msg.expires_in == null ? 'never' : `${msg.expires_in} s`]]),
      h('h2', { text: 'Payload', style: 'margin-top:12px' }),
      payloadView(base64Bytes(msg.payload)),
      h('div', { class: 'toolbar', style: 'margin-top:10px' },
        h('button', { class: 'danger', text: 'Delete', onclick: () => remove(topic) }))));
  }
  const table = pagedTable({
    id: 'retained-table',
    empty: 'no retained messages',
    fetch: (page, limit) => get('/retained', { _page: page, _limit: limit, topic: filter.value.trim() }),
    columns: [
      { title: 'topic', value: (m) => h('button', { class: 'link retained-topic', text: m.topic, onclick: () => view(m.topic) }) },
      { title: 'QoS', value: (m) => String(m.qos) },
      { title: 'size', value: (m) => fmtNum(m.payload_size), num: true },
      { title: 'from client', value: (m) => m.from_clientid ?? '-' },
      { title: 'published at', value: (m) => m.publish_at },
      { title: '', value: (m) => h('div', { class: 'actions' },
        h('button', { class: 'secondary', text: 'View', onclick: () => view(m.topic) }),
        h('button', { class: 'danger', text: 'Delete', onclick: () => remove(m.topic) })) },
    ],
  });
  root.append(
    h('h1', { text: 'Retained messages' }),
    card(null,
      h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); clear(viewer); table.load(1); } },
        field('topic', filter), h('button', { type: 'submit', text: 'Search' })),
      table.el),
    viewer,
  );
  table.load(1);
}
