// Login, navigation between pages (#/name/arg), and each page's clean-up on leaving.

import { session, setUnauthorizedHandler } from './api.js';
import { clear, h } from './ui.js';
import * as overview from './pages/overview.js';
import * as clients from './pages/clients.js';
import * as subscriptions from './pages/subscriptions.js';
import * as retained from './pages/retained.js';
import * as access from './pages/access.js';
import * as listeners from './pages/listeners.js';
import * as metrics from './pages/metrics.js';
import * as websocket from './pages/websocket.js';

const PAGES = { overview, clients, subscriptions, retained, access, listeners, metrics, websocket };

const $ = (id) => document.getElementById(id);
let cleanup = null;
let renderCount = 0;

function showLogin(message = '') {
  if (cleanup) { cleanup(); cleanup = null; }
  $('shell').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('login-password').value = '';
  $('login-username').focus();
}

function showShell(user) {
  $('login').hidden = true;
  $('shell').hidden = false;
  $('whoami').textContent = `${user.username} @ ${user.node}`;
  route();
}

async function route() {
  if ($('shell').hidden) return;
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  const page = PAGES[name] ? name : 'overview';
  for (const a of document.querySelectorAll('.side a')) a.classList.toggle('active', a.dataset.page === page);
  if (cleanup) { cleanup(); cleanup = null; }
  const root = clear($('page'));
  const mine = ++renderCount;
  root.dataset.page = page;
  try {
    const done = await PAGES[page].render(root, rest.map(decodeURIComponent));
    if (mine === renderCount) cleanup = typeof done === 'function' ? done : null;
    else if (typeof done === 'function') done();
  } catch (err) {
    if (err.status !== 401) clear(root, h('div', { class: 'unavailable', text: `this page failed: ${err.message}` }));
  }
}

async function login(event) {
  event.preventDefault();
  $('login-submit').disabled = true;
  try {
    await session('POST', { username: $('login-username').value, password: $('login-password').value });
    showShell(await session('GET'));
  } catch (err) {
    showLogin(err.status === 401 ? 'Wrong username or password.' : err.message);
  } finally {
    $('login-submit').disabled = false;
  }
}

async function logout() {
  try { await session('DELETE'); } finally { showLogin(); }
}

setUnauthorizedHandler(() => showLogin('Your session ended; please log in again.'));
$('login-form').addEventListener('submit', login);
$('logout').addEventListener('click', logout);
window.addEventListener('hashchange', route);

session('GET').then(showShell, () => showLogin());
