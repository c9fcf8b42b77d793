import { Cluster, Redis } from 'ioredis';
import calculateSlot from 'ioredis/built/utils/calculateSlot.js';
import type { Logger } from 'pino';
import type {
  Broker,
  BrokerHandler,
  HistoryQuery,
  HistoryResult,
  PublishRequest,
  PublishResult,
} from './broker.js';
import { newEpoch } from './epoch.js';
import { PublishError } from './publish-error.js';
import {
  classify,
  deliver,
  failInFlight,
  heldOf,
  parseHistory,
  quit,
  sendGated,
  type Gated,
  confirmedRead,
  fanoutOn,
  type ScriptCommands,
} from './redis.js';
import { createRedisKeys, type RedisKeys } from './redis-keys.js';
import { HISTORY_LUA, fanoutLua, fanoutManyLua } from './redis-scripts.js';
import { ReplicaGate, type HeldPayload } from './redis-wait.js';
import {
  DEFAULT_PUBLISH_BATCH,
  isNonLocalKey,
  publishBatchLua,
  PublishBatcher,
  runBatch,
  type BatchReply,
  type PublishReply,
} from './redis-batch.js';

export interface RedisClusterBrokerOptions {
  /** `host:port` of some cluster nodes; the rest is discovered. */
  readonly seeds: readonly string[];
  readonly prefix: string;
  readonly logger: Logger;
  readonly commandTimeoutMs?: number;
  readonly metaTtlMs?: number;
  /** How often the slot map is re-read besides on MOVED and unsolicited sunsubscribe. */
  readonly topologyCheckMs?: number;
  /**
   * Replicas of its shard a publish must have reached before it is acknowledged and fanned out
   * (WAIT on the shard master's connection, redis-wait.ts), capped at the replicas the slot map
   * lists for the shard. Default 1; 0 fans out from the script at once.
   */
  readonly waitReplicas?: number;
  readonly waitTimeoutMs?: number;
  /**
   * Most publishes one script call carries, per shard master (redis-batch.ts), gated by WAIT or
   * not (a gated batch's payloads go to the master's gate in order).
   */
  readonly publishBatch?: number;
}

/** A subscriber connection to one shard master, and what it holds. */
interface ShardLink {
  readonly key: string;
  readonly conn: Redis;
  /** Pub/sub names SSUBSCRIBE confirmed on this connection since it last connected. */
  readonly held: Set<string>;
}

/**
 * Redis Cluster: every key of a channel under the channel's hash tag (redis-keys.ts), so the
 * publish script runs on the channel's slot and fans out with SPUBLISH from there; the node holds
 * one sharded-pub/sub connection per shard master, whatever the number of channels.
 *
 * Where a pub/sub name is subscribed follows the slot map: on an unsolicited `sunsubscribe`
 * (failover, slot migration: ioredis 6 emits 'moved'), a lost connection, a refreshed slot map or
 * every `topologyCheckMs`, each name not held by its slot's current master is subscribed there,
 * and the handler is told (onResubscribed) so the Node repairs the gap from the stream.
 * Control topics are sharded pub/sub names too, so publishControl's count is exact.
 */
export class RedisClusterBroker implements Broker {
  readonly name = 'redis-cluster';
  readonly #o: RedisClusterBrokerOptions;
  readonly #keys: RedisKeys;
  readonly #metaTtlMs: number;
  #cmd: (Cluster & ScriptCommands) | undefined;
  #handler: BrokerHandler | undefined;
  /** Pub/sub names the Node wants (channels and control topics). */
  readonly #desired = new Set<string>();
  readonly #links = new Map<string, ShardLink>();
  /** Per pub/sub name, the tail of its queued (s)subscribe operations: applied in call order. */
  readonly #chains = new Map<string, Promise<void>>();
  /** Names placed at least once: a later placement is a resubscription (gap repair). */
  readonly #placed = new Set<string>();
  #repairs = new Set<string>();
  readonly #lanes = new Map<string, Promise<PublishResult>>();
  readonly #waitReplicas: number;
  /** Ungated publishes of one turn as one script call per shard master (by the current slot map). */
  readonly #batch: PublishBatcher;
  /** The same for gated publishes, handed to the master's gate (redis-wait.ts). */
  readonly #gated: PublishBatcher<Gated>;
  /** A debounced refresh + reconcile is pending (#reconcileSoon), and whether to run another. */
  #reconciling = false;
  #reconcileAgain = false;
  /** Publish after WAIT, one gate per shard master (`host:port`). */
  readonly #gates = new Map<string, ReplicaGate>();
  /** Replicas the slot map lists per master, read at each reconcile. */
  #replicas = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #closing = false;
  readonly #probeKey: string;

