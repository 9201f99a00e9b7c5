// A stacked area chart of the pool's size by state over the last hour,
// drawn as SVG by hand.

import {STATES, h, svg, replace, clock, badge} from './util.js';

const HOUR = 3600e3;
const HEIGHT = 200;
const M = {left: 34, right: 10, top: 10, bottom: 22};

// niceStep is a round step for about n gridlines up to max.
function niceStep(max, n = 4) {
  const raw = Math.max(1, max / n);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

const total = c => STATES.reduce((s, k) => s + (c[k] || 0), 0);

// Chart draws into el; draw(points) redraws with [{t, counts}] oldest first.
export class Chart {
  constructor(el) {
    this.el = el;
    this.points = [];
    this.interval = 10;
    this.tip = h('div', {id: 'chart-tip', class: 'chart-tip', hidden: true});
    this.plot = h('div', {class: 'chart-plot'});
    el.append(this.plot, this.tip,
      h('div', {class: 'legend'}, STATES.map(s => h('span', {class: 'key', 'data-state': s},
        h('span', {class: 'swatch', 'data-state': s}), s.replace('_', ' ')))));
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(el);
  }

  destroy() { this.resize.disconnect(); }

  // set takes the points to draw and the seconds between them.
  set(points, interval) {
    this.points = points;
    this.interval = interval || 10;
    this.draw();
  }

  draw() {
    const width = Math.max(320, Math.floor(this.el.clientWidth));
    if (width === this.drawnWidth && this.points === this.drawnPoints && this.points.length === this.drawnLength) return;
    this.drawnWidth = width;
    this.drawnPoints = this.points;
    this.drawnLength = this.points.length;

    const pts = this.points;
    const right = pts.length ? Math.max(pts.at(-1).t, Date.now() - 5e3) : Date.now();
    const left = right - HOUR;
    const shown = pts.filter(p => p.t >= left - this.interval * 1000);
    const max = Math.max(1, ...shown.map(p => total(p.counts)));
    const step = niceStep(max);
    const top = Math.ceil(max / step) * step;
    const iw = width - M.left - M.right, ih = HEIGHT - M.top - M.bottom;
    const x = t => M.left + ((t - left) / HOUR) * iw;
    const y = v => M.top + ih - (v / top) * ih;
    this.geom = {x, left, right, iw, shown};

    const root = svg('svg', {
      width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, class: 'chart',
      role: 'img', 'aria-label': 'Pool size by state over the last hour',
    });

    // Gridlines and the y axis.
    for (let v = 0; v <= top; v += step) {
      root.append(
        svg('line', {class: 'grid', x1: M.left, x2: width - M.right, y1: y(v), y2: y(v)}),
        svg('text', {class: 'axis', x: M.left - 6, y: y(v) + 4, 'text-anchor': 'end'}, String(v)));
    }
    // The time axis: every 10 minutes.
    const tick = 10 * 60e3;
    for (let t = Math.ceil(left / tick) * tick; t <= right; t += tick) {
      root.append(svg('text', {class: 'axis', x: x(t), y: HEIGHT - 6, 'text-anchor': 'middle'},
        clock(new Date(t)).slice(0, 5)));
    }

    // Runs of points without a gap longer than three intervals.
    const runs = [];
    for (const p of shown) {
      const run = runs.at(-1);
      if (run && p.t - run.at(-1).t <= 3 * this.interval * 1000) run.push(p);
      else runs.push([p]);
    }
    for (const run of runs) {
      const base = run.map(() => 0);
      for (const s of STATES) {
        const upper = run.map((p, i) => base[i] + (p.counts[s] || 0));
        if (upper.some((u, i) => u !== base[i])) {
          let d = '';
          run.forEach((p, i) => { d += `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(upper[i]).toFixed(1)}`; });
          if (run.length === 1) d += `L${(x(run[0].t) + 2).toFixed(1)},${y(upper[0]).toFixed(1)}`;
          for (let i = run.length - 1; i >= 0; i--) d += `L${x(run[i].t).toFixed(1)},${y(base[i]).toFixed(1)}`;
          if (run.length === 1) d += `L${(x(run[0].t) + 2).toFixed(1)},${y(base[0]).toFixed(1)}`;
          root.append(svg('path', {class: 'area', 'data-state': s, d: d + 'Z'}));
        }
        upper.forEach((u, i) => { base[i] = u; });
      }
    }
    if (!shown.length) {
      root.append(svg('text', {class: 'axis', x: M.left + iw / 2, y: M.top + ih / 2, 'text-anchor': 'middle'},
        'No samples yet'));
    }

    this.cursor = svg('line', {class: 'cursor', y1: M.top, y2: M.top + ih, visibility: 'hidden'});
    const hit = svg('rect', {class: 'hit', x: M.left, y: M.top, width: iw, height: ih});
    hit.addEventListener('mousemove', ev => this.hover(ev));
    hit.addEventListener('mouseleave', () => this.unhover());
    root.append(this.cursor, hit);
    replace(this.plot, root);
  }

  hover(ev) {
    const {x, shown} = this.geom;
    if (!shown.length) return;
    const bounds = this.plot.getBoundingClientRect();
    const px = ev.clientX - bounds.left;
    let best = shown[0];
    for (const p of shown) if (Math.abs(x(p.t) - px) < Math.abs(x(best.t) - px)) best = p;
    const bx = x(best.t);
    this.cursor.setAttribute('x1', bx);
    this.cursor.setAttribute('x2', bx);
    this.cursor.setAttribute('visibility', 'visible');
    // Listed top down, as the layers are stacked.
    replace(this.tip,
      h('div', {class: 'tip-time'}, clock(new Date(best.t)), ' · ', String(total(best.counts)), ' miners'),
      STATES.filter(s => best.counts[s]).reverse().map(s => h('div', {}, badge(s), ' ', String(best.counts[s]))));
    this.tip.hidden = false;
    const left = Math.min(bx + 12, bounds.width - this.tip.offsetWidth - 4);
    this.tip.style.left = `${Math.max(0, bx > bounds.width / 2 ? bx - this.tip.offsetWidth - 12 : left)}px`;
  }

  unhover() {
    this.tip.hidden = true;
    this.cursor?.setAttribute('visibility', 'hidden');
  }
}
