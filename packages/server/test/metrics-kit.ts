/**
 * Reading a /metrics exposition in tests: every sample as name, labels and value, and the
 * series names the documentation lists. The parser is deliberately strict (promtool checks the
 * format itself; this only has to read what prom-client writes).
 */
import { readFileSync } from 'node:fs';

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) throw new Error(`unreadable sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1] as string] = l[2] as string;
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/** Samples read from one scrape, with lookups by name and label subset. */
export class Scrape {
  readonly samples: Sample[];
  readonly text: string;

  constructor(text: string) {
    this.text = text;
    this.samples = parseExposition(text);
  }

  static async of(baseUrl: string): Promise<Scrape> {
    const res = await fetch(`${baseUrl}/metrics`);
    if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
    return new Scrape(await res.text());
  }

  /** The sum of the samples of `name` whose labels include `labels`; throws when there is none. */
  value(name: string, labels: Record<string, string> = {}): number {
    const found = this.samples.filter(
      (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
    );
    if (found.length === 0) throw new Error(`no sample ${name}${JSON.stringify(labels)}`);
    return found.reduce((a, s) => a + s.value, 0);
  }

  /** The sum over every sample of `name` (0 when there is none). */
  sum(name: string): number {
    return this.samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);
  }

  /** Metric family names (histogram samples folded to their family). */
  families(): Set<string> {
    const out = new Set<string>();
    for (const line of this.text.split('\n')) {
      const m = /^# TYPE (\S+) /.exec(line);
      if (m !== null) out.add(m[1] as string);
    }
    return out;
  }
}

/** Every `switchboard_*` series docs/operations.md documents (its "### `name`" headings). */
export function documentedSeries(): string[] {
  const doc = readFileSync(new URL('../../../docs/operations.md', import.meta.url), 'utf8');
  return [...doc.matchAll(/^#### `(switchboard_[a-z_]+)`/gm)].map((m) => m[1] as string);
}
