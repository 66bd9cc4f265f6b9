// Every counter of /metrics and every figure of /stats, per node, filterable by name.

import { get } from '../api.js';
import { card, clear, field, fmtNum, h, unavailable } from '../ui.js';

function table(id, entries) {
  return h('table', { id },
    h('thead', {}, h('tr', {}, h('th', { text: 'name' }), h('th', { class: 'num', text: 'value' }))),
    h('tbody', {}, entries.map(([k, v]) => h('tr', { 'data-name': k },
      h('td', { class: 'mono', text: k }), h('td', { class: 'num', text: fmtNum(v) })))));
}

export async function render(root) {
  const filter = h('input', { name: 'metric-filter', placeholder: 'e.g. messages.' });
  const stats = h('div');
  const metrics = h('div');
  root.append(
    h('h1', { text: 'Metrics' }),
    h('div', { class: 'toolbar' }, field('name contains', filter),
      h('button', { class: 'secondary', text: 'Refresh', onclick: () => load() })),
    h('div', { class: 'grid' }, card('Stats (/stats)', stats), card('Metrics (/metrics)', metrics)),
  );
  const apply = () => {
    const text = filter.value.trim();
    for (const tr of root.querySelectorAll('tr[data-name]')) tr.hidden = !!text && !tr.dataset.name.includes(text);
  };
  filter.addEventListener('input', apply);
  async function section(el, path, key) {
    try {
      const nodes = (await get(path)).data;
      clear(el, nodes.map((n) => h('div', {}, h('p', { class: 'muted', text: n.node }),
        table(`${key}-${n.node}`, Object.entries(n[key]).sort(([a], [b]) => a.localeCompare(b))))));
    } catch (err) {
      clear(el, unavailable(err));
    }
  }
  async function load() {
    await Promise.all([section(stats, '/stats', 'stats'), section(metrics, '/metrics', 'metrics')]);
    apply();
  }
  await load();
}
