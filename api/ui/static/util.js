// Small helpers shared by the pages: building DOM, formatting, scheduling.

// The lifecycle states in the order a miner goes through them; the order of
// the chart's layers, the filter chips and the state sort.
export const STATES = ['joining', 'validating', 'available', 'reserved', 'cooling_off', 'stale'];

export function stateRank(s) {
  const i = STATES.indexOf(s);
  return i < 0 ? STATES.length : i;
}

// h builds an element: h('a', {href: '#/', class: 'x', dataset: {peer: id}}, 'text', child).
// Attributes set to null, undefined or false are left out; children may be
// strings, numbers, nodes, or (nested) arrays of them.
export function h(tag, attrs, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

// svg builds an SVG element: svg('rect', {x: 0, ...}).
export const svg = (tag, attrs, ...children) => h('svg:' + tag, attrs, ...children);

// replace swaps el's children for the given ones.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// badge is a state's colored label.
export function badge(state) {
  return h('span', {class: 'badge', 'data-badge': state || 'unknown'}, (state || 'unknown').replace('_', ' '));
}

// shortID shortens a libp2p peer id, whose first characters are all alike.
export function shortID(id) {
  if (!id) return '';
  return id.length > 14 ? '…' + id.slice(-10) : id;
}

// shortSession shortens a session id (random hex) to its start, as git does.
export function shortSession(id) {
  if (!id) return '';
  return id.length > 12 ? id.slice(0, 10) + '…' : id;
}

// peerLink is a link to a miner's lifecycle page, its full id in the tooltip.
export function peerLink(id) {
  return h('a', {class: 'mono', href: '#/miner/' + encodeURIComponent(id), title: id}, shortID(id));
}

// peerText is a peer id in short, the full one in the tooltip.
export function peerText(id) {
  return h('span', {class: 'mono', title: id}, shortID(id));
}

// parseTime reads an RFC 3339 time; null for a missing or zero one.
export function parseTime(s) {
  if (!s || s.startsWith('0001-')) return null;
  const t = new Date(s);
  return isNaN(t) ? null : t;
}

const pad = n => String(n).padStart(2, '0');

// clock is a time as HH:MM:SS in local time.
export function clock(t) {
  return t ? `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}` : '—';
}

// stamp is a time as its date and clock, for tooltips.
export function stamp(t) {
  return t ? `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${clock(t)}` : '';
}

// duration is a number of seconds in words: "42 s", "3 min 5 s", "2 h 10 min", "3 d 4 h".
export function duration(sec) {
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec} s`;
  const m = Math.floor(sec / 60), s = sec % 60;
  if (m < 60) return s ? `${m} min ${s} s` : `${m} min`;
  const hr = Math.floor(m / 60), mm = m % 60;
  if (hr < 48) return mm ? `${hr} h ${mm} min` : `${hr} h`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

// ago is how long before now a time was: "12 s ago", "never".
function ago(t, now = Date.now()) {
  if (!t) return 'never';
  const sec = (now - t.getTime()) / 1000;
  if (sec < 2) return 'just now';
  if (sec < 60) return `${Math.round(sec)} s ago`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ago`;
  if (sec < 86400) return `${Math.floor(sec / 3600)} h ago`;
  return `${Math.floor(sec / 86400)} d ago`;
}

// relTime is an element showing how long ago t was, kept fresh by tickAges.
export function relTime(t) {
  return h('time', {class: 'ago', datetime: t ? t.toISOString() : null, title: stamp(t)}, ago(t));
}

// tickAges refreshes every relTime under root.
export function tickAges(root) {
  const now = Date.now();
  for (const el of root.querySelectorAll('time.ago[datetime]')) {
    const text = ago(new Date(el.getAttribute('datetime')), now);
    if (el.textContent !== text) el.textContent = text;
  }
}

export function num(n, digits = 0) {
  if (n == null || Number.isNaN(n)) return '—';
  return Number(n).toLocaleString(undefined, {minimumFractionDigits: digits, maximumFractionDigits: digits});
}

export function pct(x) {
  return x == null || Number.isNaN(x) ? '—' : `${(x * 100).toFixed(1)} %`;
}

// rate is a per-second rate, with fewer digits as it grows.
export function rate(x) {
  if (x == null || Number.isNaN(x)) return '—';
  if (x === 0) return '0';
  return x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : Math.round(x).toString();
}

// frame returns a function that runs fn at the next animation frame, and at
// most once per frame and per minMs however often it is called; its cancel
// method drops a pending run.
export function frame(fn, minMs = 0) {
  let id = 0, timer = 0, last = 0;
  const run = () => { id = 0; last = performance.now(); fn(); };
  const call = () => {
    if (id || timer) return;
    const wait = last + minMs - performance.now();
    if (wait > 0) timer = setTimeout(() => { timer = 0; id = requestAnimationFrame(run); }, wait);
    else id = requestAnimationFrame(run);
  };
  call.cancel = () => {
    if (id) cancelAnimationFrame(id);
    clearTimeout(timer);
    id = timer = 0;
  };
  return call;
}

// note is a muted placeholder line, e.g. "not available on this node".
export function note(text, attrs = {}) {
  return h('p', {class: 'note', ...attrs}, text);
}
