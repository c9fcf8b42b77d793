import { ErrorCode, type ErrorCodeValue } from '@switchboard/protocol';
import type { RequestInfo } from './engine/transport.js';

export interface Refusal {
  readonly status: number;
  readonly code: ErrorCodeValue;
  readonly message: string;
  /**
   * An engine that can hold the request this long before answering should (an address closed
   * for flooding): a client that reconnects in a loop then waits instead of costing the node a
   * TCP handshake and a refusal each time.
   */
  readonly holdMs?: number;
  /** Sent as `Retry-After` (seconds): when a client may try this node again. */
  readonly retryAfterS?: number;
}

/** How long an address closed for flooding stays limited to one new connection per second. */
export const FLOOD_PENALTY_MS = 10_000;

export interface AdmissionOptions {
  /** Exact origins, or '*'. Empty: any origin when `authEnabled` is false, none when it is true. */
  readonly allowedOrigins: readonly string[];
  readonly authEnabled: boolean;
  readonly maxConnectionsPerIpPerSecond: number;
  /** Why the node refuses new connections now (shedding.ts, or draining), or undefined. */
  readonly shedding: () => string | undefined;
  /** `Retry-After` of a shed connection, in seconds. */
  readonly retryAfterS: number;
}

/**
 * Who may open a connection or call the API at the door, before any session exists: the Origin
 * allowlist (browsers send Origin; other clients do not, and are let through), the node's
 * connection cap, and new connections per address per second. Shared by every transport.
 */
export class Admission {
  readonly #o: AdmissionOptions;
  readonly #origins: ReadonlySet<string>;
  readonly #anyOrigin: boolean;
  /** Connections opened per address in the current second. */
  #perIp = new Map<string, number>();
  /** Addresses whose connection was closed for flooding (3011) → until when they are slowed. */
  readonly #flooders = new Map<string, number>();
  #second = 0;

  constructor(options: AdmissionOptions) {
    this.#o = options;
    this.#origins = new Set(options.allowedOrigins);
    this.#anyOrigin =
      this.#origins.has('*') || (options.allowedOrigins.length === 0 && !options.authEnabled);
  }

  /**
   * The request's Origin when it is allowed (for CORS headers), null when the request has none,
   * or a refusal. Origins are compared exactly as the browser serialised them: no suffix or case
   * games, and the opaque origin "null" only when listed.
   */
  origin(req: RequestInfo): string | null | Refusal {
    const origin = req.headers.origin;
    if (origin === undefined) return null;
    if (this.#anyOrigin || this.#origins.has(origin) || sameOrigin(origin, req.headers.host))
      return origin;
    return { status: 403, code: ErrorCode.PERMISSION_DENIED, message: 'origin not allowed' };
  }

  /**
   * Slows an address whose connection was just closed for flooding (3011): for the next
   * FLOOD_PENALTY_MS it may open one connection per second. Otherwise a flooder reconnecting at
   * once got a fresh command bucket each time, and disconnecting it made it cheaper, not dearer.
   */
  penalize(address: string): void {
    const now = Date.now();
    this.#flooders.set(address, now + FLOOD_PENALTY_MS);
    for (const [ip, until] of this.#flooders) if (until <= now) this.#flooders.delete(ip);
  }

  /** Whether `ip` was closed for flooding within FLOOD_PENALTY_MS. */
  flooding(ip: string): boolean {
    const until = this.#flooders.get(ip);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.#flooders.delete(ip);
    return false;
  }

  /** Counts a new connection attempt; a refusal when it is over a limit. */
  connection(req: RequestInfo): Refusal | undefined {
    const shed = this.#o.shedding();
    if (shed !== undefined) {
      return {
        status: 503,
        code: ErrorCode.NOT_AVAILABLE,
        message: `node is shedding load: ${shed}`,
        retryAfterS: this.#o.retryAfterS,
      };
    }
    const second = Math.floor(Date.now() / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#perIp = new Map();
    }
    const ip = req.socket.remoteAddress ?? '';
    const n = (this.#perIp.get(ip) ?? 0) + 1;
    this.#perIp.set(ip, n);
    const flooding = this.flooding(ip);
    if (n > this.#o.maxConnectionsPerIpPerSecond || (n > 1 && flooding)) {
      return {
        status: 429,
        code: ErrorCode.TOO_MANY_REQUESTS,
        message: 'too many new connections from this address',
        ...(flooding ? { holdMs: 1000 } : {}),
      };
    }
    return undefined;
  }
}

export function isRefusal(value: unknown): value is Refusal {
  return typeof value === 'object' && value !== null && 'status' in value;
}

/**
 * Whether a browser's Origin is the node's own (its pages: the front page, the admin UI): Chromium
 * sends Origin on same-origin module scripts and POSTs, and the node's own pages must work with
 * auth on and no allowedOrigins. A cross-site page cannot make its Origin equal the Host it calls.
 */
function sameOrigin(origin: string, host: string | undefined): boolean {
  return host !== undefined && (origin === `http://${host}` || origin === `https://${host}`);
}
