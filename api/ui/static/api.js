// The node's data API: requests with the token, the live event stream (with a
// fallback to polling where the node has none), and the store the pages read.

import {STATES} from './util.js';

// ---- events between the store and the pages ----

const listeners = new Map();

// on calls fn on every emit of type; it returns the function that stops it.
// Types: pool, overview, node, history, transition, conn, auth, missing.
export function on(type, fn) {
  if (!listeners.has(type)) listeners.set(type, new Set());
  listeners.get(type).add(fn);
  return () => listeners.get(type).delete(fn);
}

function emit(type, detail) {
  for (const fn of listeners.get(type) || []) {
    try { fn(detail); } catch (e) { console.error(e); }
  }
}

// ---- the token ----

const TOKEN_KEY = 'ephemera.api-token';

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || '',
  set: v => v ? sessionStorage.setItem(TOKEN_KEY, v) : sessionStorage.removeItem(TOKEN_KEY),
};

// ---- requests ----

// HTTPError is a request that failed: status 0 when the node did not answer.
export class HTTPError extends Error {
  constructor(status, message, api = false) {
    super(message);
    this.status = status;
    this.api = api; // the body was the API's own error, {"error": {"message": …}}
  }
  // missing is true when the node has no such endpoint or resource (404, 405).
  get missing() { return this.status === 404 || this.status === 405; }
  // endpointMissing tells a node without the endpoint (an older version)
  // from one without the thing asked for, such as an unknown miner.
  get endpointMissing() { return this.missing && (!this.api || /^no endpoint/i.test(this.message)); }
}

// apiURL resolves an API path against the page, so the dashboard also works
// behind a proxy that serves the node under a path prefix.
function apiURL(path, withToken = false) {
  const u = new URL(path, document.baseURI);
  const t = token.get();
  if (withToken && t) u.searchParams.set('access_token', t);
  return u;
}

function headers() {
  const t = token.get();
  return t ? {Authorization: `Bearer ${t}`} : {};
}

// A proxy in front of the node answers these when the node is down.
const downStatus = new Set([502, 503, 504]);

// get fetches an API path's JSON. It throws an HTTPError on failure, and
// tells the connection state and the token form what it learned.
export async function get(path, {signal} = {}) {
  let res;
  try {
    res = await fetch(apiURL(path), {headers: headers(), signal, cache: 'no-store'});
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    conn.fail();
    throw new HTTPError(0, 'the node did not answer');
  }
  if (downStatus.has(res.status)) {
    conn.fail();
    throw new HTTPError(res.status, `the node did not answer (${res.status})`);
  }
  conn.ok();
  if (res.status === 401) {
    auth.need();
    throw new HTTPError(401, 'an API token is needed');
  }
  if (!res.ok) throw await httpError(res);
  return res.json();
}

// httpError reads the API's error body, {"error": {"message": …}}.
async function httpError(res) {
  const text = await res.text().catch(() => '');
  try {
    const m = JSON.parse(text)?.error?.message;
    if (m) return new HTTPError(res.status, m, true);
  } catch { /* not JSON */ }
  return new HTTPError(res.status, text.trim() || `${res.status} ${res.statusText}`);
}

// unavailable says why a panel has no data: the API's own reason for a
// missing resource, or "not available on this node" for a missing endpoint.
export function unavailable(err) {
  if (err?.endpointMissing) return 'Not available on this node.';
  if (err?.missing) return err.message;
  if (err?.status === 401) return 'Waiting for the API token.';
  return `Could not load: ${err?.message || err}`;
}

// ---- connection state ----

const GRACE_MS = 3000; // failures shorter than this show no banner

export const conn = {
  mode: 'connecting', // connecting | live | polling | auth
  since: null,        // when the node stopped answering, while it does not
  down: false,        // true once it has not answered for GRACE_MS
  timer: 0,

  fail(at = new Date()) {
    if (this.since) return;
    this.since = at;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (this.since && !this.down) { this.down = true; emit('conn'); }
    }, Math.max(0, GRACE_MS - (Date.now() - at.getTime())));
  },
  ok() {
    clearTimeout(this.timer);
    const was = this.down;
    this.since = null;
    this.down = false;
    if (was) emit('conn');
  },
  setMode(m) {
    if (this.mode !== m) { this.mode = m; emit('conn'); }
  },
};

// ---- the token form ----

export const auth = {
  refused: false, // a token was sent and refused
  need() {
    if (conn.mode === 'auth') return;
    this.refused = token.get() !== '';
    token.set('');
    stop();
    conn.setMode('auth');
    emit('auth');
  },
  // submit keeps the token for this tab and starts over with it.
  submit(t) {
    token.set(t.trim());
    this.refused = false;
    start();
  },
};

// ---- the store ----

const HOUR = 3600e3;

