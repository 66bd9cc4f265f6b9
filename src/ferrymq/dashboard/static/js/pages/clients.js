// Clients: a paged, filtered list (the API's filters) and one client's detail page.

import { del, enc, get, post } from '../api.js';
import { act, badge, card, clear, field, fmtNum, fmtProto, h, kv, pagedTable, select, unavailable } from '../ui.js';

export function kick(clientid, after) {
  if (!confirm(`Kick client ${clientid}? Its session is discarded.`)) return;
  act(() => del(`/clients/${enc(clientid)}`), `kicked ${clientid}`).then(after);
}

export function banForm(as, who, after) {
  const duration = select('duration', [['300', '5 minutes'], ['3600', '1 hour'], ['86400', '1 day'], ['604800', '7 days']], '3600');
  const reason = h('input', { name: 'reason', placeholder: 'reason' });
  const submit = h('button', {
    class: 'danger',
    text: 'Ban',
    onclick: () => act(async () => {
      const at = Math.floor(Date.now() / 1000);
      await post('/banned', { who, as, reason: reason.value, at, until: at + Number(duration.value), by: 'dashboard' });
    }, `banned ${as} ${who}`).then(after),
  });
  return h('div', { class: 'toolbar' }, field('ban for', duration), field('reason', reason), submit);
}

function list(root) {
  const like = h('input', { name: 'clientid', placeholder: 'part of a client id' });
  const user = h('input', { name: 'username', placeholder: 'part of a username' });
  const ip = h('input', { name: 'ip_address', placeholder: 'exact IP' });
  const state = select('conn_state', [['', 'any state'], ['connected', 'connected'], ['disconnected', 'disconnected']], '');
  const proto = select('proto_ver', [['', 'any version'], ['3', '3.1'], ['4', '3.1.1'], ['5', '5.0']], '');
  const table = pagedTable({
    id: 'clients-table',
    empty: 'no clients match',
    fetch: (page, limit) => get('/clients', {
      _page: page,
      _limit: limit,
      _like_clientid: like.value.trim(),
      _like_username: user.value.trim(),
      ip_address: ip.value.trim(),
      conn_state: state.value,
      proto_ver: proto.value,
    }),
    columns: [
      { title: 'client id', value: (c) => h('a', { href: `#/clients/${enc(c.clientid)}`, text: c.clientid, class: 'client-link' }) },
      { title: 'username', value: (c) => c.username ?? '' },
      { title: 'address', value: (c) => `${c.ip_address}:${c.port}` },
      { title: 'protocol', value: (c) => fmtProto(c) },
      { title: 'state', value: (c) => (c.connected ? badge('connected', 'ok') : badge('disconnected')) },
      { title: 'keep alive', value: (c) => String(c.keepalive), num: true },
      { title: 'subscriptions', value: (c) => fmtNum(c.subscriptions_cnt), num: true },
      { title: 'queued', value: (c) => fmtNum(c.mqueue_len), num: true },
      { title: 'connected at', value: (c) => c.connected_at },
      { title: '', value: (c) => h('div', { class: 'actions' }, h('button', { class: 'danger kick', text: 'Kick', onclick: () => kick(c.clientid, table.reload) })) },
    ],
  });
  const search = (e) => { e.preventDefault(); table.load(1); };
  root.append(
    h('h1', { text: 'Clients' }),
    card(null,
      h('form', { class: 'toolbar', onsubmit: search },
        field('client id', like), field('username', user), field('IP address', ip),
        field('state', state), field('protocol', proto),
        h('button', { type: 'submit', text: 'Search', id: 'clients-search' }),
        h('button', { type: 'button', class: 'secondary', text: 'Refresh', onclick: () => table.reload() })),
      table.el),
  );
  table.load(1);
}

async function detail(root, clientid) {
  root.append(h('p', {}, h('a', { href: '#/clients', text: '← all clients' })), h('h1', { text: `Client ${clientid}` }));
  const body = h('div');
  root.append(body);
  async function load() {
    let client;
    try {
      client = (await get(`/clients/${enc(clientid)}`)).data[0];
    } catch (err) {
      return clear(body, unavailable(err));
    }
    if (!client) return clear(body, h('p', { class: 'muted', text: 'This client is not connected and has no session.' }));
    const subs = pagedTable({
      id: 'client-subscriptions',
      empty: 'no subscriptions',
      fetch: (page, limit) => get(`/subscriptions/${enc(clientid)}`, { _page: page, _limit: limit }),
      columns: [
        { title: 'topic', value: (s) => s.topic },
        { title: 'QoS', value: (s) => String(s.qos) },
        { title: '', value: (s) => h('button', { class: 'danger', text: 'Unsubscribe', onclick: () => act(() => post('/mqtt/unsubscribe', { clientid, topic: s.topic }), 'unsubscribed').then(subs.reload) }) },
      ],
    });
    const topic = h('input', { name: 'topic', placeholder: 'topic filter' });
    const qos = select('qos', [['0', 'QoS 0'], ['1', 'QoS 1'], ['2', 'QoS 2']], '0');
    const subscribe = (e) => {
      e.preventDefault();
      act(() => post('/mqtt/subscribe', { clientid, topic: topic.value, qos: Number(qos.value) }), 'subscribed').then(subs.reload);
    };
    clear(body,
      h('div', { class: 'toolbar' },
        client.connected ? badge('connected', 'ok') : badge('disconnected'),
        h('span', { class: 'grow' }),
        h('button', { class: 'danger', id: 'client-kick', text: 'Kick', onclick: () => kick(clientid, () => { location.hash = '#/clients'; }) })),
      h('div', { class: 'grid' },
        card('Connection', kv([
          ['node', client.node], ['username', client.username || '(none)'], ['address', `${client.ip_address}:${client.port}`],
          ['protocol', fmtProto(client)], ['keep alive', `${client.keepalive} s`],
          ['clean start', String(client.clean_start)], ['zone', client.zone], ['bridge', String(client.is_bridge)],
          ['connected at', client.connected_at], ['disconnected at', client.disconnected_at], ['created at', client.created_at],
        ])),
        card('Session', kv([
          ['expiry interval', `${client.expiry_interval} s`],
          ['subscriptions', `${fmtNum(client.subscriptions_cnt)} / ${client.max_subscriptions || '∞'}`],
          ['inflight', `${fmtNum(client.inflight)} / ${client.max_inflight}`],
          ['queued', `${fmtNum(client.mqueue_len)} / ${client.max_mqueue}`],
          ['queue dropped', fmtNum(client.mqueue_dropped)],
          ['awaiting PUBREL', `${fmtNum(client.awaiting_rel)} / ${client.max_awaiting_rel}`],
        ])),
        card('Counters', kv([
          ['messages received / sent', `${fmtNum(client.recv_msg)} / ${fmtNum(client.send_msg)}`],
          ['packets received / sent', `${fmtNum(client.recv_pkt)} / ${fmtNum(client.send_pkt)}`],
          ['bytes received / sent', `${fmtNum(client.recv_oct)} / ${fmtNum(client.send_oct)}`],
          ['socket reads / writes', `${fmtNum(client.recv_cnt)} / ${fmtNum(client.send_cnt)}`],
        ]))),
      card('Subscriptions',
        h('form', { class: 'toolbar', onsubmit: subscribe }, field('topic', topic), field('QoS', qos),
          h('button', { type: 'submit', text: 'Subscribe' })),
        subs.el),
      card('Ban this client', banForm('clientid', clientid, load)),
    );
    subs.load(1);
  }
  await load();
}

export async function render(root, [clientid]) {
  if (clientid) return detail(root, clientid);
  return list(root);
}
