/** Small pieces every page uses: polling, formatting, the error line. */
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from './api';

/**
 * Calls `load` now and every `everyMs` while the component is mounted (one request at a time:
 * a slow answer delays the next poll instead of piling requests up).
 */
export function usePoll<T>(
  load: () => Promise<T>,
  everyMs: number,
  deps: readonly unknown[] = [],
  /** An error after which asking again is pointless (e.g. presence not enabled here). */
  final: (err: unknown) => boolean = () => false,
): { data: T | undefined; error: string | undefined; reload: () => void } {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async (): Promise<void> => {
      try {
        const d = await loadRef.current();
        if (!live) return;
        setData(d);
        setError(undefined);
      } catch (err) {
        if (live) setError(message(err));
        if (final(err)) return;
      }
      if (live && everyMs > 0) timer = setTimeout(() => void run(), everyMs);
    };
    void run();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [...deps, tick, everyMs]);
  return { data, error, reload: () => setTick((t) => t + 1) };
}

export function message(err: unknown): string {
  if (err instanceof ApiError)
    return err.code !== undefined ? `${err.message} (code ${err.code})` : err.message;
  return err instanceof Error ? err.message : String(err);
}

export function Problem({ error }: { error: string | undefined }): ComponentChildren {
  if (error === undefined) return null;
  return (
    <p class="problem" role="alert">
      {error}
    </p>
  );
}

const number = new Intl.NumberFormat('en', { maximumFractionDigits: 1 });

export function num(n: number | undefined): string {
  return n === undefined || !Number.isFinite(n) ? '–' : number.format(n);
}

export function duration(s: number): string {
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function time(at: string | number | undefined): string {
  if (at === undefined) return '–';
  const d = new Date(at);
  return Number.isNaN(d.getTime()) ? '–' : d.toLocaleTimeString('en-GB', { hour12: false });
}

export function Card(p: { title: string; children: ComponentChildren; id?: string }) {
  const id = p.id ?? `h-${p.title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  return (
    <section class="card" aria-labelledby={id}>
      <h2 id={id}>{p.title}</h2>
      {p.children}
    </section>
  );
}

export function Stat(p: { label: string; value: string; hint?: string }) {
  return (
    <div class="stat">
      <dt>{p.label}</dt>
      <dd>
        {p.value}
        {p.hint !== undefined && <small> {p.hint}</small>}
      </dd>
    </div>
  );
}