export const store = {
  node: null,          // NodeInfo, from the overview or GET /v1/node
  overview: null,      // the latest overview
  pool: new Map(),     // peer id → PoolMiner
  poolLoaded: false,
  history: [],         // [{t: ms, counts}] oldest first, one per interval
  historyNow: null,    // the latest live sample, drawn after history
  interval: 10,        // seconds between history points
  transitions: [],     // Events oldest first, the last MAX_EVENTS seen
  samples: [],         // [{t: ms, gossip}] the overviews' gossip counters, for rates
  missing: new Set(),  // names of the endpoints this node does not have
};

const MAX_EVENTS = 1000;

function setOverview(o) {
  store.overview = o;
  if (o.node) { store.node = o.node; emit('node'); }
  const t = Date.parse(o.time) || Date.now();
  if (Array.isArray(o.gossip)) {
    // A counter that fell: the node restarted, and older samples mean nothing.
    const last = new Map((store.samples.at(-1)?.gossip || []).map(g => [g.topic, g]));
    if (o.gossip.some(g => (g.accept ?? 0) < (last.get(g.topic)?.accept ?? 0))) store.samples = [];
    store.samples.push({t, gossip: o.gossip});
    while (store.samples.length > 2 && t - store.samples[0].t > 30e3) store.samples.shift();
  }
  if (o.pool?.counts) sample(t, o.pool.counts);
  emit('overview');
}

// sample adds a live pool count to the chart's series: a new point once an
// interval has passed since the last, else it moves the right edge.
function sample(t, counts) {
  const last = store.history.at(-1);
  if (!last || t - last.t >= store.interval * 1000) {
    store.history.push({t, counts});
    store.historyNow = null;
  } else {
    store.historyNow = {t, counts};
  }
  while (store.history.length && store.history[0].t < t - HOUR - 60e3) store.history.shift();
  emit('history');
}

function setHistory(h) {
  store.interval = h.interval_seconds || 10;
  const pts = (h.points || []).map(p => ({t: Date.parse(p.time), counts: p.counts || {}}))
    .filter(p => !Number.isNaN(p.t));
  const lastFetched = pts.at(-1)?.t ?? 0;
  // Keep the live samples taken after the history was made.
  store.history = pts.concat(store.history.filter(p => p.t > lastFetched));
  emit('history');
}

// gossipRates are messages per second by topic and outcome, over the last
// ~10 s of overview counters; null until two overviews came.
export function gossipRates() {
  const s = store.samples;
  if (s.length < 2) return null;
  const cur = s.at(-1);
  let prev = s[0];
  for (const p of s) if (cur.t - p.t >= 10e3) prev = p;
  const dt = (cur.t - prev.t) / 1000;
  if (dt <= 0) return null;
  const before = new Map(prev.gossip.map(g => [g.topic, g]));
  const out = new Map();
  for (const g of cur.gossip) {
    const b = before.get(g.topic);
    const r = {};
    for (const k of ['accept', 'reject', 'ignore', 'throttled', 'published']) {
      const d = (g[k] ?? 0) - (b?.[k] ?? 0);
      r[k] = b && d >= 0 ? d / dt : null; // a counter that fell: the node restarted
    }
    out.set(g.topic, r);
  }
  return out;
}

// countsFromPool counts the known miners by state.
export function countsFromPool() {
  const counts = Object.fromEntries(STATES.map(s => [s, 0]));
  for (const m of store.pool.values()) counts[m.state] = (counts[m.state] || 0) + 1;
  return counts;
}

function setMiner(m) {
  m._at = Date.now();
  store.pool.set(m.peer_id, m);
  emit('pool', m.peer_id);
}

function setPool(list, startedAt) {
  const next = new Map();
  for (const m of list || []) next.set(m.peer_id, m);
  // A miner event that came while the list was on its way is newer than it.
  for (const [id, m] of store.pool) if (m._at > startedAt) next.set(id, m);
  store.pool = next;
  store.poolLoaded = true;
  emit('pool', null);
}

// eventKey tells one event from another, to merge fetched and live ones.
const eventKey = e =>
  [e.time, e.kind, e.miner, e.state, e.oracle, e.router, e.session, e.outcome].join('|');

// mergeEvents joins two lists of events, without duplicates, oldest first.
export function mergeEvents(a, b) {
  const seen = new Map();
  for (const e of a) seen.set(eventKey(e), e);
  for (const e of b) seen.set(eventKey(e), e);
  return [...seen.values()].sort((x, y) => Date.parse(x.time) - Date.parse(y.time));
}

function addTransition(e) {
  store.transitions.push(e);
  if (store.transitions.length > MAX_EVENTS) store.transitions.splice(0, store.transitions.length - MAX_EVENTS);
  emit('transition', e);
}

// ---- loading ----

// load fetches one endpoint into the store, noting a missing one.
async function load(name, path, apply) {
  const started = Date.now();
  const r = run;
  try {
    const body = await get(path);
    if (r !== run) return;
    if (store.missing.delete(name)) emit('missing', name);
    apply(body, started);
  } catch (e) {
    if (r !== run) return;
    if (e.status === 0 || downStatus.has(e.status)) resync = true;
    if (e.endpointMissing && !store.missing.has(name)) {
      store.missing.add(name);
      if (name === 'overview') store.overview = null;
      emit('missing', name);
    }
    else if (!e.missing && e.status !== 401 && e.status !== 0) console.warn(path, e);
  }
}

