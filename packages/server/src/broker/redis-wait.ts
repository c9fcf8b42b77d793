import { PublishError } from './publish-error.js';

/**
 * Publish after WAIT (#10). Redis replicates asynchronously, so a message a master fanned out at
 * once could be gone after a failover while subscribers already saw it, and its offset would then
 * be handed to another message. Under a gate the publish script stores (XADD, offset, idempotency
 * key) but does not fan out: its payload waits here, and is PUBLISHed, in storage order, only once
 * a WAIT sent after it confirmed that enough replicas hold it. One WAIT is in flight at a time (a
 * WAIT blocks the connection) and covers every script sent before it.
 *
 * A short WAIT (fewer replicas by the timeout) answers the publishes it covers "outcome unknown"
 * (118) but keeps their payloads: they are stored and go out at the next confirming WAIT, which
 * the gate keeps trying. After the command link changed (reconnect, Sentinel switch), a held
 * payload is fanned out only when the master now serving still holds its entry (fanoutLua).
 */

/** A stored message whose fan-out waits for a confirming WAIT. */
export interface HeldPayload {
  /** The pub/sub name it is PUBLISHed on. */
  readonly pubsub: string;
  /** `<offset> <epoch> <assigned µs> <frame>` as the script built it. */
  readonly payload: string;
  readonly meta: string;
  readonly stream: string;
  /** History size of the channel (0: no stream to check the entry against). */
  readonly historySize: number;
}

export interface GateLink {
  /** WAIT numreplicas timeout on the connection the scripts went to. */
  wait(replicas: number, timeoutMs: number): Promise<number>;
  /** PUBLISH (`verify` false) or fanoutLua (`verify` true) of a held payload, on that connection. */
  fanout(held: HeldPayload, verify: boolean): Promise<unknown>;
  /** Whether the connection can take commands now (else the gate waits for kick()). */
  ready(): boolean;
}

export interface ReplicaGateOptions {
  /**
   * Replicas a WAIT must reach now (may change with the replication state); a promise when it
   * must be read first (on the same connection, before the WAIT).
   */
  needed(): number | Promise<number>;
  readonly timeoutMs: number;
  /** Most payloads held at once; publishes beyond it are refused unsent (108). */
  readonly maxHeld?: number;
  /** Told the outcome of every WAIT: replicas reached and needed (undefined acks: it failed). */
  onWait?(acks: number | undefined, needed: number): void;
}

interface Held extends HeldPayload {
  /** Send number of its script; WAITs cover the scripts sent before them. */
  readonly seq: number;
  /** The link generation it was stored on. */
  readonly link: number;
  readonly key: string;
}

interface Waiter {
  readonly seq: number;
  resolve(): void;
  reject(err: unknown): void;
}

export const MAX_HELD = 10_000;

export class ReplicaGate {
  readonly #link: GateLink;
  readonly #o: ReplicaGateOptions;
  readonly #max: number;
  /** Held payloads in storage order. */
  #held: Held[] = [];
  readonly #keys = new Set<string>();
  /**
   * Scripts sent whose reply was not handled yet (they may add a payload), by send number. A
   * script's reply comes before the WAIT's behind it, but ioredis may hand it over later.
   */
  readonly #pending = new Map<number, Promise<void>>();
  /** Publishes those scripts carry. */
  #inFlight = 0;
  #seq = 0;
  #waiters: Waiter[] = [];
  /** A WAIT is in flight or about to be sent. */
  #busy = false;
  #generation = 0;
  #closed = false;
  #retry: NodeJS.Timeout | undefined;

  constructor(link: GateLink, options: ReplicaGateOptions) {
    this.#link = link;
    this.#o = options;
    this.#max = options.maxHeld ?? MAX_HELD;
  }

  /** Payloads held now (stored, not fanned out yet). */
  get held(): number {
    return this.#held.length;
  }

