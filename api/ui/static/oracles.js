// Oracles & routers: this node's validations and sessions, the attestations
// seen per oracle, and the latest transitions over all miners.

import {on, get, store, unavailable} from './api.js';
import {h, replace, badge, peerLink, peerText, shortSession, parseTime, relTime, clock, stamp, num, pct, note, frame} from './util.js';

const SESSIONS_MS = 5e3;
const ENDED_SHOWN = 20;
const RECENT = 30;

export function mount(view) {
  const oraclePanel = h('div', {id: 'oracle-panel'});
  const oracleBody = h('tbody', {});
  const oracleNote = note('');
  const routerPanel = h('div', {id: 'router-panel'});
  const sessionsBody = h('tbody', {});
  const sessionsNote = h('p', {id: 'sessions-status', class: 'note'}, 'Loading sessions…');
  const sessionsTable = h('table', {id: 'sessions-table', class: 'table', hidden: true},
    h('thead', {}, h('tr', {}, ['Session', 'State', 'Model', 'Redundancy', 'Miners', 'Submitted', 'Done', 'Failed',
      'Queued', 'Agreement', 'Opened', 'Ends'].map((t, i) => h('th', {class: i > 2 && i < 10 ? 'num' : ''}, t)))),
    sessionsBody);
  const sessionsMore = note('', {id: 'sessions-more', hidden: true});
  const recent = h('ol', {id: 'transitions', class: 'feed'});

  view.append(
    h('section', {class: 'panel'},
      h('div', {class: 'panel-head'}, h('h1', {}, 'Oracle')), oraclePanel),
    h('section', {class: 'panel'},
      h('div', {class: 'panel-head'}, h('h2', {}, 'Attestations by oracle')),
      h('div', {class: 'table-wrap'}, h('table', {id: 'oracle-table', class: 'table'},
        h('thead', {}, h('tr', {}, ['Oracle', 'Miners attested now', 'Attestations seen', 'Passed', 'Failed',
          'Mean score', 'Last'].map((t, i) => h('th', {class: i && i < 6 ? 'num' : ''}, t)))),
        oracleBody)),
      oracleNote),
    h('section', {class: 'panel'},
      h('div', {class: 'panel-head'}, h('h1', {}, 'Router')), routerPanel,
      h('h2', {}, 'Sessions'), sessionsNote, h('div', {class: 'table-wrap'}, sessionsTable), sessionsMore),
    h('section', {class: 'panel'},
      h('div', {class: 'panel-head'}, h('h2', {}, 'Latest transitions'), h('span', {class: 'note'}, 'all miners, newest first')),
      recent));

  function stat(id, label, value, title) {
    return h('div', {class: 'stat-card', title}, h('div', {class: 'stat-label'}, label), h('div', {class: 'stat-value', id}, value));
  }

  // completionRate is the chat completions per second between the last two
  // overviews.
  let lastCompletions = null;
  function completionRate(r, time) {
    const t = parseTime(time), prev = lastCompletions;
    lastCompletions = {n: r.completions || 0, t};
    if (!prev || !t || !prev.t || t <= prev.t) return '—';
    return num(Math.max(0, lastCompletions.n - prev.n) / ((t - prev.t) / 1000), 1);
  }

  function drawOverview() {
    const o = store.overview;
    if (!o) {
      replace(oraclePanel, note(store.missing.has('overview') ? 'Not available on this node.' : 'Loading…'));
      replace(routerPanel, note(store.missing.has('overview') ? 'Not available on this node.' : 'Loading…'));
      return;
    }
    const or = o.oracle;
    replace(oraclePanel, !or ? note('This node is not an oracle.', {id: 'oracle-none'}) : h('div', {class: 'stats'},
      stat('oracle-runs', 'Validations run', num((or.validations_passed || 0) + (or.validations_failed || 0))),
      stat('oracle-passed', 'Passed', num(or.validations_passed)),
      stat('oracle-failed', 'Failed', num(or.validations_failed)),
      stat('oracle-pass-rate', 'Pass rate', pct(or.pass_rate))));
    const r = o.router;
    replace(routerPanel, !r ? note('This node is not a router.', {id: 'router-none'}) : h('div', {class: 'stats'},
      stat('router-open', 'Sessions open', num(r.sessions_open)),
      stat('router-ended', 'Sessions ended', num(r.sessions_ended)),
      stat('router-queued', 'Tasks queued', num(r.queued_tasks)),
      stat('router-done', 'Tasks done', num(r.tasks_done)),
      stat('router-failed', 'Tasks failed', num(r.tasks_failed)),
      stat('router-agreement', 'Mean agreement', r.mean_agreement == null ? '—' : num(r.mean_agreement, 3),
        'Mean agreement of the tasks several miners answered'),
      stat('router-rate', 'Completions/s', completionRate(r, o.time), 'Chat completions per second, since the last update'),
      stat('router-warm', 'Warm miners', num(r.warm_busy) + ' / ' + num(r.warm_miners),
        'Miners the chat endpoint\'s warm sessions hold: busy / held'),
      stat('router-utilisation', 'Utilisation', pct(r.utilisation), 'Busy time of warm miners over their held time'),
      stat('router-idle', 'Idle releases', num(r.idle_releases), 'Miners given back to the pool after idle_release without work')));
  }

  // Attestations per oracle: the miners each attests now (from the pool)
  // and the attestations among the transitions the dashboard holds.
  function drawOracles() {
    const by = new Map();
    const row = id => {
      if (!by.has(id)) by.set(id, {id, now: 0, seen: 0, passed: 0, failed: 0, score: 0, scored: 0, last: null});
      return by.get(id);
    };
    for (const m of store.pool.values()) for (const o of m.oracles || []) row(o).now++;
    let events = 0;
    for (const e of store.transitions) {
      if (e.kind !== 'attestation' || !e.oracle) continue;
      events++;
      const r = row(e.oracle);
      r.seen++;
      if (e.pass) r.passed++; else r.failed++;
      if (e.score != null) { r.score += e.score; r.scored++; }
      const t = parseTime(e.time);
      if (t && (!r.last || t > r.last)) r.last = t;
    }
    const self = store.node?.peer_id;
    const rows = [...by.values()].sort((a, b) => b.now - a.now || b.seen - a.seen || (a.id < b.id ? -1 : 1));
    replace(oracleBody, rows.map(r => h('tr', {dataset: {oracle: r.id}},
      h('td', {}, peerText(r.id), r.id === self ? h('span', {class: 'role'}, 'this node') : null),
      h('td', {class: 'num'}, num(r.now)),
      h('td', {class: 'num'}, num(r.seen)),
      h('td', {class: 'num'}, num(r.passed)),
      h('td', {class: 'num'}, num(r.failed)),
      h('td', {class: 'num'}, r.scored ? num(r.score / r.scored, 3) : '—'),
      h('td', {}, relTime(r.last)))));
    oracleNote.textContent = !rows.length ? 'No attestation seen yet.'
      : store.missing.has('transitions') && !events
        ? 'This node keeps no transitions: attestations are counted from when the dashboard opened.'
        : `Attestations counted over the ${num(store.transitions.length)} latest transitions the dashboard holds.`;
  }

  function drawRecent() {
    const list = store.transitions.slice(-RECENT).reverse();
    replace(recent, list.length ? list.map(feedItem)
      : h('li', {class: 'note'}, store.missing.has('transitions') && store.missing.has('events')
        ? 'Not available on this node.' : 'No transition seen yet.'));
  }

  // Sessions, on routers: fetched every few seconds while the page is open.
  let sessionsTimer = 0;
  let dead = false;
  async function loadSessions() {
    try {
      const list = await get('v1/sessions');
      if (dead) return;
      drawSessions(Array.isArray(list) ? list : []);
    } catch (err) {
      if (dead) return;
      sessionsTable.hidden = true;
      sessionsNote.hidden = false;
      sessionsNote.textContent = err.status === 404 ? 'Sessions are served by routers; this node is not one.' : unavailable(err);
      if (err.missing) return; // no need to ask again
    }
    sessionsTimer = setTimeout(loadSessions, SESSIONS_MS);
  }

  function drawSessions(list) {
    const t = s => Date.parse(s.created) || 0;
    const open = list.filter(s => s.state === 'open').sort((a, b) => t(b) - t(a));
    const ended = list.filter(s => s.state !== 'open').sort((a, b) => t(b) - t(a));
    const shown = open.concat(ended.slice(0, ENDED_SHOWN));
    replace(sessionsBody, shown.map(sessionRow));
    sessionsTable.hidden = !shown.length;
    sessionsNote.hidden = shown.length > 0;
    sessionsNote.textContent = 'No session yet.';
    sessionsMore.hidden = ended.length <= ENDED_SHOWN;
    sessionsMore.textContent = `${num(ended.length - ENDED_SHOWN)} older ended sessions not shown.`;
  }

  const overview$ = frame(drawOverview, 500);
  const oracles$ = frame(drawOracles, 1000);
  const recent$ = frame(drawRecent, 250);
  const offs = [
    on('overview', overview$),
    on('node', oracles$),
    on('pool', oracles$),
    on('transition', () => { oracles$(); recent$(); }),
    on('missing', () => { overview$(); oracles$(); recent$(); }),
  ];
  drawOverview();
  drawOracles();
  drawRecent();
  loadSessions();
  return () => {
    dead = true;
    clearTimeout(sessionsTimer);
    offs.forEach(off => off());
    [overview$, oracles$, recent$].forEach(f => f.cancel());
  };
}

