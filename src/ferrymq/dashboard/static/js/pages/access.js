// Access: MQTT credentials (usernames, client ids), ACL rules in first-match order,
// API apps and bans.

import { del, enc, get, post, put } from '../api.js';
import { act, card, clear, field, fmtEpoch, h, pagedTable, select, toast } from '../ui.js';

const TABS = [
  ['users', 'Users'], ['clientids', 'Client IDs'], ['acl', 'ACL'], ['apps', 'API apps'], ['bans', 'Bans'],
];

function credentials(kind) {
  const name = h('input', { name: `new-${kind}`, placeholder: kind, autocomplete: 'off' });
  const password = h('input', { name: `new-${kind}-password`, type: 'password', placeholder: 'password', autocomplete: 'new-password' });
  const base = `/auth_${kind}`;
  const table = pagedTable({
    id: `auth-${kind}-table`,
    empty: `no ${kind} credentials`,
    fetch: (page, limit) => get(base, { _page: page, _limit: limit }),
    columns: [
      { title: kind, value: (r) => r[kind] },
      { title: 'created', value: (r) => fmtEpoch(r.created_at) },
      { title: '', value: (r) => h('div', { class: 'actions' },
        h('button', { class: 'secondary', text: 'Change password', onclick: () => {
          const pw = prompt(`New password for ${kind} ${r[kind]}`);
          if (pw) act(() => put(`${base}/${enc(r[kind])}`, { password: pw }), 'password changed');
        } }),
        h('button', { class: 'danger', text: 'Delete', onclick: () => {
          if (confirm(`Delete the credentials of ${kind} ${r[kind]}?`)) act(() => del(`${base}/${enc(r[kind])}`), 'deleted').then(table.reload);
        } })) },
    ],
  });
  const add = (e) => {
    e.preventDefault();
    act(() => post(base, { [kind]: name.value, password: password.value }), `${kind} ${name.value} added`)
      .then(() => { name.value = ''; password.value = ''; table.load(1); });
  };
  table.load(1);
  return [
    card(kind === 'username' ? 'MQTT users' : 'Client ID credentials',
      h('p', { class: 'muted', text: `Checked at CONNECT: a client whose ${kind} has a record must give its password.` }),
      h('form', { class: 'toolbar', onsubmit: add, id: `add-${kind}` },
        field(kind, name), field('password', password), h('button', { type: 'submit', text: 'Add' })),
      table.el),
  ];
}

const GROUPS = [
  ['clientid', '1. Client ID rules'], ['username', '2. Username rules'], ['$all', '3. Rules for all clients'],
];

function subjectOf(rule) {
  if (rule.clientid !== undefined) return ['clientid', rule.clientid];
  if (rule.username !== undefined) return ['username', rule.username];
  return ['$all', '$all'];
}

function rulePath([kind, subject], topic) {
  return kind === '$all' ? `/acl/$all/topic/${enc(topic)}` : `/acl/${kind}/${enc(subject)}/topic/${enc(topic)}`;
}

function ruleBody([kind, subject], rule) {
  const body = { topic: rule.topic, action: rule.action, access: rule.access };
  if (kind !== '$all') body[kind] = subject;
  return body;
}

function acl() {
  const tables = [];
  const reloadAll = () => tables.forEach((t) => t.reload());
  // Re-adding makes a rule the newest of its subject, so it is tried first.
  async function moveToTop(rule) {
    const subject = subjectOf(rule);
    const [kind, who] = subject;
    const listPath = kind === '$all' ? '/acl/$all' : `/acl/${kind}/${enc(who)}`;
    const same = (await get(listPath, { topic: rule.topic })).data.filter((r) => r.topic === rule.topic);
    await del(rulePath(subject, rule.topic));
    const others = same.filter((r) => r.action !== rule.action);
    for (const r of [...others.reverse(), rule]) await post('/acl', ruleBody(subject, r));
  }
  const kind = select('acl-kind', [['clientid', 'client id'], ['username', 'username'], ['$all', 'all clients']], 'clientid');
  const subject = h('input', { name: 'acl-subject', placeholder: 'client id or username' });
  const topic = h('input', { name: 'acl-topic', placeholder: 'topic filter, may use + # %c %u' });
  const action = select('acl-action', [['pubsub', 'publish and subscribe'], ['pub', 'publish'], ['sub', 'subscribe']], 'pubsub');
  const access = select('acl-access', [['allow', 'allow'], ['deny', 'deny']], 'allow');
  kind.addEventListener('change', () => { subject.disabled = kind.value === '$all'; });
  const add = (e) => {
    e.preventDefault();
    const rule = { topic: topic.value.trim(), action: action.value, access: access.value };
    act(() => post('/acl', ruleBody([kind.value, subject.value.trim()], rule)), 'rule added')
      .then(() => { topic.value = ''; reloadAll(); });
  };
  const cards = GROUPS.map(([group, title]) => {
    const table = pagedTable({
      id: `acl-${group === '$all' ? 'all' : group}-table`,
      empty: 'no rules',
      fetch: (page, limit) => get(`/acl/${group}`, { _page: page, _limit: limit }),
      columns: [
        { title: '#', value: (r, i) => String(i + 1), num: true },
        { title: group === '$all' ? 'applies to' : group, value: (r) => subjectOf(r)[1] },
        { title: 'topic', value: (r) => r.topic },
        { title: 'action', value: (r) => r.action },
        { title: 'access', value: (r) => h('span', { class: `badge ${r.access === 'allow' ? 'ok' : 'bad'}`, text: r.access }) },
        { title: '', value: (r) => h('div', { class: 'actions' },
          h('button', { class: 'secondary', text: 'Move to top', title: 're-add: newest rules are tried first', onclick: () => act(() => moveToTop(r), 'rule moved to the top').then(reloadAll) }),
          h('button', { class: 'danger', text: 'Delete', onclick: () => act(() => del(rulePath(subjectOf(r), r.topic)), 'rule deleted').then(reloadAll) })) },
      ],
    });
    tables.push(table);
    table.load(1);
    return card(title, table.el);
  });
  return [
    card('ACL rules',
      h('p', { class: 'muted', text: 'For each PUBLISH and SUBSCRIBE a client\'s candidate rules are its client ID rules, then its username rules, then the rules for all clients, newest first within each group (the # column); the first rule whose action and topic match decides. No match: the acl_nomatch setting.' }),
      h('form', { class: 'toolbar', onsubmit: add, id: 'add-acl' },
        field('for', kind), field('client id / username', subject), field('topic', topic),
        field('action', action), field('access', access), h('button', { type: 'submit', text: 'Add rule' }))),
    ...cards,
  ];
}

