/**
 * The admin REST API (docs/operations.md, Admin API) as the SPA calls it: same-origin fetch with
 * the session cookie, the CSRF token on every write, errors as ApiError carrying the server's
 * `{error, code}` so pages can show the server's own words.
 */

export class ApiError extends Error {
  readonly status: number;
  readonly code: number | undefined;
  readonly retryAfterS: number | undefined;
  constructor(
    status: number,
    code: number | undefined,
    message: string,
    retryAfterS: number | undefined,
  ) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }
}

let csrf: string | undefined;
let onUnauthenticated: () => void = () => undefined;

export function setCsrf(token: string | undefined): void {
  csrf = token;
}

/** Called when a request answers 401: the session expired or was never there. */
export function whenUnauthenticated(f: () => void): void {
  onUnauthenticated = f;
}

export async function api<T>(path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  const write = body !== undefined;
  if (write) {
    headers['content-type'] = 'application/json';
    if (csrf !== undefined) headers['x-csrf-token'] = csrf;
  }
  const r = await fetch(path, {
    method: write ? 'POST' : 'GET',
    headers,
    credentials: 'same-origin',
    cache: 'no-store',
    ...(write && { body: JSON.stringify(body) }),
  });
  const text = await r.text();
  let json: unknown = undefined;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    // Not JSON (a proxy's error page): the status line says enough.
  }
  if (!r.ok) {
    const e = json as { error?: string; code?: number } | undefined;
    const retry = Number(r.headers.get('retry-after'));
    if (r.status === 401 && path !== '/v1/admin/login') onUnauthenticated();
    throw new ApiError(
      r.status,
      e?.code,
      e?.error ?? `${r.status} ${r.statusText}`,
      Number.isFinite(retry) && retry > 0 ? retry : undefined,
    );
  }
  return json as T;
}

export const enc = encodeURIComponent;

/** GET /v1/admin/session */
export interface Session {
  readonly authenticated: boolean;
  readonly via?: 'open' | 'key' | 'session';
  readonly csrf?: string;
  readonly login: boolean;
}

export interface NodeOverview {
  readonly id: string;
  readonly version: string;
  readonly engine: string;
  readonly broker: string;
  readonly startedAt: string;
  readonly uptimeS: number;
  readonly connections: number;
  readonly channels: number;
  readonly messagesInPerSec: number;
  readonly messagesOutPerSec: number;
  readonly eventLoopLagMs: number;
  readonly ready: boolean;
}

export interface Overview {
  readonly nodes: readonly NodeOverview[];
  readonly totals: {
    readonly nodes: number;
    readonly ready: number;
    readonly connections: number;
    readonly channels: number;
    readonly messagesInPerSec: number;
    readonly messagesOutPerSec: number;
    readonly maxEventLoopLagMs: number;
  };
  readonly missing?: readonly string[];
}

export interface ChannelRow {
  readonly channel: string;
  readonly subscribers: number;
  /** Connections attached (to its messages or its presence events), deployment-wide. */
  readonly connections?: number;
  readonly presenceMembers?: number;
  /** Distinct publishers in the last minute. */
  readonly publishersLastMinute?: number;
  readonly messagesPerSec?: number;
  readonly [more: string]: unknown;
}

export interface ChannelPage {
  readonly channels: readonly ChannelRow[];
  readonly next: string | null;
}

export interface ChannelInfo {
  readonly channel: string;
  readonly subscribers: number;
  readonly nodes: number;
  readonly last: { offset: number; epoch: string; at?: string } | null;
  readonly messagesPerSec: number;
  /** Whether the channel's namespace has presence on. */
  readonly presence: boolean;
  /** From the deployment's channel directory, when it has the channel. */
  readonly occupancy?: {
    connections: number;
    subscribers: number;
    presenceMembers: number;
    publishersLastMinute: number;
  };
}

/** A message as the tail sends it; history frames are mapped to the same shape. */
export interface TailMessage {
  readonly channel: string;
  readonly offset: number;
  readonly epoch: string;
  readonly id?: string;
  readonly name?: string;
  readonly data: unknown;
  readonly at?: number;
}

export interface HistoryPage {
  readonly channel: string;
  readonly messages: readonly Record<string, unknown>[];
  readonly position: { offset: number; epoch: string };
}

export function fromHistory(f: Record<string, unknown>): TailMessage {
  return {
    channel: String(f['channel']),
    offset: Number(f['offset']),
    epoch: String(f['epoch']),
    ...(typeof f['id'] === 'string' && { id: f['id'] }),
    ...(typeof f['name'] === 'string' && { name: f['name'] }),
    data: 'message' in f ? f['message'] : f['data'],
    ...(typeof f['timestamp'] === 'number' && { at: f['timestamp'] }),
  };
}

export interface PresencePage {
  readonly members: readonly {
    clientId: string;
    connectionId: string;
    data?: unknown;
    timestamp?: number;
  }[];
  readonly more: boolean;
}

export interface Latency {
  readonly buckets: readonly { le: number | '+Inf'; count: number }[];
  readonly count: number;
  readonly sum: number;
  readonly nodes?: number;
}

export interface ErrorEntry {
  readonly at: string;
  readonly node: string;
  readonly code: number;
  readonly name: string;
  readonly message: string;
  readonly channel?: string;
  readonly address?: string;
}
