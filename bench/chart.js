/// <reference types="node" />
/**
 * The benchmark chart: a hand-written SVG (no chart library) of a results document from
 * bench/run.js, one horizontal bar per system in each panel:
 *   (a) fan-out deliveries/s at the highest rate with 0 lost, with Switchboard's ratio to each
 *       baseline; (c) RSS per idle connection; (d) resume storm, time until all caught up;
 *   (e) heartbeat CPU scaled to the target connection count.
 * `node bench/run.js --chart-only <results.json> [--chart-out file.svg]` redraws it.
 */

/** @type {Record<string, string>} */
const NAMES = {
  'switchboard-uws': 'Switchboard (uws)',
  'switchboard-ws': 'Switchboard (ws)',
  switchboard: 'Switchboard',
  tutorial: 'tutorial (ws + ioredis)',
  socketio: 'Socket.IO 4 + Redis adapter',
};

/** @type {Record<string, string>} */
const COLORS = {
  'switchboard-uws': '#1f6feb',
  'switchboard-ws': '#58a6ff',
  switchboard: '#1f6feb',
  tutorial: '#d29922',
  socketio: '#8b949e',
};

/** @type {Record<string, string>} */
const SHORT = {
  'switchboard-uws': 'Switchboard (uws)',
  'switchboard-ws': 'Switchboard (ws)',
  switchboard: 'Switchboard',
  tutorial: 'tutorial',
  socketio: 'Socket.IO',
};

/** A system's name for charts. @param {string} name */
export function displayName(name) {
  return NAMES[name] ?? name;
}

/** A system's short name, for table columns. @param {string} name */
export function shortName(name) {
  return SHORT[name] ?? name;
}

/** @param {unknown} v @param {string} path @returns {unknown} */
function get(v, path) {
  let cur = v;
  for (const k of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = /** @type {Record<string, unknown>} */ (cur)[k];
  }
  return cur;
}

/** A string or number field as text, else `fallback`. @param {unknown} v @param {string} fallback */
function text(v, fallback) {
  return typeof v === 'string' || typeof v === 'number' ? String(v) : fallback;
}

