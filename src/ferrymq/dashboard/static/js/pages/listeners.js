// The MQTT listeners of every node, with their connection counts.

import { get } from '../api.js';
import { badge, card, clear, fmtNum, h, unavailable } from '../ui.js';

export async function render(root) {
  const body = h('div', { id: 'listeners' });
  root.append(h('h1', { text: 'Listeners' }), body);
  let nodes;
  try {
    nodes = (await get('/listeners')).data;
  } catch (err) {
    return clear(body, unavailable(err));
  }
  const cols = ['listener', 'protocol', 'listen on', 'path', 'zone', 'running', 'connections', 'max', 'max rate / s'];
  for (const node of nodes) {
    body.append(card(node.node, h('table', {},
      h('thead', {}, h('tr', {}, cols.map((c, i) => h('th', { text: c, class: i >= 6 ? 'num' : '' })))),
      h('tbody', {}, node.listeners.map((l) => h('tr', {},
        h('td', { text: l.identifier }), h('td', { text: l.protocol }), h('td', { class: 'mono', text: l.listen_on }),
        h('td', { text: l.path ?? '' }), h('td', { text: l.zone ?? '' }),
        h('td', {}, l.running ? badge('running', 'ok') : badge('stopped', 'bad')),
        h('td', { class: 'num', text: fmtNum(l.current_conns) }),
        h('td', { class: 'num', text: l.max_conns ? fmtNum(l.max_conns) : '∞' }),
        h('td', { class: 'num', text: l.max_conn_rate ? String(l.max_conn_rate) : '∞' })))))));
  }
}