function apps() {
  const name = h('input', { name: 'app-name', placeholder: 'name' });
  const desc = h('input', { name: 'app-desc', placeholder: 'description' });
  const secret = h('div');
  const table = pagedTable({
    id: 'apps-table',
    empty: 'no API apps',
    fetch: (page, limit) => get('/apps', { _page: page, _limit: limit }),
    columns: [
      { title: 'AppID', value: (a) => h('code', { text: a.app_id }) },
      { title: 'name', value: (a) => a.name },
      { title: 'description', value: (a) => a.desc },
      { title: 'status', value: (a) => h('span', { class: `badge ${a.status ? 'ok' : 'bad'}`, text: a.status ? 'enabled' : 'disabled' }) },
      { title: 'created', value: (a) => a.created_at },
      { title: '', value: (a) => h('div', { class: 'actions' },
        h('button', { class: 'secondary', text: a.status ? 'Disable' : 'Enable', onclick: () => act(() => put(`/apps/${enc(a.app_id)}`, { status: !a.status })).then(table.reload) }),
        h('button', { class: 'danger', text: 'Delete', onclick: () => {
          if (confirm(`Delete API app ${a.app_id}?`)) act(() => del(`/apps/${enc(a.app_id)}`), 'app deleted').then(table.reload);
        } })) },
    ],
  });
  const add = (e) => {
    e.preventDefault();
    act(async () => {
      const created = (await post('/apps', { name: name.value, desc: desc.value })).data;
      clear(secret, h('div', { class: 'unavailable' },
        'Created. The secret is shown only this once: ',
        h('code', { text: `AppID ${created.app_id}  AppSecret ${created.secret}` })));
      name.value = ''; desc.value = '';
      table.load(1);
    });
  };
  table.load(1);
  return [card('API apps',
    h('p', { class: 'muted', text: 'Scripts use an AppID and AppSecret with HTTP Basic authentication on the management API.' }),
    h('form', { class: 'toolbar', onsubmit: add }, field('name', name), field('description', desc), h('button', { type: 'submit', text: 'Create app' })),
    secret, table.el)];
}

function bans() {
  const as = select('ban-as', [['clientid', 'client id'], ['username', 'username'], ['peerhost', 'IP address']], 'clientid');
  const who = h('input', { name: 'ban-who', placeholder: 'who' });
  const reason = h('input', { name: 'ban-reason', placeholder: 'reason' });
  const minutes = h('input', { name: 'ban-minutes', type: 'number', min: '1', value: '60' });
  const table = pagedTable({
    id: 'bans-table',
    empty: 'no bans',
    fetch: (page, limit) => get('/banned', { _page: page, _limit: limit }),
    columns: [
      { title: 'as', value: (b) => b.as },
      { title: 'who', value: (b) => b.who },
      { title: 'reason', value: (b) => b.reason ?? '' },
      { title: 'by', value: (b) => b.by ?? '' },
      { title: 'from', value: (b) => fmtEpoch(b.at) },
      { title: 'until', value: (b) => fmtEpoch(b.until) },
      { title: '', value: (b) => h('button', { class: 'danger', text: 'Lift', onclick: () => act(() => del(`/banned/${enc(b.as)}/${enc(b.who)}`), 'ban lifted').then(table.reload) }) },
    ],
  });
  const add = (e) => {
    e.preventDefault();
    const at = Math.floor(Date.now() / 1000);
    act(() => post('/banned', { as: as.value, who: who.value.trim(), reason: reason.value, by: 'dashboard', at, until: at + 60 * Number(minutes.value) }), 'banned')
      .then(() => { who.value = ''; table.load(1); });
  };
  table.load(1);
  return [card('Bans',
    h('p', { class: 'muted', text: 'A banned client is refused at CONNECT, and an online one is disconnected. Bans end by themselves.' }),
    h('form', { class: 'toolbar', onsubmit: add }, field('as', as), field('who', who), field('reason', reason), field('minutes', minutes), h('button', { type: 'submit', text: 'Ban' })),
    table.el)];
}

const BUILD = { users: () => credentials('username'), clientids: () => credentials('clientid'), acl, apps, bans };

export async function render(root, [tab]) {
  const current = BUILD[tab] ? tab : 'users';
  const body = h('div', { id: `access-${current}` }, BUILD[current]());
  root.append(
    h('h1', { text: 'Access' }),
    h('div', { class: 'tabs' }, TABS.map(([key, text]) => h('button', {
      class: key === current ? 'on' : '', text, 'data-tab': key,
      onclick: () => { location.hash = `#/access/${key}`; },
    }))),
    body,
  );
  if (!BUILD[tab] && tab) toast(`no such tab ${tab}`, true);
}
