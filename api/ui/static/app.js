// The dashboard's entry: hash routing between the pages, the header, the
// "unreachable" banner and the token form.

import {on, start, conn, auth, store} from './api.js';
import {h, replace, shortID, clock, tickAges} from './util.js';
import * as pool from './pool.js';
import * as miner from './miner.js';
import * as oracles from './oracles.js';
import * as node from './node.js';

const view = document.getElementById('view');

// Each page's mount(view, param) draws it and returns the function that
// takes it down (listeners and timers).
const pages = {pool, miner, oracles, node};

let unmount = null;

function route() {
  const [, name = 'pool', ...rest] = location.hash.replace(/^#\/?/, '#/').split('/');
  const page = pages[name || 'pool'];
  if (unmount) { unmount(); unmount = null; }
  view.replaceChildren();
  view.dataset.page = page ? name || 'pool' : 'none';
  for (const a of document.querySelectorAll('#nav a')) {
    a.toggleAttribute('aria-current', a.dataset.nav === (name === 'miner' ? 'pool' : name || 'pool'));
  }
  if (!page) {
    view.append(h('section', {class: 'panel'}, h('h1', {}, 'Not found'),
      h('p', {}, 'No such page. ', h('a', {href: '#/pool'}, 'Back to the pool'), '.')));
    return;
  }
  const param = rest.length ? decodeURIComponent(rest.join('/')) : '';
  unmount = page.mount(view, param) || null;
  window.scrollTo(0, 0);
}

// ---- header ----

function drawNode() {
  const n = store.node;
  if (!n) return;
  const short = document.getElementById('node-short');
  short.textContent = shortID(n.peer_id);
  short.title = n.peer_id;
  replace(document.getElementById('node-role-badges'),
    (n.roles || []).map(r => h('span', {class: 'role', 'data-role': r}, r)));
  document.title = `ephemera · ${(n.roles || []).join(', ') || 'node'} ${shortID(n.peer_id)}`;
}

const modeText = {connecting: 'connecting', live: 'live', polling: 'polling', auth: 'token needed'};

function drawConn() {
  const el = document.getElementById('conn');
  const mode = conn.down ? 'down' : conn.mode;
  el.dataset.mode = mode;
  el.textContent = conn.down ? 'unreachable' : modeText[conn.mode] || conn.mode;
  el.title = conn.mode === 'polling'
    ? 'This node has no event stream: the dashboard asks it every few seconds.'
    : '';
  document.body.dataset.conn = mode;

  const banner = document.getElementById('unreachable');
  banner.hidden = !conn.down;
  if (conn.down && conn.since) {
    const since = document.getElementById('unreachable-since');
    since.textContent = clock(conn.since);
    since.dateTime = conn.since.toISOString();
    banner.dataset.since = conn.since.toISOString();
  }
}

// ---- token form ----

const authBox = document.getElementById('auth');
const authForm = document.getElementById('auth-form');
const authInput = document.getElementById('auth-token');

function askToken() {
  document.getElementById('auth-message').textContent = auth.refused
    ? 'The node refused that token. Enter the API token again.'
    : "This node's API needs a token.";
  authBox.hidden = false;
  authInput.value = '';
  authInput.focus();
}

authForm.addEventListener('submit', ev => {
  ev.preventDefault();
  if (!authInput.value.trim()) return;
  authBox.hidden = true;
  auth.submit(authInput.value);
  route(); // the page fetches its own data again, with the token
});

// ---- start ----

on('node', drawNode);
on('conn', drawConn);
on('auth', askToken);
window.addEventListener('hashchange', route);
setInterval(() => tickAges(document.body), 5000);

drawConn();
start();
route();