/** @param {string} s */
function esc(s) {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** @param {number} x */
function num(x) {
  if (x >= 100) return Math.round(x).toLocaleString('en-US');
  if (x >= 10) return String(Math.round(x * 10) / 10);
  return String(Math.round(x * 100) / 100);
}

/**
 * @typedef {{ title: string, unit: string, lower: boolean, path: string, scale?: number,
 *   ratios?: boolean }} Panel
 */

/** @type {Record<string, Panel>} */
const PANELS = {
  a: {
    title: '(a) fan-out: deliveries/s at the highest publish rate with 0 lost',
    unit: '/s',
    lower: false,
    path: 'best.deliveredPerSec',
    ratios: true,
  },
  c: {
    title: '(c) RSS per idle connection, KiB (lower is better)',
    unit: ' KiB',
    lower: true,
    path: 'memory.perConnectionKiB',
  },
  d: {
    title: '(d) resume storm: seconds until every client caught up (lower is better)',
    unit: ' s',
    lower: true,
    path: 'storm.allCaughtUpMs',
    scale: 1 / 1000,
  },
  e: {
    title: '(e) heartbeat CPU, % of one core, scaled to the target connections (lower is better)',
    unit: '%',
    lower: true,
    path: 'projectedCpuPercentAtTarget',
  },
};

/** @param {string[]} systems */
function title(systems) {
  const baselines = [];
  if (systems.includes('tutorial')) baselines.push('the tutorial design');
  if (systems.includes('socketio')) baselines.push('Socket.IO');
  return baselines.length === 0
    ? 'Switchboard benchmark'
    : `Switchboard vs ${baselines.join(' and ')}`;
}

/**
 * The chart of a results document, as an SVG string.
 * @param {Record<string, unknown>} doc
 */
export function renderChart(doc) {
  const results = /** @type {Record<string, Record<string, unknown>>} */ (
    get(doc, 'results') ?? {}
  );
  const order = ['switchboard-uws', 'switchboard-ws', 'switchboard', 'tutorial', 'socketio'];
  /** @type {string[]} */
  const systems = [];
  for (const bySystem of Object.values(results))
    for (const name of Object.keys(bySystem)) if (!systems.includes(name)) systems.push(name);
  systems.sort((x, y) => (order.indexOf(x) + 1 || 99) - (order.indexOf(y) + 1 || 99));

  const W = 900;
  const LABEL_W = 210;
  const BAR_MAX = 420;
  const ROW_H = 26;
  /** @type {string[]} */
  const parts = [];
  let y = 20;
  const started = text(get(doc, 'startedAt'), '').slice(0, 16).replace('T', ' ');
  const quick = get(doc, 'quick') === true ? ' (--quick: small sizes, not comparable)' : '';
  const nproc = get(doc, 'machine.nproc');
  const node = get(doc, 'machine.node');
  parts.push(`<text x="10" y="${y + 6}" class="h1">${esc(title(systems) + quick)}</text>`);
  y += 24;
  parts.push(
    `<text x="10" y="${y}" class="note">${esc(`run ${started} UTC · ${text(nproc, '?')} cores · Node ${text(node, '?')} · server on one core, load generator on the other · bench/run.js`)}</text>`,
  );
  y += 18;

  for (const [scen, panel] of Object.entries(PANELS)) {
    const bySystem = results[scen];
    if (bySystem === undefined) continue;
    /** @type {{name: string, value: number | undefined, why: string | undefined}[]} */
    const bars = systems
      .filter((name) => bySystem[name] !== undefined)
      .map((name) => {
        const r = bySystem[name];
        const raw = get(r, panel.path);
        const value = typeof raw === 'number' ? raw * (panel.scale ?? 1) : undefined;
        const why =
          typeof get(r, 'skipped') === 'string'
            ? 'skipped'
            : typeof get(r, 'na') === 'string'
              ? String(get(r, 'na'))
              : value === undefined && typeof get(r, 'storm.lost') === 'number'
                ? `not every client caught up (${num(Number(get(r, 'storm.lost')))} messages lost)`
                : value === undefined
                  ? 'no figure'
                  : undefined;
        return { name, value, why };
      });
    const max = Math.max(0, ...bars.map((b) => b.value ?? 0));
    y += 18;
    parts.push(`<text x="10" y="${y}" class="h2">${esc(panel.title)}</text>`);
    if (scen === 'e') {
      const runs = Object.values(bySystem);
      const target = runs
        .map((r) => get(r, 'targetConnections'))
        .find((v) => typeof v === 'number');
      const held = runs.map((r) => get(r, 'connections')).filter((v) => typeof v === 'number');
      const ping = runs.map((r) => get(r, 'pingIntervalMs')).find((v) => typeof v === 'number');
      const fdBound = runs.some((r) => /^file descriptors/.test(text(get(r, 'limitedBy'), '')));
      const note =
        `target ${num(Number(target ?? 0))} connections, held ${held.map((h) => num(Number(h))).join(' / ')}` +
        `${fdBound ? ' (capped by the fd limit)' : ''}; heartbeat every ${num(Number(ping ?? 0) / 1000)} s; ` +
        'CPU over two whole ping intervals, scaled linearly to the target';
      y += 16;
      parts.push(`<text x="10" y="${y}" class="note">${esc(note)}</text>`);
    }
    y += 8;
    for (const bar of bars) {
      y += ROW_H;
      parts.push(
        `<text x="${LABEL_W - 8}" y="${y - 8}" class="label" text-anchor="end">${esc(displayName(bar.name))}</text>`,
      );
      if (bar.value === undefined) {
        parts.push(
          `<text x="${LABEL_W + 4}" y="${y - 8}" class="muted">${esc(bar.why ?? '')}</text>`,
        );
        continue;
      }
      const w = max === 0 ? 0 : Math.max(1, (bar.value / max) * BAR_MAX);
      parts.push(
        `<rect x="${LABEL_W}" y="${y - ROW_H + 6}" width="${w.toFixed(1)}" height="${ROW_H - 10}" fill="${COLORS[bar.name] ?? '#6e7781'}" rx="2"/>`,
      );
      let text = `${num(bar.value)}${panel.unit}`;
      if (panel.ratios === true && bar.name.startsWith('switchboard')) {
        const ratios = bars
          .filter((b) => !b.name.startsWith('switchboard') && b.value !== undefined && b.value > 0)
          .map((b) => {
            const r = panel.lower
              ? (b.value ?? 0) / (bar.value ?? 1)
              : (bar.value ?? 0) / (b.value ?? 1);
            return `${num(r)}× ${shortName(b.name)}`;
          });
        if (ratios.length > 0) text += `  (${ratios.join(', ')})`;
      }
      parts.push(`<text x="${LABEL_W + w + 6}" y="${y - 8}" class="value">${esc(text)}</text>`);
    }
    y += 6;
  }
  y += 16;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="-apple-system, Segoe UI, Helvetica, Arial, sans-serif">`,
    '<style>.h1{font-size:16px;font-weight:600;fill:#1f2328}.h2{font-size:13px;font-weight:600;fill:#1f2328}' +
      '.label{font-size:12px;fill:#1f2328}.value{font-size:12px;fill:#1f2328}.muted{font-size:12px;fill:#6e7781;font-style:italic}' +
      '.note{font-size:11px;fill:#6e7781}</style>',
    `<rect width="${W}" height="${y}" fill="#ffffff"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
