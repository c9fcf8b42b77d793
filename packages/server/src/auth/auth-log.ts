import type { Logger } from 'pino';

/** What a refused login is logged with: never the token or the key's secret. */
export interface RefusalFields {
  /** `websocket`, `sse`, `long-polling` or `http` (REST). */
  readonly transport: string;
  readonly address: string | undefined;
  /** The user (token `sub`) or API key name, when the credentials were readable. */
  readonly user?: string | undefined;
}

/**
 * Logs refused logins (a bad, expired or revoked token, an unknown API key) at info, so an
 * operator can see who is failing to get in and why. At most `perSecond` lines a second: a
 * client retrying a bad token in a loop, or an attack, must not turn the log into the bottleneck;
 * the lines left out are counted in one summary line at the end of that second.
 */
export class AuthFailureLog {
  readonly #log: Logger;
  readonly #perSecond: number;
  #second = 0;
  #logged = 0;
  #suppressed = 0;

  readonly #count: ((reason: string) => void) | undefined;

  /** `count`: told every refusal, logged or not (the metrics count them all). */
  constructor(log: Logger, perSecond = 10, count?: (reason: string) => void) {
    this.#log = log;
    this.#perSecond = perSecond;
    this.#count = count;
  }

  refused(reason: string, f: RefusalFields): void {
    this.#count?.(reason);
    const second = Math.floor(Date.now() / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#logged = 0;
    }
    if (this.#logged < this.#perSecond) {
      this.#logged++;
      this.#log.info(
        { reason, transport: f.transport, address: f.address, ...(f.user && { user: f.user }) },
        'login refused',
      );
      return;
    }
    if (this.#suppressed++ === 0)
      setTimeout(() => this.#summary(), (second + 1) * 1000 - Date.now()).unref();
  }

  #summary(): void {
    const n = this.#suppressed;
    this.#suppressed = 0;
    this.#log.info(
      { suppressed: n, limit: this.#perSecond },
      'login refused: more refusals in the last second than logged',
    );
  }
}
