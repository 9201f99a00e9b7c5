// A miner's lifecycle: its record, a strip of its states over time, and a
// timeline of its transitions with the attestations, grants and releases
// behind each; live from the event stream.

import {on, get, store, mergeEvents, unavailable} from './api.js';
import {h, svg, replace, badge, peerText, shortSession, parseTime, clock, stamp, duration, relTime, num, frame} from './util.js';

export function mount(view, id) {
  const state = h('span', {id: 'miner-state'});
  const facts = h('dl', {id: 'miner-facts', class: 'facts'});
  const strip = h('div', {id: 'miner-strip', class: 'strip'});
  const timeline = h('ol', {id: 'miner-timeline', class: 'timeline'});
  const status = h('p', {id: 'miner-status', class: 'note'}, 'Loading…');

  view.append(
    h('p', {class: 'crumbs'}, h('a', {href: '#/pool'}, '← Pool')),
    h('section', {class: 'panel'},
      h('div', {class: 'panel-head'}, h('h1', {}, 'Miner'), state),
      h('p', {id: 'miner-id', class: 'mono wrap'}, id),
      facts),
    h('section', {class: 'panel'},
      h('div', {class: 'panel-head'}, h('h2', {}, 'Lifecycle'), h('span', {class: 'note'}, 'newest first')),
      strip, status, timeline));

  let miner = store.pool.get(id) || null;
  let events = ownEvents();
  let loaded = false;
  let why = '';

  function ownEvents() {
    return store.transitions.filter(e => e.miner === id);
  }

  let dead = false;
  let retry = 0;
  const load = () => get(`v1/miners/${encodeURIComponent(id)}`).then(body => {
    if (dead) return;
    if (body.miner) miner = body.miner;
    events = mergeEvents(body.events || [], events);
    loaded = true;
    why = '';
    draw();
  }, err => {
    if (dead) return;
    // The node did not answer: ask again until it does.
    if (err.status === 0 || err.status >= 502) retry = setTimeout(load, 5000);
    why = err.endpointMissing
      ? store.missing.has('events') ? 'This node keeps no lifecycle history.'
        : 'This node keeps no lifecycle history: the timeline shows the events seen since the dashboard opened.'
      : err.status === 404 ? 'This node does not know this miner (yet).' : unavailable(err);
    loaded = true;
    draw();
  });
  load();

  function drawFacts() {
    replace(state, miner ? badge(miner.state) : '');
    state.dataset.state = miner?.state || '';
    if (!miner) { replace(facts); return; }
    const oracles = miner.oracles || [];
    const fact = (label, ...value) => [h('dt', {}, label), h('dd', {}, ...value)];
    replace(facts,
      fact('Generation', h('span', {id: 'miner-generation'}, num(miner.generation))),
      fact('Reputation', num(miner.reputation, 3)),
      fact('Models', (miner.models || []).join(', ') || '—'),
      fact('Last seen', relTime(parseTime(miner.last_seen))),
      fact('Record seq', num(miner.seq)),
      fact(`Attested by ${oracles.length} oracle${oracles.length === 1 ? '' : 's'}`,
        oracles.length ? h('span', {class: 'ids'}, oracles.map(o => peerText(o))) : '—'));
  }

  function draw() {
    drawFacts();
    const groups = phases(events);
    drawStrip(strip, groups);
    status.hidden = loaded && !why && events.length > 0;
    status.textContent = !loaded ? 'Loading…' : why || (events.length ? '' : 'No event seen for this miner yet.');
    replace(timeline, groups.slice().reverse().map(phaseItem));
  }

  const draw$ = frame(draw, 200);
  const offs = [
    on('transition', e => {
      if (e === null) { events = mergeEvents(events, ownEvents()); draw$(); }
      else if (e.miner === id) { events = mergeEvents(events, [e]); draw$(); }
    }),
    on('pool', pid => {
      if (pid !== id && pid !== null) return;
      miner = store.pool.get(id) || miner;
      draw$();
    }),
  ];
  const ticker = setInterval(draw$, 10e3); // the ongoing phase's length
  draw();
  return () => {
    dead = true;
    clearTimeout(retry);
    offs.forEach(off => off());
    clearInterval(ticker);
    draw$.cancel();
  };
}

