/**
 * The ISS publisher: once a second, the station's position to `iss.telemetry`. Latitude and
 * longitude come from the public open-notify API when it answers within 2 s, otherwise (and for
 * a minute after it failed, so the rate holds) from SGP4 (orbit.ts). Altitude and speed always
 * come from the model, as open-notify reports neither.
 *
 * Two ways to publish:
 * - REST (default): `POST /v1/channels/iss.telemetry/messages`, `Content-Type: application/json`.
 *   Each position has an id (`iss-<timestamp>`); positions the node did not take (down,
 *   restarting) stay queued, in order, and are sent again with the same ids, so each is stored
 *   once and the channel has no hole.
 * - raw Redis `PUBLISH` (`--redis URL`), as the tutorial's publisher does; nodes started with
 *   `--redis-bridge 'iss.*'` deliver it (without offsets or history: see docs/operations.md).
 */
import { Redis } from 'ioredis';
import { loadOrbit, type Orbit, type Telemetry } from './orbit.js';

export const CHANNEL = 'iss.telemetry';
export const OPEN_NOTIFY_URL = 'http://api.open-notify.org/iss-now.json';
const OPEN_NOTIFY_TIMEOUT_MS = 2000;
/** After open-notify failed, the model alone for this long before asking it again. */
const OPEN_NOTIFY_BACKOFF_MS = 60_000;
/** Positions kept while the node does not take them: ten minutes at one a second. */
const MAX_QUEUED = 600;

export interface PublisherOptions {
  /** The node's HTTP URL (REST mode). */
  readonly url?: string;
  /** A Redis URL: publish with a raw PUBLISH instead (bridge mode). */
  readonly redis?: string;
  /** `name:secret` of an API key, when the node has auth on. */
  readonly apiKey?: string;
  readonly channel?: string;
  readonly intervalMs?: number;
  /** Never ask open-notify (or ask this URL instead). */
  readonly offline?: boolean;
  readonly openNotifyUrl?: string;
  readonly orbit?: Orbit;
  /** A line for each noteworthy event (source changes, node down and back). */
  readonly log?: (line: string) => void;
}

export interface Publisher {
  /** Positions published (taken by the node, or PUBLISHed). */
  readonly published: number;
  /** Positions waiting for the node. */
  readonly queued: number;
  stop(): Promise<void>;
}

export function startPublisher(o: PublisherOptions): Publisher {
  if ((o.url === undefined) === (o.redis === undefined))
    throw new TypeError('give exactly one of "url" (REST) or "redis" (raw PUBLISH)');
  const orbit = o.orbit ?? loadOrbit();
  const channel = o.channel ?? CHANNEL;
  const intervalMs = o.intervalMs ?? 1000;
  const log = o.log ?? (() => {});
  const redis = o.redis === undefined ? undefined : new Redis(o.redis, { lazyConnect: false });
  redis?.on('error', () => {});
  let openNotifyAfter = o.offline === true ? Infinity : 0;
  let source: Telemetry['source'] | undefined;
  let published = 0;
  let queue: Telemetry[] = [];
  let nodeDown = false;
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> = Promise.resolve();

  const fix = async (now: Date): Promise<Telemetry> => {
    const model = orbit.at(now);
    if (Date.now() >= openNotifyAfter) {
      const live = await openNotify(o.openNotifyUrl ?? OPEN_NOTIFY_URL);
      if (live !== undefined) return { ...model, ...live, source: 'open-notify' };
      openNotifyAfter = Date.now() + OPEN_NOTIFY_BACKOFF_MS;
    }
    return { ...model, source: 'sgp4' };
  };

  const flush = async (): Promise<void> => {
    if (redis !== undefined) {
      for (const t of queue.splice(0)) {
        await redis.publish(channel, JSON.stringify(t));
        published++;
      }
      return;
    }
    if (queue.length === 0) return;
    const batch = queue.slice(0, 1000);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (o.apiKey !== undefined)
      headers['authorization'] = `Basic ${Buffer.from(o.apiKey).toString('base64')}`;
    try {
      const res = await fetch(`${o.url}/v1/channels/${encodeURIComponent(channel)}/messages`, {
        method: 'POST',
        headers,
        body: JSON.stringify(
          batch.map((t) => ({ name: 'position', id: `iss-${t.timestamp}`, data: t })),
        ),
        signal: AbortSignal.timeout(5000),
      });
      if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
      queue = queue.slice(batch.length);
      published += batch.length;
      if (nodeDown) log(`node back: ${batch.length} queued positions sent`);
      nodeDown = false;
    } catch (err) {
      if (!nodeDown) log(`node did not take positions (${errorText(err)}); queueing`);
      nodeDown = true;
    }
  };

  const tick = async (): Promise<void> => {
    const t = await fix(new Date());
    if (t.source !== source)
      log(`positions from ${t.source === 'sgp4' ? 'SGP4 (offline model)' : 'open-notify'}`);
    source = t.source;
    queue.push(t);
    if (queue.length > MAX_QUEUED) queue.splice(0, queue.length - MAX_QUEUED);
    await flush().catch((err: unknown) => log(`publish failed: ${errorText(err)}`));
  };

  const schedule = (at: number): void => {
    if (stopped) return;
    timer = setTimeout(
      () => {
        running = tick().finally(() => schedule(Math.max(Date.now(), at + intervalMs)));
      },
      Math.max(0, at - Date.now()),
    );
  };
  schedule(Date.now());

  return {
    get published() {
      return published;
    },
    get queued() {
      return queue.length;
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
      redis?.disconnect();
    },
  };
}