function sessionRow(s) {
  const held = (s.miners || []).filter(m => m.state === 'active');
  const p = s.params || {};
  const ends = parseTime(s.ends);
  return h('tr', {dataset: {session: s.id, state: s.state}},
    h('td', {}, h('span', {class: 'mono', title: s.id}, shortSession(s.id))),
    h('td', {}, h('span', {class: 'badge', 'data-badge': s.state === 'open' ? 'available' : 'stale'}, s.state),
      s.end_reason ? h('span', {class: 'note'}, ` ${s.end_reason.replace('_', ' ')}`) : null),
    h('td', {}, p.model || 'any'),
    h('td', {class: 'num'}, num(p.redundancy)),
    h('td', {class: 'num', title: held.map(m => m.miner).join('\n') || 'none active'},
      `${num(held.length)} / ${num((s.miners || []).length)}`),
    h('td', {class: 'num'}, num(s.tasks_submitted)),
    h('td', {class: 'num'}, num(s.tasks_completed)),
    h('td', {class: 'num'}, num(s.tasks_failed)),
    h('td', {class: 'num'}, num(s.tasks_queued)),
    h('td', {class: 'num'}, s.mean_agreement == null ? '—' : num(s.mean_agreement, 3)),
    h('td', {}, relTime(parseTime(s.created))),
    h('td', {title: stamp(ends)}, s.state === 'open' && ends ? clock(ends) : '—'));
}

// feedItem is one transition in the feed of all miners.
function feedItem(e) {
  const t = parseTime(e.time);
  let what;
  switch (e.kind) {
    case 'state': what = [e.from ? [badge(e.from), ' → '] : null, badge(e.state)]; break;
    case 'attestation': what = [h('span', {class: e.pass ? 'pass' : 'fail'}, e.pass ? '✓' : '✗'),
      ' attested by ', peerText(e.oracle), e.score != null ? ` · ${num(e.score, 2)}` : '']; break;
    case 'grant': what = ['granted to router ', peerText(e.router)]; break;
    case 'release': what = ['released', e.outcome ? ` · ${e.outcome}` : '']; break;
    default: what = [e.kind, e.detail ? `: ${e.detail}` : ''];
  }
  return h('li', {dataset: {kind: e.kind, miner: e.miner}},
    h('time', {datetime: e.time, title: stamp(t)}, clock(t)), ' ', peerLink(e.miner), ' ',
    e.generation != null ? h('span', {class: 'gen'}, `gen ${e.generation}`) : null, ' ', what);
}
