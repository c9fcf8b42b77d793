import type { IncomingMessage } from 'node:http';
import { ErrorCode, type ErrorCodeValue } from '@switchboard/protocol';

export interface Refusal {
  readonly status: number;
  readonly code: ErrorCodeValue;
  readonly message: string;
}

export interface AdmissionOptions {
  /** Exact origins, or '*'. Empty: any origin when `authEnabled` is false, none when it is true. */
  readonly allowedOrigins: readonly string[];
  readonly authEnabled: boolean;
  readonly maxConnections: number;
  readonly maxConnectionsPerIpPerSecond: number;
  readonly connections: () => number;
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
  origin(req: IncomingMessage): string | null | Refusal {
    const origin = req.headers.origin;
    if (origin === undefined) return null;
    if (this.#anyOrigin || this.#origins.has(origin)) return origin;
    return { status: 403, code: ErrorCode.PERMISSION_DENIED, message: 'origin not allowed' };
  }

  /** Counts a new connection attempt; a refusal when it is over a limit. */
  connection(req: IncomingMessage): Refusal | undefined {
    if (this.#o.connections() >= this.#o.maxConnections) {
      return {
        status: 503,
        code: ErrorCode.NOT_AVAILABLE,
        message: 'node is at its connection limit',
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
    if (n > this.#o.maxConnectionsPerIpPerSecond) {
      return {
        status: 429,
        code: ErrorCode.TOO_MANY_REQUESTS,
        message: 'too many new connections from this address',
      };
    }
    return undefined;
  }
}

export function isRefusal(value: unknown): value is Refusal {
  return typeof value === 'object' && value !== null && 'status' in value;
}
