// Nodes, live charts sampled from /stats and /metrics, and the active alarms.

import { get, sumNodes } from '../api.js';
import { badge, card, clear, fmtBytes, fmtEpoch, fmtNum, h, unavailable } from '../ui.js';

const INTERVAL = 2000; // ms between samples
const KEEP = 15 * 60; // seconds of history kept while the dashboard is open

// Samples survive leaving and re-entering the page (not a reload).
const history = { t: [], connections: [], subscriptions: [], in: [], out: [], dropped: [] };
let last = null; // previous metrics sample, for rates

function record(now, stats, metrics) {
  const counters = {
    in: sumNodes(metrics, 'metrics', 'messages.received'),
    out: sumNodes(metrics, 'metrics', 'messages.sent'),
    dropped: sumNodes(metrics, 'metrics', 'messages.dropped') + sumNodes(metrics, 'metrics', 'delivery.dropped'),
  };
  const rate = (key) => {
    if (!last || now <= last.t) return null;
    return Math.max(0, (counters[key] - last[key]) / (now - last.t));
  };
  history.t.push(now);
  history.connections.push(stats ? sumNodes(stats, 'stats', 'connections.count') : null);
  history.subscriptions.push(stats ? sumNodes(stats, 'stats', 'subscriptions.count') : null);
  history.in.push(metrics ? rate('in') : null);
  history.out.push(metrics ? rate('out') : null);
  history.dropped.push(metrics ? rate('dropped') : null);
  last = metrics ? { t: now, ...counters } : null;
  while (history.t.length && history.t[0] < now - KEEP) {
    for (const series of Object.values(history)) series.shift();
  }
}

function chart(el, title, series) {
  const width = Math.max(320, el.clientWidth - 8);
  return new uPlot({
    title,
    width,
    height: 220,
    series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2, points: { show: false } }))],
    axes: [{}, { size: 60 }],
    // at least the last minute, so a fresh page does not stretch a few seconds across the chart
    scales: { x: { time: true, range: (u, min, max) => [Math.min(min, max - 60), max] } },
    legend: { live: true },
  }, [history.t, ...series.map(() => [])], el);
}

export async function render(root) {
  const tiles = h('div', { class: 'tiles', id: 'overview-tiles' });
  const nodes = h('div', { id: 'overview-nodes' });
  const alarms = h('div', { id: 'overview-alarms' });
  const connChart = h('div', { class: 'chart', id: 'chart-connections' });
  const msgChart = h('div', { class: 'chart', id: 'chart-messages' });
  const chartNote = h('p', { class: 'muted' });
  root.append(
    h('h1', { text: 'Overview' }),
    tiles,
    card('Nodes', nodes),
    h('div', { class: 'grid' },
      card('Connections and subscriptions', connChart),
      card('Messages per second', msgChart)),
    chartNote,
    card('Active alarms', alarms),
  );
  const charts = [
    [chart(connChart, '', [['connections', '#0f766e'], ['subscriptions', '#6941c6']]), ['connections', 'subscriptions']],
    [chart(msgChart, '', [['in', '#1570ef'], ['out', '#067647'], ['dropped', '#d92d20']]), ['in', 'out', 'dropped']],
  ];

  async function sample() {
    const [stats, metrics, nodeList, alarmList] = await Promise.allSettled([
      get('/stats'), get('/metrics'), get('/nodes'), get('/alarms/activated'),
    ]);
    const ok = (r) => (r.status === 'fulfilled' ? r.value.data : null);
    record(Date.now() / 1000, ok(stats), ok(metrics));
    for (const [plot, keys] of charts) plot.setData([history.t, ...keys.map((k) => history[k])]);
    const missing = [[stats, '/stats'], [metrics, '/metrics']].filter(([r]) => r.status !== 'fulfilled');
    chartNote.textContent = missing.length
      ? `Not available: ${missing.map(([r, p]) => `${p} (${r.reason.message})`).join('; ')}`
      : `Sampled every ${INTERVAL / 1000} s by this page from /stats and /metrics.`;
    renderTiles(ok(stats), ok(metrics));
    renderNodes(nodeList);
    renderAlarms(alarmList);
  }

  function renderTiles(stats, metrics) {
    const n = history.t.length - 1;
    const tile = (k, v) => h('div', { class: 'tile' }, h('div', { class: 'v', text: v }), h('div', { class: 'k', text: k }));
    const stat = (f) => (stats ? fmtNum(sumNodes(stats, 'stats', f)) : 'n/a');
    const rate = (k) => (history[k][n] === null || history[k][n] === undefined ? '-' : history[k][n].toFixed(1));
    clear(tiles,
      tile('connections', stat('connections.count')),
      tile('sessions', stat('sessions.count')),
      tile('subscriptions', stat('subscriptions.count')),
      tile('topics', stat('topics.count')),
      tile('retained', stat('retained.count')),
      tile('received / s', metrics ? rate('in') : 'n/a'),
      tile('sent / s', metrics ? rate('out') : 'n/a'),
      tile('dropped / s', metrics ? rate('dropped') : 'n/a'));
  }

  function renderNodes(result) {
    if (result.status !== 'fulfilled') return clear(nodes, unavailable(result.reason));
    const cols = ['node', 'status', 'version', 'uptime', 'connections', 'memory used / total', 'load 1/5/15'];
    clear(nodes, h('table', {},
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { text: c })))),
      h('tbody', {}, result.value.data.map((n) => h('tr', {},
        h('td', { text: n.node }),
        h('td', {}, badge(n.node_status || '-', n.node_status === 'Running' ? 'ok' : 'bad')),
        h('td', { text: n.version ?? '-' }),
        h('td', { text: n.uptime ?? '-' }),
        h('td', { text: fmtNum(n.connections) }),
        h('td', { text: `${fmtBytes(n.memory_used)} / ${fmtBytes(n.memory_total)}` }),
        h('td', { text: [n.load1, n.load5, n.load15].map((v) => v ?? '-').join(' / ') }))))));
  }

  function renderAlarms(result) {
    if (result.status !== 'fulfilled') return clear(alarms, unavailable(result.reason));
    const active = result.value.data.flatMap((n) => (n.alarms || []).map((a) => ({ node: n.node, ...a })));
    if (!active.length) return clear(alarms, h('p', { class: 'muted', text: 'No active alarms.' }));
    clear(alarms, h('table', {},
      h('thead', {}, h('tr', {}, ['node', 'name', 'message', 'since'].map((c) => h('th', { text: c })))),
      h('tbody', {}, active.map((a) => h('tr', {},
        h('td', { text: a.node }), h('td', {}, badge(a.name, 'warn')),
        h('td', { text: a.message ?? '' }), h('td', { text: fmtEpoch(a.activate_at / 1e6) }))))));  // epoch µs, as EMQX 4.4
  }

  await sample();
  const timer = setInterval(sample, INTERVAL);
  const resize = () => {
    for (const [plot] of charts) plot.setSize({ width: Math.max(320, plot.root.parentElement.clientWidth - 8), height: 220 });
  };
  window.addEventListener('resize', resize);
  return () => {
    clearInterval(timer);
    window.removeEventListener('resize', resize);
    for (const [plot] of charts) plot.destroy();
  };
}