/**
 * Posts the model's positions of the last `minutes`, one every `stepMs`, so a page opened now
 * draws a trail at once. Only into an empty channel: older positions after newer offsets would
 * draw the trail backwards. Resolves with the number posted.
 */
export async function backfill(o: {
  url: string;
  minutes: number;
  stepMs?: number;
  channel?: string;
  orbit?: Orbit;
  apiKey?: string;
}): Promise<number> {
  const channel = encodeURIComponent(o.channel ?? CHANNEL);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (o.apiKey !== undefined)
    headers['authorization'] = `Basic ${Buffer.from(o.apiKey).toString('base64')}`;
  const seen = await fetch(`${o.url}/v1/channels/${channel}/messages?limit=1`, { headers });
  if (!seen.ok || ((await seen.json()) as { messages: unknown[] }).messages.length > 0) return 0;
  const orbit = o.orbit ?? loadOrbit();
  const step = o.stepMs ?? 10_000;
  const now = Date.now();
  const count = Math.min(1000, Math.floor((o.minutes * 60_000) / step));
  const items = Array.from({ length: count }, (_, i) => {
    const t: Telemetry = { ...orbit.at(new Date(now - (count - i) * step)), source: 'sgp4' };
    return { name: 'position', id: `iss-${t.timestamp}`, data: t };
  });
  if (items.length === 0) return 0;
  const res = await fetch(`${o.url}/v1/channels/${channel}/messages`, {
    method: 'POST',
    headers,
    body: JSON.stringify(items),
  });
  if (!res.ok) throw new Error(`backfill: HTTP ${res.status}: ${await res.text()}`);
  return items.length;
}

/** The position open-notify reports, or undefined when it does not answer well within 2 s. */
async function openNotify(
  url: string,
): Promise<{ latitude: number; longitude: number } | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(OPEN_NOTIFY_TIMEOUT_MS) });
    if (!res.ok) return undefined;
    const body = (await res.json()) as {
      message?: string;
      iss_position?: { latitude?: string; longitude?: string };
    };
    const latitude = Number(body.iss_position?.latitude);
    const longitude = Number(body.iss_position?.longitude);
    if (body.message !== 'success' || !Number.isFinite(latitude) || !Number.isFinite(longitude))
      return undefined;
    return { latitude, longitude };
  } catch {
    return undefined;
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return err.message + cause;
  }
  return String(err);
}
