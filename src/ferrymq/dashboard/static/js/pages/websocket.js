// An MQTT client in the browser (MQTT.js over the broker's WebSocket listener):
// connect, subscribe, publish, and watch the messages arrive. It disconnects when
// you leave the page.

import { get } from '../api.js';
import { badge, card, clear, field, h, select } from '../ui.js';

const MAX_LOG = 200;

async function defaultUrl() {
  try {
    const nodes = (await get('/listeners')).data;
    const all = nodes.flatMap((n) => n.listeners);
    const ws = all.find((l) => l.protocol === 'mqtt:ws') || all.find((l) => l.protocol === 'mqtt:wss');
    if (ws) {
      const scheme = ws.protocol === 'mqtt:wss' ? 'wss' : 'ws';
      return [`${scheme}://${location.hostname}:${ws.port}${ws.path || '/mqtt'}`, ''];
    }
  } catch { /* fall through */ }
  return [`ws://${location.hostname}:8083/mqtt`, 'This broker has no ws listener configured (see docs/listeners.md); the address below is a guess.'];
}

function logLine(log, ...parts) {
  log.prepend(h('div', {}, `${new Date().toLocaleTimeString('sv-SE')}  `, ...parts));
  while (log.childElementCount > MAX_LOG) log.lastChild.remove();
}

export async function render(root) {
  const [url, note] = await defaultUrl();
  const address = h('input', { name: 'ws-url', value: url, size: '40' });
  const clientId = h('input', { name: 'ws-clientid', value: `dashboard_${Math.random().toString(16).slice(2, 10)}` });
  const username = h('input', { name: 'ws-username', autocomplete: 'off' });
  const password = h('input', { name: 'ws-password', type: 'password', autocomplete: 'off' });
  const version = select('ws-version', [['4', 'MQTT 3.1.1'], ['5', 'MQTT 5.0']], '4');
  const keepalive = h('input', { name: 'ws-keepalive', type: 'number', value: '60', min: '0' });
  const status = h('span', { id: 'ws-status' }, badge('disconnected'));
  const connectBtn = h('button', { id: 'ws-connect', type: 'submit', text: 'Connect' });
  const disconnectBtn = h('button', { id: 'ws-disconnect', type: 'button', class: 'secondary', text: 'Disconnect', disabled: true });

  const subTopic = h('input', { name: 'ws-sub-topic', placeholder: 'topic filter' });
  const subQos = select('ws-sub-qos', [['0', 'QoS 0'], ['1', 'QoS 1'], ['2', 'QoS 2']], '0');
  const subs = h('ul', { id: 'ws-subscriptions' });
  const pubTopic = h('input', { name: 'ws-pub-topic', placeholder: 'topic' });
  const pubPayload = h('textarea', { name: 'ws-pub-payload', placeholder: 'payload' });
  const pubQos = select('ws-pub-qos', [['0', 'QoS 0'], ['1', 'QoS 1'], ['2', 'QoS 2']], '0');
  const pubRetain = h('input', { name: 'ws-pub-retain', type: 'checkbox' });
  const received = h('div', { class: 'log', id: 'ws-received' });
  const sent = h('div', { class: 'log', id: 'ws-sent' });
  let client = null;

  const setStatus = (text, kind) => clear(status, badge(text, kind));
  const connected = () => client && client.connected;
  function setButtons() {
    connectBtn.disabled = !!client;
    disconnectBtn.disabled = !client;
  }

  function connect(e) {
    e.preventDefault();
    if (client) return;
    setStatus('connecting', 'warn');
    client = mqtt.connect(address.value.trim(), {
      clientId: clientId.value.trim(),
      username: username.value || undefined,
      password: password.value || undefined,
      protocolVersion: Number(version.value),
      keepalive: Number(keepalive.value) || 0,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10000,
    });
    setButtons();
    client.on('connect', () => setStatus('connected', 'ok'));
    client.on('message', (topic, payload, packet) => logLine(received,
      h('b', { text: topic }), `  QoS ${packet.qos}${packet.retain ? ' retained' : ''}  `,
      new TextDecoder().decode(payload)));
    client.on('error', (err) => setStatus(`error: ${err.message}`, 'bad'));
    client.on('close', () => {
      if (client && !client.connected) {
        if (!status.textContent.startsWith('error')) setStatus('disconnected');
        client.end(true);
        client = null;
        clear(subs);
        setButtons();
      }
    });
  }
  function disconnect() {
    if (!client) return;
    client.end();
    client = null;
    clear(subs);
    setStatus('disconnected');
    setButtons();
  }
  function subscribe(e) {
    e.preventDefault();
    if (!connected()) return setStatus('connect first', 'bad');
    const topic = subTopic.value.trim();
    client.subscribe(topic, { qos: Number(subQos.value) }, (err, granted) => {
      if (err) return setStatus(`subscribe failed: ${err.message}`, 'bad');
      for (const g of granted) {
        const refused = g.qos === 128 || g.qos >= 0x80;
        const item = h('li', { class: refused ? 'refused' : 'granted' }, h('code', { text: g.topic }),
          refused ? ' refused by the broker ' : ` granted QoS ${g.qos} `,
          refused ? null : h('button', { class: 'link', text: 'unsubscribe', onclick: () => client.unsubscribe(g.topic, () => item.remove()) }));
        subs.append(item);
      }
    });
  }
  function publish(e) {
    e.preventDefault();
    if (!connected()) return setStatus('connect first', 'bad');
    const topic = pubTopic.value.trim();
    const payload = pubPayload.value;
    client.publish(topic, payload, { qos: Number(pubQos.value), retain: pubRetain.checked }, (err) => {
      if (err) return logLine(sent, h('b', { text: topic }), `  failed: ${err.message}`);
      logLine(sent, h('b', { text: topic }), `  QoS ${pubQos.value}  `, payload);
    });
  }
  disconnectBtn.addEventListener('click', disconnect);

  root.append(
    h('h1', { text: 'WebSocket client' }),
    ...(note ? [h('p', { class: 'unavailable', text: note })] : []),
    card('Connection',
      h('form', { class: 'toolbar', onsubmit: connect, id: 'ws-connect-form' },
        field('address', address), field('client id', clientId), field('username', username),
        field('password', password), field('protocol', version), field('keep alive (s)', keepalive),
        connectBtn, disconnectBtn, status)),
    h('div', { class: 'grid' },
      card('Subscribe',
        h('form', { class: 'toolbar', onsubmit: subscribe, id: 'ws-subscribe-form' },
          field('topic', subTopic), field('QoS', subQos), h('button', { type: 'submit', text: 'Subscribe' })),
        subs),
      card('Publish',
        h('form', { onsubmit: publish, id: 'ws-publish-form' },
          h('div', { class: 'toolbar' }, field('topic', pubTopic), field('QoS', pubQos), field('retain', pubRetain)),
          h('div', { class: 'toolbar' }, h('label', { class: 'grow' }, 'payload', pubPayload)),
          h('button', { type: 'submit', text: 'Publish' })))),
    h('div', { class: 'grid' }, card('Messages received', received), card('Messages published', sent)),
  );
  return disconnect;
}
