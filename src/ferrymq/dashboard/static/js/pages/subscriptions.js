// Subscriptions (search, subscribe / unsubscribe on behalf of a client) and topics (/routes).

import { enc, get, post } from '../api.js';
import { act, card, field, h, pagedTable, select } from '../ui.js';

export async function render(root) {
  const clientid = h('input', { name: 'clientid', placeholder: 'exact client id' });
  const topic = h('input', { name: 'topic', placeholder: 'exact filter' });
  const match = h('input', { name: '_match_topic', placeholder: 'a topic name' });
  const qos = select('qos', [['', 'any QoS'], ['0', '0'], ['1', '1'], ['2', '2']], '');
  const share = h('input', { name: 'share', placeholder: 'shared group' });
  const table = pagedTable({
    id: 'subscriptions-table',
    empty: 'no subscriptions match',
    fetch: (page, limit) => get('/subscriptions', {
      _page: page, _limit: limit, clientid: clientid.value.trim(), topic: topic.value.trim(),
      _match_topic: match.value.trim(), qos: qos.value, share: share.value.trim(),
    }),
    columns: [
      { title: 'client id', value: (s) => h('a', { href: `#/clients/${enc(s.clientid)}`, text: s.clientid }) },
      { title: 'topic filter', value: (s) => s.topic },
      { title: 'QoS', value: (s) => String(s.qos) },
      { title: 'node', value: (s) => s.node },
      { title: '', value: (s) => h('button', { class: 'danger', text: 'Unsubscribe', onclick: () => act(() => post('/mqtt/unsubscribe', { clientid: s.clientid, topic: s.topic }), 'unsubscribed').then(() => { table.reload(); routes.reload(); }) }) },
    ],
  });

  const subClient = h('input', { name: 'sub-clientid', placeholder: 'client id (with a session)' });
  const subTopic = h('input', { name: 'sub-topic', placeholder: 'topic filter(s), comma-separated' });
  const subQos = select('sub-qos', [['0', 'QoS 0'], ['1', 'QoS 1'], ['2', 'QoS 2']], '0');
  const onBehalf = (action) => (e) => {
    e.preventDefault();
    const body = { clientid: subClient.value.trim(), topic: subTopic.value.trim() };
    if (action === 'subscribe') body.qos = Number(subQos.value);
    act(() => post(`/mqtt/${action}`, body), `${action}d`).then(() => { table.reload(); routes.reload(); });
  };

  const routeTopic = h('input', { name: 'route-topic', placeholder: 'exact topic' });
  const routes = pagedTable({
    id: 'routes-table',
    empty: 'no topics',
    fetch: (page, limit) => (routeTopic.value.trim()
      ? get(`/routes/${enc(routeTopic.value.trim())}`)
      : get('/routes', { _page: page, _limit: limit })),
    columns: [{ title: 'topic', value: (r) => r.topic }, { title: 'node', value: (r) => r.node }],
  });

  root.append(
    h('h1', { text: 'Subscriptions and topics' }),
    card(null,
      h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); table.load(1); } },
        field('client id', clientid), field('topic filter', topic), field('matching topic', match),
        field('QoS', qos), field('shared group', share), h('button', { type: 'submit', text: 'Search' })),
      table.el),
    card('Subscribe or unsubscribe on behalf of a client',
      h('form', { class: 'toolbar', onsubmit: onBehalf('subscribe'), id: 'behalf-form' },
        field('client id', subClient), field('topic', subTopic), field('QoS', subQos),
        h('button', { type: 'submit', text: 'Subscribe' }),
        h('button', { type: 'button', class: 'secondary', text: 'Unsubscribe', onclick: onBehalf('unsubscribe') }))),
    card('Topics (routes)',
      h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); routes.load(1); } },
        field('topic', routeTopic), h('button', { type: 'submit', text: 'Look up' })),
      routes.el),
  );
  table.load(1);
  routes.load(1);
}