  /** Publishes the gate takes now before refusing (maxHeld less those held or in flight). */
  get room(): number {
    return Math.max(0, this.#max - this.#held.length - this.#inFlight);
  }

  /**
   * Sends one publish script through the gate: `send` must put it on the connection at once.
   * `payloadOf` reads the payload to hold from its reply. `stored` settles with the script's reply;
   * `replicated` once a WAIT after it confirmed (rejects with outcome unknown when one fell short).
   */
  send<R>(
    send: () => Promise<R>,
    payloadOf: (reply: R) => HeldPayload | undefined,
  ): { stored: Promise<R>; replicated: Promise<void> } {
    return this.sendMany(1, send, (reply) => [payloadOf(reply)]);
  }

  /**
   * Sends one script carrying `count` publishes (a batch, redis-batch.ts) through the gate, as
   * send() does one: `payloadsOf` reads the payloads to hold from its reply, in storage order
   * (undefined for a message that failed or has none). They share the script's place in the
   * order and one `replicated`. Refused unsent (108) when fewer than `count` fit (see room).
   */
  sendMany<R>(
    count: number,
    send: () => Promise<R>,
    payloadsOf: (reply: R) => readonly (HeldPayload | undefined)[],
  ): { stored: Promise<R>; replicated: Promise<void> } {
    if (this.room < count)
      throw new PublishError(
        'not-stored',
        `${this.#max} stored messages wait for their replicas already: not stored`,
      );
    const seq = ++this.#seq;
    const generation = this.#generation;
    this.#inFlight += count;
    const stored = send();
    const handled = stored.then(
      (reply) => {
        this.#pending.delete(seq);
        this.#inFlight -= count;
        for (const p of payloadsOf(reply))
          if (p !== undefined && p.payload !== '') this.#hold(p, seq, generation);
      },
      () => {
        this.#pending.delete(seq);
        this.#inFlight -= count;
      },
    );
    this.#pending.set(seq, handled);
    const replicated = new Promise<void>((resolve, reject) => {
      this.#waiters.push({ seq, resolve, reject });
    });
    // A publish whose script failed never reads it.
    replicated.catch(noop);
    this.kick();
    return { stored, replicated };
  }

  /** The command link was lost: what is held now is checked against the next master. */
  linkLost(): void {
    this.#generation++;
  }

  /** Sends a WAIT soon if anything waits for one (call when the link is ready again). */
  kick(): void {
    if (this.#busy || this.#closed) return;
    if (this.#waiters.length === 0 && this.#held.length === 0) return;
    if (!this.#link.ready()) return;
    this.#busy = true;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    // In the next turn: the publishes of this turn share it.
    setImmediate(() => this.#round());
  }

  /**
   * The gate's master is gone (failed over, or its slots moved): its held payloads go out through
   * `fanout` with the entry check (the connection there routes them to the slot's new master,
   * which PUBLISHes only what it holds), and what waits for a WAIT here is answered 118.
   * Returns whether nothing is held any more (a payload not sent stays for the next call).
   */
  drain(): boolean {
    this.#fail(
      this.#seq,
      new PublishError('unknown', 'the Redis master failed over before its replicas confirmed'),
    );
    this.#generation++;
    this.#release(Number.POSITIVE_INFINITY);
    return this.#held.length === 0 && this.#pending.size === 0;
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#retry);
    const err = new PublishError('unknown', 'the broker closed before the replicas confirmed');
    for (const w of this.#waiters.splice(0)) w.reject(err);
  }

  #hold(p: HeldPayload, seq: number, generation: number): void {
    const key =
      p.pubsub + '\n' + p.payload.slice(0, p.payload.indexOf(' ', p.payload.indexOf(' ') + 1));
    // A retry whose first payload is still held: once is enough.
    if (this.#keys.has(key)) return;
    this.#keys.add(key);
    const held = this.#held;
    let i = held.length;
    while (i > 0 && (held[i - 1] as Held).seq > seq) i--;
    held.splice(i, 0, { ...p, seq, link: generation, key });
  }

  #round(): void {
    if (this.#closed) return;
    const cover = this.#seq;
    const generation = this.#generation;
    if (!this.#link.ready()) {
      this.#busy = false;
      this.#fail(cover, new PublishError('unknown', 'the Redis link was lost before WAIT'));
      return;
    }
    const asked = this.#o.needed();
    if (typeof asked === 'number') this.#wait(cover, generation, asked);
    else
      asked.then(
        (needed) => this.#wait(cover, generation, needed),
        (err: unknown) => {
          this.#fail(
            cover,
            new PublishError('unknown', `replication state unknown: ${errText(err)}`, {
              cause: err,
            }),
          );
          this.#next(false);
        },
      );
  }

  #wait(cover: number, generation: number, needed: number): void {
    this.#link.wait(needed, this.#o.timeoutMs).then(
      (acks) => {
        this.#o.onWait?.(acks, needed);
        if (acks >= needed && generation === this.#generation) {
          // Every script it covers has answered; their payloads are held once handled.
          const before = [...this.#pending].filter(([seq]) => seq <= cover).map(([, p]) => p);
          void Promise.all(before).then(() => {
            this.#release(cover);
            this.#settle(cover);
            this.#next(true);
          });
          return;
        } else
          this.#fail(
            cover,
            new PublishError(
              'unknown',
              `stored, but reached ${acks} of ${needed} replicas in time: a failover could lose it`,
            ),
          );
        this.#next(true);
      },
      (err: unknown) => {
        this.#o.onWait?.(undefined, needed);
        this.#fail(
          cover,
          new PublishError('unknown', `WAIT failed: ${errText(err)}`, { cause: err }),
        );
        this.#next(false);
      },
    );
  }

  #next(answered: boolean): void {
    this.#busy = false;
    if (this.#waiters.length === 0 && this.#held.length === 0) return;
    if (answered && this.#waiters.length > 0) {
      this.kick();
      return;
    }
    // Only held payloads (or a failed WAIT): try again shortly, not in a tight loop.
    this.#retry ??= setTimeout(() => {
      this.#retry = undefined;
      this.kick();
    }, RETRY_MS);
    this.#retry.unref();
  }

  /** Fans out, in order, every held payload a confirming WAIT covered. */
  #release(cover: number): void {
    const held = this.#held;
    let n = 0;
    while (n < held.length && (held[n] as Held).seq <= cover) n++;
    if (n === 0) return;
    const out = held.slice(0, n);
    this.#held = held.slice(n);
    for (const h of out) {
      this.#keys.delete(h.key);
      this.#link.fanout(h, h.link !== this.#generation).then(noop, () => {
        // Not sent (the link dropped): held again, checked against the next master.
        this.#hold(h, h.seq, -1);
      });
    }
  }

  #settle(cover: number): void {
    const done = this.#waiters.filter((w) => w.seq <= cover);
    this.#waiters = this.#waiters.filter((w) => w.seq > cover);
    for (const w of done) w.resolve();
  }

  #fail(cover: number, err: PublishError): void {
    const done = this.#waiters.filter((w) => w.seq <= cover);
    this.#waiters = this.#waiters.filter((w) => w.seq > cover);
    for (const w of done) w.reject(err);
  }
}

/** Pause between WAITs while only held payloads wait (a short WAIT already took its timeout). */
const RETRY_MS = 50;

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function noop(): void {}