  constructor(options: RedisClusterBrokerOptions) {
    this.#o = options;
    this.#keys = createRedisKeys(options.prefix);
    this.#metaTtlMs = options.metaTtlMs ?? 24 * 60 * 60 * 1000;
    this.#probeKey = this.#keys.probe(newEpoch());
    this.#waitReplicas = options.waitReplicas ?? 1;
    const limit = options.publishBatch ?? DEFAULT_PUBLISH_BATCH;
    // Routed by the first message's meta key; the others live on the same master by the slot map
    // the batch was grouped with (or fail alone with a non-local-key error).
    this.#batch = new PublishBatcher({
      limit,
      send: (_master, batch) =>
        runBatch(this.#requireCmd(), this.#keys, batch, this.#metaTtlMs, '', false),
    });
    this.#gated = new PublishBatcher<Gated>({
      limit,
      send: (master, batch) => {
        const cmd = this.#requireCmd();
        return sendGated(this.#gateOf(master), this.#keys, batch, (taken) =>
          runBatch(cmd, this.#keys, taken, this.#metaTtlMs, '', true),
        );
      },
    });
  }

  get ready(): boolean {
    if (this.#cmd?.status !== 'ready') return false;
    // Only the shards of this node's channels count: a node with no interest in a failing shard
    // keeps serving (the readiness policy in docs/redis.md).
    for (const name of this.#desired) {
      const link = this.#links.get(this.#masterOf(name) ?? '');
      if (link === undefined || link.conn.status !== 'ready') return false;
    }
    return true;
  }

  async start(handler: BrokerHandler): Promise<void> {
    this.#handler = handler;
    const log = this.#o.logger;
    const cmd = new Cluster(
      this.#o.seeds.map((s) => {
        const i = s.lastIndexOf(':');
        return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
      }),
      {
        lazyConnect: true,
        // Fail at once rather than queue while no shard is known: see RedisBroker.
        enableOfflineQueue: false,
        scaleReads: 'master',
        slotsRefreshInterval: this.#o.topologyCheckMs ?? 1000,
        retryDelayOnFailover: 100,
        retryDelayOnClusterDown: 100,
        clusterRetryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), 2000),
        redisOptions: {
          connectionName: 'switchboard',
          commandTimeout: this.#o.commandTimeoutMs ?? 5000,
          maxRetriesPerRequest: 1,
          // As RedisBroker: what was in flight on a lost link fails (118), it is not re-sent.
          autoResendUnfulfilledCommands: false,
        },
      },
    ) as Cluster & ScriptCommands;
    cmd.defineCommand('sbPublishBatch', { numberOfKeys: 1, lua: publishBatchLua('SPUBLISH') });
    cmd.defineCommand('sbHistory', { numberOfKeys: 2, lua: HISTORY_LUA });
    cmd.defineCommand('sbFanout', { numberOfKeys: 2, lua: fanoutLua('SPUBLISH') });
    cmd.defineCommand('sbFanoutMany', { lua: fanoutManyLua('SPUBLISH') });
    cmd.on('+node', (node: Redis) => {
      node.on('close', () => {
        failInFlight(node);
        this.#gates.get(nodeKey(node))?.linkLost();
      });
      node.on('ready', () => this.#gates.get(nodeKey(node))?.kick());
    });
    cmd.on('error', (err: Error) => log.warn({ err: err.message }, 'redis cluster error'));
    cmd.on('refresh', () => this.#reconcile());
    cmd.on('+node', () => this.#reconcile());
    cmd.on('-node', () => this.#reconcile());
    this.#cmd = cmd;
    await cmd.connect();
    this.#timer = setInterval(() => this.#reconcile(), this.#o.topologyCheckMs ?? 1000);
    this.#timer.unref();
  }

  subscribe(channel: string): Promise<void> {
    return this.#want(this.#keys.pubsub(channel));
  }

  unsubscribe(channel: string): Promise<void> {
    return this.#unwant(this.#keys.pubsub(channel));
  }

  subscribeControl(topic: string): Promise<void> {
    return this.#want(this.#keys.control(topic));
  }

  unsubscribeControl(topic: string): Promise<void> {
    return this.#unwant(this.#keys.control(topic));
  }

  async publishControl(topic: string, payload: string): Promise<number> {
    return Number(await this.#requireCmd().spublish(this.#keys.control(topic), payload));
  }

  /**
   * One publish per channel in flight from this node: on Cluster a command can be re-routed
   * (MOVED, ASK, TRYAGAIN, a failover) and a later one sent straight to the new owner would be
   * stored first. And when one fails, those queued behind it on the channel fail too, unsent
   * (not-stored): the publisher retries them all in order instead of seeing later ones stored
   * before its retry. Different channels still go out together.
   */
  publish(req: PublishRequest): Promise<PublishResult> {
    const channel = req.channel;
    const prev = this.#lanes.get(channel);
    const next =
      prev === undefined
        ? this.#publishNow(req)
        : prev.then(
            () => this.#publishNow(req),
            () => {
              throw new PublishError(
                'not-stored',
                'an earlier publish on this channel failed; not sent, to keep the order',
              );
            },
          );
    this.#lanes.set(channel, next);
    void next.then(noop, noop).then(() => {
      if (this.#lanes.get(channel) === next) this.#lanes.delete(channel);
    });
    return next;
  }

  async #publishNow(req: PublishRequest): Promise<PublishResult> {
    const cmd = this.#requireCmd();
    const master =
      this.#waitReplicas > 0 ? this.#masterOf(this.#keys.meta(req.channel)) : undefined;
    if (master === undefined) {
      const meta = this.#keys.meta(req.channel);
      return this.#batch
        .publish(this.#masterOf(meta) ?? '', req)
        .reply.catch((err: unknown) => {
          // The slot map was stale (a failover, a migration): the message was not run, and alone
          // (a batch of one, routed by its own meta key) it follows MOVED/ASK.
          if (!isNonLocalKey(err)) throw err;
          return runBatch(cmd, this.#keys, [req], this.#metaTtlMs, '', false).then(only);
        })
        .catch((err: unknown) => {
          throw classify(err);
        });
    }
    const { reply, replicated } = await this.#gated
      .publish(master, req)
      .reply.catch((err: unknown) => {
        if (!isNonLocalKey(err)) throw err;
        return this.#gatedAlone(req);
      })
      .catch((err: unknown) => {
        throw classify(err);
      });
    await replicated;
    return { offset: reply.offset, epoch: reply.epoch, duplicate: reply.duplicate };
  }

  /**
   * A gated message retried alone (its batch ran on a master its keys are not on): routed by its
   * own keys, through the gate of its slot's master by the slot map now.
   */
  async #gatedAlone(req: PublishRequest): Promise<Gated> {
    const cmd = this.#requireCmd();
    await this.#refresh();
    const master = this.#masterOf(this.#keys.meta(req.channel));
    if (master === undefined)
      throw new PublishError('not-stored', `no master known for channel ${req.channel}`);
    const { stored, replicated } = this.#gateOf(master).send(
      () => runBatch(cmd, this.#keys, [req], this.#metaTtlMs, '', true).then(only),
      (reply) => (reply.payload === undefined ? undefined : heldOf(this.#keys, req, reply.payload)),
    );
    const reply = await stored;
    return { reply, replicated };
  }

  /**
   * The gate of a shard master. Its WAIT goes on the connection the cluster client sends that
   * master's commands on, so it covers the scripts sent there before it.
   */
  #gateOf(master: string): ReplicaGate {
    const existing = this.#gates.get(master);
    if (existing !== undefined) return existing;
    const cmd = this.#requireCmd();
    const conn = (): Redis | undefined => cmd.nodes('master').find((n) => nodeKey(n) === master);
    const gate = new ReplicaGate(
      {
        wait: (replicas, timeoutMs) => {
          const c = conn();
          return c === undefined
            ? Promise.reject(new Error(`no connection to ${master}`))
            : c.wait(replicas, timeoutMs);
        },
        fanout: (held, verify) => this.#fanout(held, verify),
        ready: () => conn()?.status === 'ready',
      },
      {
        timeoutMs: this.#o.waitTimeoutMs ?? 1000,
        needed: () => Math.min(this.#waitReplicas, this.#replicas.get(master) ?? 0),
      },
    );
    this.#gates.set(master, gate);
    return gate;
  }

  /**
   * What one WAIT of a gate released: one fan-out call per slot (a script's keys and shard
   * channels must share one), in order within it; a call refused (the slot moved since) is sent
   * payload by payload, each routed by its own keys (fanoutHeld). Resolves with those not sent.
   */
  async #fanout(held: readonly HeldPayload[], verify: boolean): Promise<readonly HeldPayload[]> {
    const cmd = this.#requireCmd();
    const bySlot = new Map<number, HeldPayload[]>();
    for (const h of held) {
      const slot = calculateSlot(h.meta);
      const group = bySlot.get(slot);
      if (group === undefined) bySlot.set(slot, [h]);
      else group.push(h);
    }
    const unsent = await Promise.all(
      [...bySlot.values()].map((group) =>
        fanoutOn(cmd, group, verify, (pubsub, payload) => cmd.spublish(pubsub, payload)).catch(
          () => group,
        ),
      ),
    );
    if (unsent.every((u) => u.length === 0)) return [];
    const lost = new Set(unsent.flat());
    return held.filter((h) => lost.has(h));
  }

  async probe(): Promise<void> {
    const cmd = this.#requireCmd();
    // One write per shard this node's channels live on (the probe key carries a channel's tag, so
    // it lands on that shard), or one anywhere when it has none: a shard nobody here uses does not
    // make this node unready.
    const byShard = new Map<string, string>();
    for (const name of this.#desired) {
      const shard = this.#masterOf(name);
      if (shard !== undefined && !byShard.has(shard)) byShard.set(shard, name);
    }
    const keys =
      byShard.size === 0
        ? [this.#probeKey]
        : [...byShard.values()].map((name) => `${this.#probeKey}:{${tagOf(name)}}`);
    await Promise.all(
      keys.map((k) =>
        cmd.set(k, '1', 'PX', 60_000).catch((err: unknown) => {
          const shard = this.#masterOf(k) ?? 'unknown shard';
          throw new Error(`shard ${shard}: ${err instanceof Error ? err.message : String(err)}`, {
            cause: err,
          });
        }),
      ),
    );
  }

  async history(channel: string, query: HistoryQuery): Promise<HistoryResult> {
    const keys = this.#keys;
    const cmd = this.#requireCmd();
    const meta = keys.meta(channel);
    const read = (gated: '0' | '1') =>
      cmd.sbHistoryBuffer(
        meta,
        keys.stream(channel),
        query.sinceOffset ?? -1,
        query.limit,
        query.reverse === true ? 1 : 0,
        newEpoch(),
        this.#metaTtlMs,
        query.untilOffset ?? -1,
        '',
        gated,
      );
    // Confirmed by the gate of the slot's master (its WAIT goes on the connection the read does).
    const master = this.#waitReplicas > 0 ? this.#masterOf(meta) : undefined;
    return parseHistory(
      master === undefined
        ? await read('0')
        : await confirmedRead(this.#gateOf(master), () => read('1')),
    );
  }

  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#timer);
    for (const gate of this.#gates.values()) gate.close();
    this.#desired.clear();
    await Promise.all([...[...this.#links.values()].map((l) => quit(l.conn))]);
    this.#links.clear();
    const cmd = this.#cmd;
    if (cmd !== undefined && cmd.status !== 'end') {
      try {
        await cmd.quit();
      } catch {
        cmd.disconnect();
      }
    }
  }

  /** Subscribes `name` and resolves once its shard master confirmed it. */
  #want(name: string): Promise<void> {
    this.#desired.add(name);
    return this.#enqueue(name, () => this.#place(name, 3));
  }

  #unwant(name: string): Promise<void> {
    this.#desired.delete(name);
    return this.#enqueue(name, async () => {
      for (const link of this.#links.values()) {
        if (!link.held.delete(name)) continue;
        if (link.conn.status === 'ready') await link.conn.sunsubscribe(name).catch(noop);
      }
      if (!this.#desired.has(name)) this.#placed.delete(name);
    });
  }

  #enqueue(name: string, op: () => Promise<void>): Promise<void> {
    const prev = this.#chains.get(name) ?? Promise.resolve();
    const next = prev.then(op, op);
    const tail = next.catch(noop);
    this.#chains.set(name, tail);
    void tail.then(() => {
      if (this.#chains.get(name) === tail) this.#chains.delete(name);
    });
    return next;
  }

  /** Makes the slot's current master hold `name`, retrying after a slot map refresh on MOVED. */
  async #place(name: string, attempts: number): Promise<void> {
    if (!this.#desired.has(name) || this.#closing) return;
    const target = this.#masterOf(name);
    if (target === undefined) throw new Error(`no master known for ${name}`);
    const link = this.#link(target);
    if (!link.held.has(name)) {
      try {
        await link.conn.ssubscribe(name);
      } catch (err) {
        if (attempts <= 1) throw err;
        await this.#refresh();
        return this.#place(name, attempts - 1);
      }
      link.held.add(name);
      if (this.#placed.has(name) && this.#keys.channelOf(name) !== undefined)
        this.#repair(this.#keys.channelOf(name) as string);
      this.#placed.add(name);
    }
    // Wherever else it is held (the old owner after a failover or migration) it must go.
    for (const other of this.#links.values()) {
      if (other === link || !other.held.delete(name)) continue;
      if (other.conn.status === 'ready') void other.conn.sunsubscribe(name).catch(noop);
    }
  }

  /** Channels resubscribed in one event-loop turn reach the handler together. */
  #repair(channel: string): void {
    if (this.#repairs.size === 0)
      setImmediate(() => {
        const channels = [...this.#repairs];
        this.#repairs = new Set();
        this.#o.logger.info({ channels: channels.length }, 'redis cluster: channels resubscribed');
        this.#handler?.onResubscribed(channels);
      });
    this.#repairs.add(channel);
  }

  /**
   * One slot map refresh then one reconcile for a burst of unsolicited sunsubscribes, started
   * RECONCILE_DEBOUNCE_MS after the first; another burst meanwhile runs one more round after it.
   * (One refresh + reconcile per sunsubscribe made a failover at 10,000 channels take 16-43 s to
   * resubscribe: each reconcile walks every wanted name.)
   */
  #reconcileSoon(): void {
    if (this.#reconciling) {
      this.#reconcileAgain = true;
      return;
    }
    this.#reconciling = true;
    setTimeout(() => {
      void this.#refresh().then(() => {
        this.#reconciling = false;
        this.#reconcile();
        if (this.#reconcileAgain) {
          this.#reconcileAgain = false;
          this.#reconcileSoon();
        }
      });
    }, RECONCILE_DEBOUNCE_MS).unref();
  }

  /** Every wanted name not held by its slot's master gets (re)placed; idle links to non-masters close. */
  #reconcile(): void {
    if (this.#closing || this.#cmd === undefined) return;
    for (const name of this.#desired) {
      const target = this.#masterOf(name);
      if (target === undefined || this.#links.get(target)?.held.has(name) === true) continue;
      if (this.#chains.has(name)) continue; // already being placed
      void this.#enqueue(name, () => this.#place(name, 1)).catch((err: unknown) =>
        this.#o.logger.warn(
          { err: err instanceof Error ? err.message : String(err), name },
          'redis cluster: resubscribe failed; retrying',
        ),
      );
    }
    const masters = new Set(this.#cmd.slots.map((s) => s[0]));
    const replicas = new Map<string, number>();
    for (const s of this.#cmd.slots) if (s[0] !== undefined) replicas.set(s[0], s.length - 1);
    this.#replicas = replicas;
    // A gate whose master is no longer one: what it holds goes to the slots' new masters.
    for (const [key, gate] of this.#gates)
      if (!masters.has(key) && gate.drain()) this.#gates.delete(key);
    for (const [key, link] of this.#links) {
      if (masters.has(key) || link.held.size > 0) continue;
      this.#links.delete(key);
      link.conn.disconnect();
    }
  }

  #refresh(): Promise<void> {
    return new Promise((resolve) => this.#requireCmd().refreshSlotsCache(() => resolve()));
  }

  #masterOf(name: string): string | undefined {
    return this.#cmd?.slots[calculateSlot(name)]?.[0];
  }

  #link(key: string): ShardLink {
    const existing = this.#links.get(key);
    if (existing !== undefined) return existing;
    const i = key.lastIndexOf(':');
    const conn = new Redis({
      host: key.slice(0, i),
      port: Number(key.slice(i + 1)),
      connectionName: 'switchboard-sub',
      // We resubscribe ourselves, on the slot's current master, which may not be this one.
      autoResubscribe: false,
      maxRetriesPerRequest: null,
      // A subscribe queued for a dead master must give up, so the next attempt goes to its successor.
      commandTimeout: 2000,
      retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), 2000),
    });
    const link: ShardLink = { key, conn, held: new Set() };
    const log = this.#o.logger;
    conn.on('error', (err: Error) =>
      log.warn({ err: err.message, shard: key }, 'redis shard subscriber error'),
    );
    conn.on('close', () => {
      link.held.clear();
    });
    conn.on('ready', () => this.#reconcile());
    // ioredis 6: an unsolicited sunsubscribe (the slot left this master). Which name it was is not
    // said, so every name held here is checked against a fresh slot map. A failover sends one
    // per name the shard held (thousands at once): they share one refresh and one reconcile.
    conn.on('moved', () => {
      link.held.clear();
      this.#reconcileSoon();
    });
    conn.on('smessageBuffer', (pubsub: Buffer, payload: Buffer) => {
      if (this.#handler !== undefined) deliver(this.#keys, this.#handler, pubsub, payload);
    });
    this.#links.set(key, link);
    return link;
  }

  #requireCmd(): Cluster & ScriptCommands {
    if (this.#cmd === undefined) throw new Error('RedisClusterBroker is not started');
    return this.#cmd;
  }
}

/** The hash tag inside a pub/sub name of ours (`...{tag}...`), or the whole name. */
function tagOf(name: string): string {
  const a = name.indexOf('{');
  const b = name.indexOf('}', a + 1);
  return a >= 0 && b > a + 1 ? name.slice(a + 1, b) : name;
}

function noop(): void {}

/** `host:port` of a cluster node connection, as the slot map names it. */
function nodeKey(node: Redis): string {
  return `${node.options.host ?? ''}:${node.options.port ?? ''}`;
}

/** How long #reconcileSoon waits for the rest of a burst of unsolicited sunsubscribes. */
const RECONCILE_DEBOUNCE_MS = 50;

/** The reply of a batch of one: the message's reply, or its error thrown. */
function only(replies: BatchReply): PublishReply {
  const r = replies[0];
  if (r === undefined) throw new Error('publish batch reply too short');
  if (r instanceof Error) throw r;
  return r;
}