const loadPool = () => load('pool', 'v1/pool', (list, started) => {
  setPool(list, started);
  // A node without the overview: the chart draws from the pool itself.
  if (store.missing.has('overview')) sample(Date.now(), countsFromPool());
});
const loadOverview = () => load('overview', 'v1/overview', setOverview);
const loadNode = () => load('node', 'v1/node', n => { store.node = n; emit('node'); });
const loadHistory = () => load('history', 'v1/history', setHistory);
const loadTransitions = () => load('transitions', 'v1/transitions?limit=500', list => {
  store.transitions = mergeEvents(list || [], store.transitions).slice(-MAX_EVENTS);
  emit('transition', null);
});

// ---- the live stream ----

let run = 0;         // bumped by start and stop, so late answers of a former run are dropped
let es = null;       // the EventSource while one is open or opening
let opens = 0;       // how often the stream opened in this run
let resync = false;  // a load failed because the node did not answer: load again when it does
let attempts = 0;    // failed tries since the stream last opened
let watchdog = 0;    // closes a stream that went silent
let retryTimer = 0;
let probing = false; // broken is asking the node why the stream failed
let pollTimer = 0;

const SILENT_MS = 12e3;   // overviews come every 2 s: a stream silent this long is dead
const POLL_MS = 5e3;      // polling, where the node has no event stream
const REPROBE_MS = 30e3;  // then how often to try the stream again

// start loads everything and opens the event stream; again after a new token.
export function start() {
  stop();
  conn.setMode('connecting');
  loadNode();
  loadOverview();
  loadPool();
  loadHistory();
  loadTransitions();
  connect();
}

// stop closes the stream and every timer.
function stop() {
  run++;
  opens = 0;
  attempts = 0;
  resync = false;
  if (es) { es.close(); es = null; }
  clearTimeout(watchdog);
  clearTimeout(retryTimer);
  clearInterval(pollTimer);
  pollTimer = 0;
}

function connect() {
  const r = run;
  if (es) es.close();
  es = new EventSource(apiURL('v1/events', true));
  const handle = (type, fn) => es.addEventListener(type, ev => {
    if (r !== run) return;
    alive();
    let data;
    try { data = JSON.parse(ev.data); } catch { return; }
    fn(data);
  });
  es.addEventListener('open', () => {
    if (r !== run) return;
    attempts = 0;
    conn.ok();
    stopPolling();
    if (store.missing.delete('events')) emit('missing', 'events');
    conn.setMode('live');
    alive();
    // Whatever changed while the stream was down: fetch it once.
    if (opens++ > 0 || resync) {
      resync = false;
      if (!store.node) loadNode();
      loadPool();
      loadHistory();
      loadTransitions();
    }
  });
  handle('overview', setOverview);
  handle('miner', setMiner);
  handle('transition', addTransition);
  es.addEventListener('error', () => { if (r === run) broken(); });
}

// alive re-arms the watchdog on every sign of life from the stream.
function alive() {
  conn.ok();
  clearTimeout(watchdog);
  watchdog = setTimeout(broken, SILENT_MS);
}

// broken closes a failed stream, asks the node why it failed, and retries.
async function broken() {
  if (probing) return; // the watchdog and the error event may both come
  probing = true;
  const r = run;
  const at = new Date();
  clearTimeout(watchdog);
  if (es) { es.close(); es = null; }
  const status = await probe();
  probing = false;
  if (r !== run) return;
  if (status === 401) { auth.need(); return; }
  if (status === 404 || status === 405) {
    // No event stream on this node: poll, and look for one now and then.
    conn.ok();
    if (!store.missing.has('events')) { store.missing.add('events'); emit('missing', 'events'); }
    startPolling();
    retry(REPROBE_MS);
    return;
  }
  if (status === 0 || downStatus.has(status)) conn.fail(at);
  else conn.ok();
  if (conn.mode === 'live') conn.setMode('connecting');
  attempts++;
  retry(Math.min(1000 * 2 ** (attempts - 1), 10e3));
}

function retry(ms) {
  clearTimeout(retryTimer);
  const r = run;
  retryTimer = setTimeout(() => { if (r === run) connect(); }, ms);
}

// probe asks for the event stream with fetch, which, unlike EventSource,
// tells the status; 0 when the node does not answer.
async function probe() {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 5000);
  try {
    const res = await fetch(apiURL('v1/events'), {headers: headers(), signal: ctl.signal, cache: 'no-store'});
    return res.status;
  } catch {
    return 0;
  } finally {
    clearTimeout(timer);
    ctl.abort(); // the stream itself is not wanted
  }
}

function startPolling() {
  if (pollTimer) return;
  conn.setMode('polling');
  const tick = () => {
    loadPool();
    if (store.missing.has('overview')) loadNode(); else loadOverview();
  };
  tick();
  pollTimer = setInterval(tick, POLL_MS);
}

function stopPolling() {
  clearInterval(pollTimer);
  pollTimer = 0;
}
