/**
 * What an operator's tools read: the /metrics exposition passes `promtool check metrics`, the
 * shipped Prometheus config and alerting rules pass `promtool check config` / `check rules`, and
 * every series the Grafana dashboard and the rules query is one a live server exports (after a
 * workload, on Redis, so that every family has samples).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { WebSocket } from 'ws';
import { ErrorCode } from '@switchboard/protocol';
import {
  requireBinary,
  startRedis,
  startTestServer,
  TestClient,
  type RedisProcess,
} from './helpers.js';
import { Scrape } from './metrics-kit.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const PROMETHEUS = `${ROOT}deploy/prometheus/`;
const DASHBOARD = `${ROOT}deploy/grafana/switchboard.json`;

/** Series Prometheus adds itself to every target: not the server's to export. */
const SYNTHETIC = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped']);

function promtool(args: string[], input?: string): { status: number | null; out: string } {
  const r = spawnSync('promtool', args, { input, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** The metric names a PromQL expression reads, as written (`_bucket` etc. included). */
function seriesIn(expr: string): string[] {
  // Label values ("...") and the label names of by()/without() are never metric names.
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\b(?:by|without)\s*\([^)]*\)/g, '');
  const out = new Set<string>();
  for (const m of bare.matchAll(/\b((?:switchboard|nodejs|process)_[a-zA-Z0-9_]*|up)\b(?!\s*\()/g))
    out.add(m[1] as string);
  return [...out];
}

/** The family a queried name belongs to: itself, or a histogram's for its sample suffixes. */
function familyOf(name: string, families: ReadonlySet<string>): string | undefined {
  if (families.has(name)) return name;
  const m = /^(.*)_(?:bucket|sum|count)$/.exec(name);
  return m !== null && families.has(m[1] as string) ? m[1] : undefined;
}

interface Panel {
  readonly targets?: readonly { readonly expr?: string }[];
  readonly panels?: readonly Panel[];
}

function dashboardExprs(): string[] {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    panels: Panel[];
    templating: { list: { query?: unknown; definition?: string }[] };
  };
  const out: string[] = [];
  const walk = (ps: readonly Panel[]): void => {
    for (const p of ps) {
      for (const t of p.targets ?? []) if (t.expr !== undefined) out.push(t.expr);
      walk(p.panels ?? []);
    }
  };
  walk(dash.panels);
  for (const v of dash.templating.list) if (v.definition !== undefined) out.push(v.definition);
  return out;
}

function ruleExprs(): { alert: string; expr: string }[] {
  const doc = parseYaml(readFileSync(`${PROMETHEUS}alerts.yml`, 'utf8')) as {
    groups: { rules: { alert: string; expr: string }[] }[];
  };
  return doc.groups.flatMap((g) => g.rules);
}

describe('Observability: promtool, the dashboard and the alerting rules', () => {
  const missing = requireBinary('promtool');
  let redis: RedisProcess;
  let server: Awaited<ReturnType<typeof startTestServer>>;
  let scrape: Scrape;

  before(async () => {
    if (missing !== false) return;
    redis = await startRedis();
    server = await startTestServer({
      redis: redis.url,
      maxConnections: 1000,
      allowedOrigins: ['https://app.example'],
      namespaces: { room: { presence: true } },
    });
    // A little of everything, so that every family has samples, labelled ones included.
    const a = await TestClient.open(server.wsUrl);
    const b = await TestClient.open(server.wsUrl);
    await a.subscribe('obs');
    await b.request({ action: 'subscribe', channel: 'obs', rewind: 1, id: 'rw' });
    await b.request({ action: 'publish', channel: 'obs', data: 1, id: 'p' });
    await a.until(() => a.messages('obs').length === 1);
    await b.request({ action: 'nope', id: 'bad' });
    await b.request({ action: 'history', channel: 'obs', limit: 5, id: 'h' });
    const entered = await a.request({
      action: 'enter',
      channel: 'room:obs',
      data: 'here',
      id: 'e',
    });
    assert.equal(entered['error'], undefined, JSON.stringify(entered));
    // A refused write (Redis over maxmemory with noeviction): a broker error.
    redis.cli('CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
    redis.cli('CONFIG', 'SET', 'maxmemory', '1');
    const refused = await b.request({ action: 'publish', channel: 'obs', data: 2, id: 'oom' });
    assert.equal(refused['code'], ErrorCode.NOT_AVAILABLE);
    redis.cli('CONFIG', 'SET', 'maxmemory', '0');
    // A refused upgrade (origin not allowed): a disconnect by status.
    const foreign = new WebSocket(server.wsUrl, { origin: 'https://elsewhere.example' });
    await new Promise((resolve) => foreign.once('error', resolve));
    a.close();
    b.close();
    scrape = await Scrape.of(server.url);
  });
  after(async () => {
    await server?.close();
    await redis?.stop();
  });

  it('/metrics passes promtool check metrics, with no blank line', { skip: missing }, () => {
    assert.doesNotMatch(scrape.text, /\n\n/);
    assert.ok(scrape.text.endsWith('\n'));
    const r = promtool(['check', 'metrics'], scrape.text);
    assert.equal(r.status, 0, r.out);
    assert.equal(r.out.trim(), '');
  });

  it('deploy/prometheus passes promtool check config and check rules', { skip: missing }, () => {
    const config = promtool(['check', 'config', `${PROMETHEUS}prometheus.yml`]);
    assert.equal(config.status, 0, config.out);
    assert.match(config.out, /SUCCESS: 1 rule files found/);
    const rules = promtool(['check', 'rules', `${PROMETHEUS}alerts.yml`]);
    assert.equal(rules.status, 0, rules.out);
  });

  it('the rules cover the alerts the issue lists', () => {
    const names = ruleExprs().map((r) => r.alert);
    for (const alert of [
      'SwitchboardNodeDown',
      'SwitchboardDeliveryLatencyHigh',
      'SwitchboardSlowConsumers',
      'SwitchboardRedisErrors',
      'SwitchboardEventLoopLag',
      'SwitchboardNearConnectionLimit',
    ])
      assert.ok(names.includes(alert), alert);
  });

  it(
    'every series the dashboard and the rules query is exported by a live server',
    { skip: missing },
    () => {
      const exported = scrape.families();
      const queried = new Map<string, string>();
      for (const expr of dashboardExprs())
        for (const s of seriesIn(expr)) queried.set(s, `dashboard: ${expr}`);
      for (const r of ruleExprs())
        for (const s of seriesIn(r.expr)) queried.set(s, `rule ${r.alert}`);
      assert.ok(queried.size >= 25, `only ${queried.size} series found in the queries`);
      const unknown = [...queried].filter(
        ([s]) => !SYNTHETIC.has(s) && familyOf(s, exported) === undefined,
      );
      assert.deepEqual(unknown, []);
      // And every one of them has samples after the workload.
      for (const [s] of queried) {
        if (SYNTHETIC.has(s)) continue;
        const family = familyOf(s, exported) as string;
        assert.ok(
          scrape.samples.some(
            (x) => x.name === s || x.name.startsWith(`${family}_`) || x.name === family,
          ),
          `${s} has no sample`,
        );
      }
    },
  );

  it('the dashboard shows every switchboard series the server exports', () => {
    const shown = new Set(
      dashboardExprs()
        .flatMap(seriesIn)
        .map((s) => s.replace(/_(?:bucket|sum|count)$/, '')),
    );
    const documented = readFileSync(`${ROOT}docs/operations.md`, 'utf8');
    for (const m of documented.matchAll(/^#### `(switchboard_[a-z_]+)`/gm))
      assert.ok(shown.has(m[1] as string), `${m[1]} is documented but on no panel`);
  });
});