// phases groups events by the state transition they follow: each phase is a
// state event and what happened until the next one.
function phases(events) {
  const out = [];
  let cur = {head: null, events: []};
  for (const e of events) {
    if (e.kind === 'state') {
      if (cur.head || cur.events.length) out.push(cur);
      cur = {head: e, events: []};
    } else {
      cur.events.push(e);
    }
  }
  if (cur.head || cur.events.length) out.push(cur);
  for (let i = 0; i < out.length; i++) {
    const p = out[i];
    p.start = parseTime(p.head?.time ?? p.events[0]?.time);
    p.end = i + 1 < out.length ? parseTime(out[i + 1].head?.time) : null; // null: still in it
  }
  return out;
}

function phaseItem(p) {
  const e = p.head;
  const now = new Date();
  const lasted = p.start ? ((p.end || now) - p.start) / 1000 : null;
  const head = e
    ? h('div', {class: 'phase-head'},
      h('time', {datetime: e.time, title: stamp(p.start)}, clock(p.start)),
      h('span', {class: 'arrow'}, e.from ? [badge(e.from), ' → '] : null, badge(e.state)),
      e.generation != null ? h('span', {class: 'gen'}, `generation ${e.generation}`) : null,
      lasted != null ? h('span', {class: 'lasted'}, p.end ? `for ${duration(lasted)}` : `now, for ${duration(lasted)}`) : null)
    : h('div', {class: 'phase-head'}, h('span', {class: 'note'}, 'Before the first state this node saw'));
  return h('li', {
    class: 'phase',
    dataset: {kind: 'state', state: e?.state || '', generation: e?.generation ?? '', current: String(!p.end)},
  }, head, p.events.length ? h('ul', {class: 'phase-events'}, p.events.map(detail)) : null);
}

// detail is one attestation, grant, release or piece of evidence.
function detail(e) {
  const t = parseTime(e.time);
  const when = h('time', {datetime: e.time, title: stamp(t)}, clock(t));
  const data = {kind: e.kind};
  let body;
  switch (e.kind) {
    case 'attestation':
      Object.assign(data, {oracle: e.oracle || '', pass: String(!!e.pass)});
      body = [h('span', {class: e.pass ? 'pass' : 'fail'}, e.pass ? '✓ passed' : '✗ failed'),
        ' attestation by oracle ', peerText(e.oracle),
        e.score != null ? h('span', {class: 'score'}, ` score ${num(e.score, 2)}`) : null,
        e.generation != null ? ` · gen ${e.generation}` : null];
      break;
    case 'grant': {
      Object.assign(data, {router: e.router || '', session: e.session || ''});
      const end = parseTime(e.lease_end);
      body = ['Granted to router ', peerText(e.router),
        e.session ? [' · session ', h('span', {class: 'mono', title: e.session}, shortSession(e.session))] : null,
        end ? [' · lease until ', h('time', {datetime: e.lease_end, title: stamp(end)}, clock(end))] : null];
      break;
    }
    case 'release':
      Object.assign(data, {outcome: e.outcome || ''});
      body = ['Released', e.outcome ? [' · ', h('span', {class: 'outcome', 'data-outcome': e.outcome}, e.outcome)] : null,
        e.router ? [' · router ', peerText(e.router)] : null,
        e.session ? [' · session ', h('span', {class: 'mono', title: e.session}, shortSession(e.session))] : null];
      break;
    case 'evidence':
      body = [h('span', {class: 'fail'}, '⚠ evidence'), ' ', e.detail || ''];
      break;
    default:
      body = [e.kind || 'event', e.detail ? `: ${e.detail}` : ''];
  }
  return h('li', {dataset: data}, when, ' ', body);
}

// drawStrip draws the states one after the other, as long as each lasted.
function drawStrip(el, groups) {
  const spans = groups.filter(p => p.head && p.start);
  if (!spans.length) { replace(el); return; }
  const first = spans[0].start.getTime();
  const last = Date.now();
  const total = Math.max(1, last - first);
  const x = t => ((t - first) / total) * 1000;
  const bar = svg('svg', {viewBox: '0 0 1000 14', preserveAspectRatio: 'none', width: '100%', height: 14, class: 'strip-bar'},
    spans.map(p => {
      const x0 = x(p.start.getTime());
      const x1 = x((p.end || new Date(last)).getTime());
      const lasted = ((p.end || new Date(last)) - p.start) / 1000;
      return svg('rect', {class: 'area', 'data-state': p.head.state, x: x0.toFixed(2), y: 0,
        width: Math.max(0.5, x1 - x0).toFixed(2), height: 14},
      svg('title', {}, `${p.head.state} · ${clock(p.start)} · ${duration(lasted)}`));
    }));
  replace(el, bar, h('div', {class: 'strip-axis'},
    h('span', {}, clock(spans[0].start)), h('span', {}, `now · ${duration(total / 1000)} shown`)));
}
