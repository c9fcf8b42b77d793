import { PublishError } from './publish-error.js';

/**
 * Publish after WAIT (#10). Redis replicates asynchronously, so a message a master fanned out at
 * once could be gone after a failover while subscribers already saw it, and its offset would then
 * be handed to another message. Under a gate the publish script stores (XADD, offset, idempotency
 * key) but does not fan out: its payload waits here, and is PUBLISHed, in storage order, only once
 * a WAIT sent after it confirmed that enough replicas hold it. One WAIT is in flight at a time (a
 * WAIT blocks the connection) and covers every script sent before it; what it releases goes out
 * in one fan-out script call per FANOUT_BATCH payloads (fanoutManyLua), not one PUBLISH each.
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
  /**
   * Fans out `held` (at most FANOUT_BATCH, in storage order) on that connection, in that order:
   * PUBLISHes each (`verify` false) or each whose entry the master still holds (`verify` true,
   * fanoutLua), in as few calls as it can (fanoutHeld). Resolves with those not sent; a rejection
   * counts as none sent. What was not sent is held again and checked against the next master.
   */
  fanout(held: readonly HeldPayload[], verify: boolean): Promise<readonly HeldPayload[]>;
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
    for (const h of out) this.#keys.delete(h.key);
    // Runs of one kind (checked or not), FANOUT_BATCH at most, sent in order in this turn.
    for (let i = 0; i < out.length;) {
      const verify = (out[i] as Held).link !== this.#generation;
      let j = i + 1;
      while (
        j < out.length &&
        j - i < FANOUT_BATCH &&
        ((out[j] as Held).link !== this.#generation) === verify
      )
        j++;
      const run = out.slice(i, j);
      i = j;
      // Not sent (the link dropped): held again, checked against the next master.
      const again = (unsent: readonly HeldPayload[]): void => {
        const lost = new Set(unsent);
        for (const h of run) if (lost.has(h)) this.#hold(h, h.seq, -1);
      };
      this.#link.fanout(run, verify).then(again, () => again(run));
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

/** Most payloads one GateLink#fanout call carries. */
export const FANOUT_BATCH = 256;

/**
 * A GateLink#fanout on one connection (one Cluster slot): `many` sends all of `held` in one call
 * (fanoutManyLua), `one` a single payload (PUBLISH or fanoutLua). When Redis refused the call
 * (a reply error: keys not local to the master it reached, a broken stream key), it is retried
 * payload by payload, so a bad payload holds back only itself; those the call published before
 * the error go out twice (subscribers drop an offset they already have). A lost link (any other
 * error) rejects: none counts as sent. Resolves with the payloads not sent, in order.
 */
export async function fanoutHeld(
  held: readonly HeldPayload[],
  many: (held: readonly HeldPayload[]) => Promise<unknown>,
  one: (held: HeldPayload) => Promise<unknown>,
): Promise<readonly HeldPayload[]> {
  if (held.length === 1) {
    await one(held[0] as HeldPayload);
    return NONE;
  }
  try {
    await many(held);
    return NONE;
  } catch (err) {
    if (!(err instanceof Error && err.name === 'ReplyError')) throw err;
  }
  const sent = await Promise.all(held.map((h) => one(h).then(yes, no)));
  return held.filter((_, i) => !sent[i]);
}

const NONE: readonly HeldPayload[] = [];
const yes = (): boolean => true;
const no = (): boolean => false;

/** Pause between WAITs while only held payloads wait (a short WAIT already took its timeout). */
const RETRY_MS = 50;

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function noop(): void {}
