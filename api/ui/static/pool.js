// The pool page: the chart of the pool over the last hour, and every known
// miner in a table that filters, sorts and pages.

import {on, store, countsFromPool} from './api.js';
import {STATES, stateRank, h, svg, replace, badge, peerLink, relTime, parseTime, frame, num} from './util.js';
import {Chart} from './chart.js';

const PAGE = 50;

// What the table shows; kept across visits to other pages.
const ui = {state: '', q: '', sort: 'state', dir: 1, page: 0};

// The columns that sort, with their first direction (1 up, -1 down).
const sorts = {
  peer: {dir: 1, key: m => m.peer_id},
  state: {dir: 1, key: m => stateRank(m.state)},
  generation: {dir: -1, key: m => m.generation || 0},
  oracles: {dir: -1, key: m => (m.oracles || []).length},
  reputation: {dir: -1, key: m => m.reputation || 0},
  last_seen: {dir: -1, key: m => Date.parse(m.last_seen) || 0},
};

export function mount(view) {
  const total = h('span', {id: 'pool-total', class: 'big'}, '0');
  const chartBox = h('figure', {id: 'pool-chart', class: 'chart-box'});
  const chartNote = h('p', {class: 'note', id: 'pool-chart-note', hidden: true});
  const chips = h('div', {id: 'state-filter', class: 'chips', role: 'group', 'aria-label': 'Filter by state'});
  const search = h('input', {
    id: 'pool-search', type: 'search', placeholder: 'Filter by peer id or model', value: ui.q,
    'aria-label': 'Filter by peer id or model', spellcheck: 'false',
  });
  const head = h('tr', {}, [
    ['peer', 'Miner'], ['state', 'State'], ['generation', 'Gen'], ['oracles', 'Oracles'],
    ['reputation', 'Reputation'], [null, 'Models'], ['last_seen', 'Last seen'],
  ].map(([key, label]) => key
    ? h('th', {'data-sort': key, class: key === 'peer' || key === 'state' ? '' : 'num'},
      h('button', {type: 'button', class: 'sort'}, label))
    : h('th', {}, label)));
  const body = h('tbody', {});
  const table = h('table', {id: 'pool-table', class: 'table'}, h('thead', {}, head), body);
  const shown = h('span', {id: 'pool-shown'});
  const prev = h('button', {id: 'pool-prev', type: 'button'}, '‹ Prev');
  const next = h('button', {id: 'pool-next', type: 'button'}, 'Next ›');
  const pageLabel = h('span', {id: 'pool-page'});
  const status = h('p', {id: 'pool-status', class: 'note'}, 'Loading the pool…');

  view.append(
    h('section', {class: 'panel'},
      h('div', {class: 'panel-head'},
        h('h1', {}, 'Ephemeral pool'),
        h('span', {class: 'stat'}, total, ' miners known')),
      chartBox, chartNote),
    h('section', {class: 'panel'},
      h('div', {class: 'toolbar'}, chips, search),
      status,
      h('div', {class: 'table-wrap'}, table),
      h('div', {id: 'pool-pager', class: 'pager'}, shown, h('span', {class: 'spacer'}), prev, pageLabel, next)));

  const chart = new Chart(chartBox);

  // ---- events from the user ----

  chips.addEventListener('click', ev => {
    const chip = ev.target.closest('[data-filter-state]');
    if (!chip) return;
    ui.state = chip.dataset.filterState === ui.state ? '' : chip.dataset.filterState;
    ui.page = 0;
    drawTable();
  });
  search.addEventListener('input', () => { ui.q = search.value.trim().toLowerCase(); ui.page = 0; drawTable(); });
  head.addEventListener('click', ev => {
    const th = ev.target.closest('th[data-sort]');
    if (!th) return;
    const key = th.dataset.sort;
    if (ui.sort === key) ui.dir = -ui.dir;
    else { ui.sort = key; ui.dir = sorts[key].dir; }
    ui.page = 0;
    drawTable();
  });
  prev.addEventListener('click', () => { ui.page--; drawTable(); });
  next.addEventListener('click', () => { ui.page++; drawTable(); });
  // A click anywhere on a row opens the miner; the link in it does too.
  body.addEventListener('click', ev => {
    const tr = ev.target.closest('tr[data-peer]');
    if (tr && !ev.target.closest('a')) location.hash = '#/miner/' + encodeURIComponent(tr.dataset.peer);
  });

  // ---- drawing ----

  const chipEls = new Map(); // state ('' for all) → its chip, made once so focus stays
  function drawChips(counts) {
    const want = ['', ...STATES, ...Object.keys(counts).filter(s => !STATES.includes(s) && counts[s])];
    for (const s of want) {
      if (chipEls.has(s)) continue;
      const el = h('button', {type: 'button', class: 'chip', 'data-filter-state': s},
        s ? badge(s) : 'All', h('span', {class: 'count', 'data-count-state': s || 'all'}));
      chipEls.set(s, el);
      chips.append(el);
    }
    for (const [s, el] of chipEls) {
      const n = s ? counts[s] || 0 : store.pool.size;
      el.setAttribute('aria-pressed', String(ui.state === s));
      el.lastChild.textContent = num(n);
      el.dataset.count = n;
    }
  }

  function matches(m) {
    if (ui.state && m.state !== ui.state) return false;
    if (!ui.q) return true;
    return m.peer_id.toLowerCase().includes(ui.q) || (m.models || []).some(x => x.toLowerCase().includes(ui.q));
  }

  function drawTable() {
    const counts = countsFromPool();
    total.textContent = num(store.pool.size);
    total.dataset.count = store.pool.size;
    drawChips(counts);

    const {key} = sorts[ui.sort];
    const list = [...store.pool.values()].filter(matches);
    list.sort((a, b) => {
      const ka = key(a), kb = key(b);
      const c = ka < kb ? -1 : ka > kb ? 1 : 0;
      return c * ui.dir || (a.peer_id < b.peer_id ? -1 : 1);
    });
    const pages = Math.max(1, Math.ceil(list.length / PAGE));
    ui.page = Math.min(Math.max(0, ui.page), pages - 1);
    const from = ui.page * PAGE;
    const rows = list.slice(from, from + PAGE);

    for (const th of head.querySelectorAll('th[data-sort]')) {
      if (th.dataset.sort === ui.sort) th.setAttribute('aria-sort', ui.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
    replace(body, rows.map(row));
    table.dataset.loaded = String(store.poolLoaded);
    status.hidden = store.poolLoaded && list.length > 0;
    status.textContent = !store.poolLoaded
      ? (store.missing.has('pool') ? 'The pool is not available on this node.' : 'Loading the pool…')
      : store.pool.size ? 'No miner matches the filter.' : 'No miner known yet.';
    shown.textContent = list.length === store.pool.size
      ? `${num(list.length)} miners` : `${num(list.length)} of ${num(store.pool.size)} miners match`;
    pageLabel.textContent = list.length ? `${from + 1}–${from + rows.length} of ${num(list.length)}` : '';
    prev.disabled = ui.page === 0;
    next.disabled = ui.page >= pages - 1;
  }

  function row(m) {
    const oracles = m.oracles || [];
    const rep = Math.max(0, Math.min(1, m.reputation || 0));
    return h('tr', {
      class: 'clickable',
      dataset: {peer: m.peer_id, state: m.state, generation: m.generation ?? 0},
    },
    h('td', {}, peerLink(m.peer_id)),
    h('td', {}, badge(m.state)),
    h('td', {class: 'num'}, num(m.generation)),
    h('td', {class: 'num', title: oracles.length ? oracles.join('\n') : 'no attestation', 'data-oracles': oracles.length},
      String(oracles.length)),
    h('td', {class: 'num'}, h('span', {class: 'rep'},
      svg('svg', {width: 40, height: 6, class: 'bar', 'aria-hidden': 'true'},
        svg('rect', {class: 'bar-bg', width: 40, height: 6, rx: 3}),
        svg('rect', {class: 'bar-fg', width: (40 * rep).toFixed(1), height: 6, rx: 3})),
      num(m.reputation, 2))),
    h('td', {class: 'models'}, (m.models || []).join(', ') || '—'),
    h('td', {}, relTime(parseTime(m.last_seen))));
  }

  function drawChart() {
    const pts = store.historyNow ? store.history.concat([store.historyNow]) : store.history.slice();
    chart.set(pts, store.interval);
    const missing = store.missing.has('history');
    chartNote.hidden = !missing;
    chartNote.textContent = missing ? 'This node keeps no history: the chart starts now.' : '';
  }

  const table$ = frame(drawTable, 250);
  const chart$ = frame(drawChart);
  const offs = [
    on('pool', table$),
    on('history', chart$),
    on('missing', () => { table$(); chart$(); }),
  ];
  drawTable();
  drawChart();
  return () => {
    offs.forEach(off => off());
    table$.cancel();
    chart$.cancel();
    chart.destroy();
  };
}
