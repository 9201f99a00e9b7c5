// The node itself: who it is, its peers, and its gossip by topic and
// validation outcome, as rates from successive overview counters.

import {on, get, store, gossipRates, unavailable} from './api.js';
import {h, replace, badge, peerLink, peerText, duration, num, rate, note, frame} from './util.js';

const PEERS_MS = 10e3;
const OUTCOMES = [['accept', 'Accepted'], ['reject', 'Rejected'], ['ignore', 'Ignored'],
  ['throttled', 'Throttled'], ['published', 'Published']];

export function mount(view) {
  const info = h('dl', {id: 'node-info', class: 'facts'});
  const gossipBody = h('tbody', {});
  const gossipNote = note('');
  const gossipTable = h('table', {id: 'gossip-table', class: 'table'},
    h('thead', {}, h('tr', {}, h('th', {}, 'Topic'), OUTCOMES.map(([, label]) => h('th', {class: 'num'}, label)))),
    gossipBody);
  const peersBody = h('tbody', {});
  const peersCount = h('span', {id: 'peers-count', class: 'stat'});
  const peersNote = h('p', {id: 'peers-status', class: 'note'}, 'Loading peers…');
  const peersTable = h('table', {id: 'peers-table', class: 'table', hidden: true},
    h('thead', {}, h('tr', {}, ['Peer', 'Direction', 'Latency', 'Agent', 'Routing table', 'Addresses']
      .map((t, i) => h('th', {class: i === 2 ? 'num' : ''}, t)))),
    peersBody);

  view.append(
    h('section', {class: 'panel'}, h('div', {class: 'panel-head'}, h('h1', {}, 'Node')), info),
    h('section', {class: 'panel'},
      h('div', {class: 'panel-head'}, h('h2', {}, 'Gossip'), h('span', {class: 'note'}, 'messages per second over ~10 s, totals below')),
      h('div', {class: 'table-wrap'}, gossipTable), gossipNote),
    h('section', {class: 'panel'},
      h('div', {class: 'panel-head'}, h('h2', {}, 'Peers'), peersCount),
      peersNote, h('div', {class: 'table-wrap'}, peersTable)));

  let infoAt = 0;   // when the uptime below was read, for its ticking
  let uptime = 0;
  let drawnKey = ''; // what is drawn, less the uptime: redrawn only on a change, so a selection stays
  function drawInfo() {
    const n = store.node;
    if (!n) {
      replace(info, note(store.missing.has('node') ? 'Not available on this node.' : 'Loading…'));
      drawnKey = '';
      return;
    }
    infoAt = Date.now();
    uptime = n.uptime_seconds || 0;
    const key = JSON.stringify({...n, uptime_seconds: 0});
    if (key === drawnKey) return;
    drawnKey = key;
    const fact = (label, id, ...value) => [h('dt', {}, label), h('dd', {id}, ...value)];
    replace(info,
      fact('Peer id', 'node-peer-id', h('span', {class: 'mono wrap'}, n.peer_id)),
      fact('Roles', 'node-roles', (n.roles || []).map(r => h('span', {class: 'role', 'data-role': r}, r))),
      n.state ? fact('Own state', 'node-state', badge(n.state), n.generation != null ? ` generation ${n.generation}` : '') : null,
      fact('Network', 'node-network', n.network || '—'),
      fact('Version', 'node-version', h('span', {class: 'mono'}, n.version || '—')),
      fact('Uptime', 'node-uptime', duration(n.uptime_seconds || 0)),
      fact('Peers', 'node-peers', num(n.peers)),
      fact('Routing table', 'node-rt-size', `${num(n.routing_table_size)} peers`),
      fact('DHT mode', 'node-dht-mode', n.dht_mode || '—'),
      fact('Addresses', 'node-addrs', (n.addrs || []).length
        ? h('ul', {class: 'addrs mono'}, n.addrs.map(a => h('li', {}, a))) : '—'));
  }

  function tickUptime() {
    const el = view.querySelector('#node-uptime');
    if (el) el.textContent = duration(uptime + (Date.now() - infoAt) / 1000);
  }

  function drawGossip() {
    const o = store.overview;
    const gossip = o?.gossip || [];
    const rates = gossipRates();
    replace(gossipBody, gossip.map(g => {
      const r = rates?.get(g.topic);
      return h('tr', {dataset: {topic: g.topic}}, h('td', {class: 'mono'}, g.topic),
        OUTCOMES.map(([k]) => h('td', {class: 'num', 'data-outcome': k},
          h('div', {class: 'rate', 'data-rate': r?.[k] ?? ''}, r?.[k] == null ? '—' : `${rate(r[k])}/s`),
          h('div', {class: 'total'}, num(g[k])))));
    }));
    gossipTable.hidden = !gossip.length;
    gossipNote.hidden = gossip.length > 0 && !!rates;
    gossipNote.textContent = store.missing.has('overview') ? 'Not available on this node.'
      : !o ? 'Loading…' : !gossip.length ? 'No gossip topic yet.' : 'Rates come with the next overview.';
  }

  let peersTimer = 0;
  let dead = false;
  async function loadPeers() {
    try {
      const list = await get('v1/peers');
      if (dead) return;
      drawPeers(Array.isArray(list) ? list : []);
    } catch (err) {
      if (dead) return;
      peersNote.hidden = false;
      peersNote.textContent = unavailable(err);
      if (err.missing) return;
    }
    peersTimer = setTimeout(loadPeers, PEERS_MS);
  }

  function drawPeers(list) {
    list.sort((a, b) => (a.peer_id < b.peer_id ? -1 : 1));
    peersCount.textContent = `${num(list.length)} connected`;
    peersCount.dataset.count = list.length;
    replace(peersBody, list.map(p => {
      const addrs = p.addrs || [];
      return h('tr', {dataset: {peer: p.peer_id}},
        h('td', {}, store.pool.has(p.peer_id) ? peerLink(p.peer_id) : peerText(p.peer_id)),
        h('td', {}, p.direction || '—'),
        h('td', {class: 'num'}, p.latency_ms ? `${num(p.latency_ms, 1)} ms` : '—'),
        h('td', {class: 'mono small'}, p.agent_version || '—'),
        h('td', {}, p.in_routing_table ? 'yes' : 'no'),
        h('td', {class: 'mono small', title: addrs.join('\n')},
          addrs[0] || '—', addrs.length > 1 ? h('span', {class: 'note'}, ` +${addrs.length - 1}`) : null));
    }));
    peersTable.hidden = !list.length;
    peersNote.hidden = list.length > 0;
    peersNote.textContent = 'No peer connected.';
  }

  const info$ = frame(drawInfo, 1000);
  const gossip$ = frame(drawGossip, 500);
  const offs = [
    on('node', info$),
    on('overview', gossip$),
    on('missing', () => { info$(); gossip$(); }),
  ];
  const ticker = setInterval(tickUptime, 1000);
  drawInfo();
  drawGossip();
  loadPeers();
  return () => {
    dead = true;
    clearTimeout(peersTimer);
    clearInterval(ticker);
    offs.forEach(off => off());
    info$.cancel();
    gossip$.cancel();
  };
}
