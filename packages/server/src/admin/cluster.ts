import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';

/**
 * Asks every node of the deployment a question over the broker's control topics and gathers
 * the answers: the request goes to `admin:q`, to which every node with the admin API subscribes;
 * each answers on the asker's own `admin:r:<node id>`. The broker says how many nodes received
 * the request (Redis counts PUBLISH receivers), so the asker stops waiting once all answered, or
 * after the timeout with what it has (a node that answers late is reported as missing).
 */

export const REQUEST_TOPIC = 'admin:q';
const TIMEOUT_MS = 1500;

export interface ControlBus {
  onControlTopic(topic: string, handler: (payload: Buffer) => void): Promise<void>;
  offControlTopic(topic: string): void;
  publishControl(topic: string, payload: string): Promise<number>;
}

export type Answerer = (kind: string, args: Record<string, unknown>) => Promise<unknown>;

export interface Gathered<T> {
  readonly answers: readonly T[];
  /** Nodes that received the question but did not answer in time. */
  readonly missing: number;
}

interface Pending {
  readonly answers: unknown[];
  failed: number;
  expected: number;
  readonly done: () => void;
}

export class AdminCluster {
  readonly #bus: ControlBus;
  readonly #node: string;
  readonly #answer: Answerer;
  readonly #logger: Logger;
  readonly #pending = new Map<string, Pending>();
  readonly #replyTopic: string;

  constructor(bus: ControlBus, nodeId: string, answer: Answerer, logger: Logger) {
    this.#bus = bus;
    this.#node = nodeId;
    this.#answer = answer;
    this.#logger = logger;
    this.#replyTopic = `admin:r:${nodeId}`;
  }

  async start(): Promise<void> {
    await this.#bus.onControlTopic(this.#replyTopic, (p) => this.#onReply(p));
    await this.#bus.onControlTopic(REQUEST_TOPIC, (p) => void this.#onRequest(p));
  }

  stop(): void {
    this.#bus.offControlTopic(REQUEST_TOPIC);
    this.#bus.offControlTopic(this.#replyTopic);
    for (const p of this.#pending.values()) p.done();
  }

  async #onRequest(payload: Buffer): Promise<void> {
    let q: { rid?: unknown; from?: unknown; kind?: unknown; args?: unknown };
    try {
      q = JSON.parse(payload.toString()) as typeof q;
    } catch {
      return;
    }
    if (typeof q.rid !== 'string' || typeof q.from !== 'string' || typeof q.kind !== 'string')
      return;
    let body: unknown;
    try {
      body = await this.#answer(q.kind, (q.args ?? {}) as Record<string, unknown>);
    } catch (err) {
      this.#logger.warn({ err, kind: q.kind }, 'admin: could not answer a cluster question');
      body = null;
    }
    const text = JSON.stringify({ rid: q.rid, node: this.#node, body });
    await this.#bus.publishControl(`admin:r:${q.from}`, text).catch(() => 0);
  }

  #onReply(payload: Buffer): void {
    let r: { rid?: unknown; body?: unknown };
    try {
      r = JSON.parse(payload.toString()) as typeof r;
    } catch {
      return;
    }
    const p = typeof r.rid === 'string' ? this.#pending.get(r.rid) : undefined;
    if (p === undefined) return;
    if (r.body !== null) p.answers.push(r.body);
    else p.failed++;
    if (p.answers.length + p.failed >= p.expected) p.done();
  }

  /** Every node's answer to `kind` (this node's included). */
  async gather<T>(kind: string, args: Record<string, unknown> = {}): Promise<Gathered<T>> {
    const rid = randomBytes(8).toString('hex');
    let resolve!: () => void;
    const finished = new Promise<void>((r) => (resolve = r));
    const pending: Pending = {
      answers: [],
      failed: 0,
      expected: Number.POSITIVE_INFINITY,
      done: resolve,
    };
    this.#pending.set(rid, pending);
    const timer = setTimeout(resolve, TIMEOUT_MS);
    try {
      const receivers = await this.#bus.publishControl(
        REQUEST_TOPIC,
        JSON.stringify({ rid, from: this.#node, kind, args }),
      );
      pending.expected = Math.min(pending.expected, receivers);
      if (pending.answers.length + pending.failed >= pending.expected) resolve();
      await finished;
      const answers = pending.answers.slice() as T[];
      return {
        answers,
        missing: Math.max(
          0,
          (Number.isFinite(pending.expected) ? pending.expected : 0) - answers.length,
        ),
      };
    } finally {
      clearTimeout(timer);
      this.#pending.delete(rid);
    }
  }
}
