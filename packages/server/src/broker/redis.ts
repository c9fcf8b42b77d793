import { Redis, type RedisOptions } from 'ioredis';
import {
  channelError,
  PRESENCE_STREAM_PREFIX,
  closeMessageFrameUnpositioned,
  encodeMessageHead,
} from '@switchboard/protocol';
import type { Logger } from 'pino';
import type {
  Broker,
  BrokerHandler,
  HistoryEntry,
  HistoryQuery,
  HistoryResult,
  PublishRequest,
  PublishResult,
} from './broker.js';
import type { BridgeMetrics } from './bridge-metrics.js';
import { newEpoch, uniqueIds } from './epoch.js';
import { PublishError } from './publish-error.js';
import { redisGlobMatcher } from './redis-glob.js';
import { createRedisKeys, type RedisKeys } from './redis-keys.js';
import { connectRedis, type RedisTarget } from './redis-target.js';
import { HISTORY_LUA, fanoutLua, fanoutManyArgs, fanoutManyLua } from './redis-scripts.js';
import { ReplicaGate, fanoutHeld, type HeldPayload } from './redis-wait.js';
import {
  DEFAULT_PUBLISH_BATCH,
  publishBatchLua,
  PublishBatcher,
  runBatch,
  type BatchCommand,
  type BatchReply,
  type PublishReply,
} from './redis-batch.js';

export interface RedisBrokerOptions {
  /** redis://[user:password@]host:port[/db] */
  readonly url: string;
  /** Sentinel mode (redis-target.ts); `url` then supplies only credentials and database. */
  readonly target?: RedisTarget;
  /** Prefix of every key and pub/sub channel, so deployments can share one Redis. */
  readonly prefix: string;
  /**
   * Glob patterns of plain Redis channels whose raw PUBLISHes are delivered to the channel of the
   * same name (the classic tutorial's publishers). Operator input only: client input never becomes a pattern.
   */
  readonly bridgePatterns?: readonly string[];
  readonly logger: Logger;
  /** How long a command may take before it fails (publish then reports NOT_AVAILABLE). */
  readonly commandTimeoutMs?: number;
  /** How long a channel's epoch and offset outlive its last publish. */
  readonly metaTtlMs?: number;
  /**
   * Replicas a publish must have reached before it is acknowledged and fanned out (`WAIT`, one in
   * flight for all publishes, redis-wait.ts); fewer by `waitTimeoutMs` answers outcome unknown
   * (118) and the message goes out at the next confirming WAIT. Default 1 with Sentinel, 0 otherwise
   * (a RedisBroker on one Redis has no replica to wait for unless told).
   */
  readonly waitReplicas?: number;
  readonly waitTimeoutMs?: number;
  /**
   * Most publishes one script call carries (redis-batch.ts); default DEFAULT_PUBLISH_BATCH. Gated
   * publishes (waitReplicas > 0) are batched too, their payloads handed to the gate in order.
   */
  readonly publishBatch?: number;
}

export interface ScriptCommands extends BatchCommand {
  sbFanout(
    meta: string,
    stream: string,
    pubsub: string,
    payload: string,
    size: number,
  ): Promise<number>;
  /** fanoutManyLua: numkeys, KEYS, ARGV as fanoutManyArgs builds them. */
  sbFanoutMany(...args: (string | number)[]): Promise<number>;
  sbHistoryBuffer(
    meta: string,
    stream: string,
    since: number,
    limit: number,
    reverse: number,
    epoch: string,
    metaTtlMs: number,
    until: number,
    lineage: string,
    gated: '0' | '1',
  ): Promise<Buffer[] | (number | Buffer)[]>;
}

const SPACE = 0x20;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;

/**
 * Redis as fan-out and persistence. One command connection and one subscriber connection per node,
 * whatever the number of channels. Publish is one Lua script (see redis-scripts.ts).
 */
export class RedisBroker implements Broker {
  readonly name = 'redis';
  readonly #options: RedisBrokerOptions;
  readonly #keys: RedisKeys;
  readonly #metaTtlMs: number;
  #cmd: (Redis & ScriptCommands) | undefined;
  #sub: Redis | undefined;
  #handler: BrokerHandler | undefined;
  /** Channels the Node wants; what is resubscribed after a reconnect. */
  readonly #desired = new Set<string>();
  /** Control topics subscribed; resubscribed after a reconnect like channels. */
  readonly #controls = new Set<string>();
  #closing = false;
  readonly #probeKey: string;
  /** Since when the bridge patterns have not been subscribed (the subscriber link was lost). */
  #bridgeDownSince: number | undefined;
  #bridgeMetrics: BridgeMetrics | undefined;
  readonly #bridgeCovers: (channel: string) => boolean;
  readonly #waitReplicas: number;
  /** The publishes of one turn as one script call per lineage (redis-batch.ts). */
  readonly #batch: PublishBatcher;
  /** The same, gated: each script's payloads go to the gate (redis-wait.ts). */
  readonly #gated: PublishBatcher<Gated>;
  /** Publish after WAIT (redis-wait.ts), when waitReplicas > 0. */
  #gate: ReplicaGate | undefined;
  /** Publishes held unsent while the master is away (#park), in arrival order. */
  readonly #parked: Parked[] = [];
  #parkTimer: NodeJS.Timeout | undefined;
  /** Replicas in sync at the last read of the replication state on this link. */
  #online = 0;
  /**
   * Sentinel mode: the current master's replication id, then those of the masters it descends
   * from as this node saw them (master_replid2 after each promotion): the scripts' lineage.
   */
  #lineage: string[] = [];
  /** The current master's replication state, read per link and every second (#watchReplication). */
  #replication: Promise<Replication> | undefined;
  /** Bumped when the command link closes: a read from the old link is not kept. */
  #link = 0;
  #replicationTimer: NodeJS.Timeout | undefined;
  /** Whether publishes are being acknowledged without a replica (logged once per change). */
  #unreplicated = false;
  /** A replica confirmed a WAIT on this link (so its loss is news, not the steady state). */
  #sawReplica = false;
  /** When this link's master lost its replica in sync (a short WAIT or none online). */
  #replicaLostAt: number | undefined;

  constructor(options: RedisBrokerOptions) {
    this.#options = options;
    this.#keys = createRedisKeys(options.prefix);
    this.#probeKey = this.#keys.probe(newEpoch());
    this.#metaTtlMs = options.metaTtlMs ?? 24 * 60 * 60 * 1000;
    const matchers = (options.bridgePatterns ?? []).map(redisGlobMatcher);
    this.#bridgeCovers = (channel) => matchers.some((m) => m(channel));
    this.#waitReplicas = options.waitReplicas ?? (options.target?.mode === 'sentinel' ? 1 : 0);
    const limit = options.publishBatch ?? DEFAULT_PUBLISH_BATCH;
    // Grouped by lineage: a batch carries one (publishes of one turn almost always share it).
    this.#batch = new PublishBatcher({
      limit,
      send: (lineage, batch) =>
        runBatch(this.#requireCmd(), this.#keys, batch, this.#metaTtlMs, lineage, false),
    });
    this.#gated = new PublishBatcher<Gated>({
      limit,
      send: (lineage, batch) => {
        const cmd = this.#requireCmd();
        const gate = this.#gate as ReplicaGate;
        return sendGated(gate, this.#keys, batch, (taken) =>
          runBatch(cmd, this.#keys, taken, this.#metaTtlMs, lineage, true),
        );
      },
    });
  }

  /** Counts bridged messages and the bridge's loss windows on `metrics`. */
  instrumentBridge(metrics: BridgeMetrics): void {
    this.#bridgeMetrics = metrics;
  }

  get ready(): boolean {
    return this.#cmd?.status === 'ready' && this.#sub?.status === 'ready';
  }

  async start(handler: BrokerHandler): Promise<void> {
    this.#handler = handler;
    const log = this.#options.logger;
    const base = {
      lazyConnect: true,
      // Retry forever with a capped backoff: a node outlives Redis restarts.
      retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), 2000),
      connectionName: 'switchboard',
    } satisfies RedisOptions;
    const target: RedisTarget = this.#options.target ?? { mode: 'single', url: this.#options.url };
    const cmd = connectRedis(target, {
      ...base,
      // Fail publishes at once while Redis is away instead of queueing them: a queued publish could
      // be stored after its publisher was told it failed.
      enableOfflineQueue: false,
      commandTimeout: this.#options.commandTimeoutMs ?? 5000,
      maxRetriesPerRequest: 1,
      // A script or WAIT in flight when the link dropped fails (outcome unknown) instead of being
      // sent again blindly to whichever master answers next.
      autoResendUnfulfilledCommands: false,
    }) as Redis & ScriptCommands;
    cmd.defineCommand('sbPublishBatch', { numberOfKeys: 1, lua: publishBatchLua('PUBLISH') });
    cmd.defineCommand('sbFanout', { numberOfKeys: 2, lua: fanoutLua('PUBLISH') });
    cmd.defineCommand('sbFanoutMany', { lua: fanoutManyLua('PUBLISH') });
    cmd.defineCommand('sbHistory', { numberOfKeys: 2, lua: HISTORY_LUA });
    // We resubscribe ourselves from #desired: it is the Node's view, which ioredis's own set is not.
    const sub = connectRedis(target, {
      ...base,
      autoResubscribe: false,
      maxRetriesPerRequest: null,
    }) as Redis;
    this.#cmd = cmd;
    this.#sub = sub;
    if (this.#waitReplicas > 0) this.#gate = this.#newGate(cmd);
    // Without the resend, ioredis drops what was in flight on a lost link unanswered (until the
    // command timeout): fail it now, as outcome unknown (it may have run).
    cmd.on('close', () => failInFlight(cmd));
    if (this.#tracksReplication()) {
      cmd.on('close', () => {
        this.#link++;
        this.#replication = undefined;
        this.#online = 0;
        this.#sawReplica = false;
        this.#replicaLostAt = undefined;
        this.#gate?.linkLost();
      });
      cmd.on('ready', () => this.#gate?.kick());
      this.#replicationTimer = setInterval(() => this.#watchReplication(cmd), 1000);
      this.#replicationTimer.unref();
    }
    for (const [role, conn] of [
      ['command', cmd],
      ['subscriber', sub],
    ] as const) {
      conn.on('error', (err: Error) =>
        log.warn({ err: err.message, role }, 'redis connection error'),
      );
      conn.on('end', () => {
        if (!this.#closing) log.error({ role }, 'redis connection ended');
      });
      conn.on('reconnecting', () => log.warn({ role }, 'redis reconnecting'));
    }
    sub.on('messageBuffer', (channel: Buffer, message: Buffer) =>
      this.#onMessage(channel, message),
    );
    sub.on('pmessageBuffer', (_pattern: string, channel: Buffer, message: Buffer) =>
      this.#onBridged(channel, message),
    );
    await Promise.all([cmd.connect(), sub.connect()]);
    const patterns = this.#options.bridgePatterns ?? [];
    if (patterns.length > 0) {
      await sub.psubscribe(...patterns);
      // Redis pub/sub is fire-and-forget: a raw PUBLISH sent while no bridge subscription is
      // held reaches nobody. From this moment until the subscription is back, that is a loss.
      sub.on('close', () => {
        if (!this.#closing) this.#bridgeDownSince ??= Date.now();
      });
    }
    sub.on('ready', () => this.#resubscribe());
  }

  subscribe(channel: string): Promise<void> {
    this.#desired.add(channel);
    return this.#requireSub().subscribe(this.#keys.pubsub(channel)).then(noop);
  }

  unsubscribe(channel: string): Promise<void> {
    this.#desired.delete(channel);
    return this.#requireSub().unsubscribe(this.#keys.pubsub(channel)).then(noop);
  }

  publish(req: PublishRequest): Promise<PublishResult> {
    // No WAIT and no lineage (the default on one Redis): nothing to await before the batcher, so
    // no async hops per publish. Decided by configuration, so every publish takes the same path.
    if (this.#gate === undefined && this.#cmd !== undefined && !this.#tracksReplication())
      return this.#batch.publish('', req).reply.catch(rejectClassified);
    return this.#publishGated(req);
  }

  async #publishGated(req: PublishRequest): Promise<PublishResult> {
    if (this.#gate === undefined) return this.#publish(req);
    try {
      return await this.#publish(req);
    } catch (err) {
      // Those of the channel still held unsent came after it: sent now they would be stored
      // before its retry. They fail too, unsent, and the publisher re-sends them all in order.
      this.#dropParked(req.channel);
      throw err;
    }
  }

  async #publish(req: PublishRequest): Promise<PublishResult> {
    const cmd = this.#requireCmd();
    if (this.#gate !== undefined && (this.#parked.length > 0 || !this.#writable(cmd)))
      await this.#park(cmd, req.channel);
    const known = this.#replicationOf(cmd);
    const { lineage } = 'then' in known ? await known : known;
    const lostAt = this.#replicaLostAt;
    // A master that just lost its replica is most likely being failed over: what it stored now
    // would be discarded when it resyncs as a replica. Refused unsent until the switch (or, with
    // no failover, until REPLICA_LOSS_GRACE_MS passed and it acknowledges on its own).
    if (lostAt !== undefined && Date.now() - lostAt < REPLICA_LOSS_GRACE_MS)
      throw new PublishError(
        'not-stored',
        'the Redis master lost its replica in sync (a failover is likely under way): not stored',
      );
    if (this.#gate === undefined)
      return this.#batch.publish(lineage, req).reply.catch(rejectClassified);
    const { reply, replicated } = await this.#gated
      .publish(lineage, req)
      .reply.catch((err: unknown) => {
        throw classify(err);
      });
    await replicated;
    return { offset: reply.offset, epoch: reply.epoch, duplicate: reply.duplicate };
  }

  /**
   * Whether a publish can be sent now: the command link is up, and its master did not just lose
   * its replica (then it is most likely being failed over).
   */
  #writable(cmd: Redis): boolean {
    const lostAt = this.#replicaLostAt;
    return (
      cmd.status === 'ready' &&
      (lostAt === undefined || Date.now() - lostAt >= REPLICA_LOSS_GRACE_MS)
    );
  }

  /**
   * Holds a publish, unsent, while the master is away or being failed over (with the gate on):
   * in arrival order, and at most PARK_MS, after which it is refused as not stored. A Sentinel
   * switch takes a few seconds; failing fast would make publishers exhaust their retries.
   */
  #park(cmd: Redis, channel: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const parked: Parked = {
        channel,
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.#parked.indexOf(parked);
          if (i >= 0) this.#parked.splice(i, 1);
          reject(new PublishError('not-stored', 'the Redis master stayed unavailable: not stored'));
        }, PARK_MS),
      };
      this.#parked.push(parked);
      this.#parkTimer ??= setInterval(() => this.#unpark(cmd), PARK_POLL_MS);
    });
  }

  #dropParked(channel: string): void {
    for (let i = this.#parked.length - 1; i >= 0; i--) {
      const p = this.#parked[i] as Parked;
      if (p.channel !== channel) continue;
      this.#parked.splice(i, 1);
      clearTimeout(p.timer);
      p.reject(
        new PublishError(
          'not-stored',
          'an earlier publish on this channel failed; not sent, to keep the order',
        ),
      );
    }
  }

  #unpark(cmd: Redis): void {
    if (this.#parked.length === 0 || this.#closing) {
      clearInterval(this.#parkTimer);
      this.#parkTimer = undefined;
      if (this.#closing)
        for (const p of this.#parked.splice(0)) {
          clearTimeout(p.timer);
          p.reject(new PublishError('not-stored', 'the broker closed: not stored'));
        }
      return;
    }
    if (!this.#writable(cmd)) return;
    // In arrival order, in this turn: a publish arriving later queues behind them (publish()).
    for (const p of this.#parked.splice(0)) {
      clearTimeout(p.timer);
      p.resolve();
    }
  }

  #newGate(cmd: Redis & ScriptCommands): ReplicaGate {
    return new ReplicaGate(
      {
        wait: (replicas, timeoutMs) => cmd.wait(replicas, timeoutMs),
        fanout: (held, verify) =>
          fanoutOn(cmd, held, verify, (pubsub, payload) => cmd.publish(pubsub, payload)),
        ready: () => cmd.status === 'ready',
      },
      {
        timeoutMs: this.#options.waitTimeoutMs ?? 1000,
        needed: () => {
          if (this.#online > 0) return Math.min(this.#waitReplicas, this.#online);
          // Believed alone: asked again before each WAIT (a replica that just came online must
          // be waited for at once, not at the next periodic read).
          return this.#readReplication(cmd).then(() => this.#neededAlone());
        },
        onWait: (acks, needed) => {
          if (acks === undefined || needed === 0) return;
          if (acks >= needed) this.#sawReplica = true;
          // Only a replica that confirmed on this link counts as lost: one still syncing to a
          // freshly promoted master is not a failover of this one.
          else if (this.#sawReplica) this.#replicaLostAt ??= Date.now();
        },
      },
    );
  }

  /**
   * Replicas to wait for with none in sync now: a master acknowledges on its own (waiting could
   * only time out, and no replica a failover could promote has less), unless it just lost the one
   * it had, when it is most likely being failed over (see publish).
   */
  #neededAlone(): number {
    if (this.#online > 0) return Math.min(this.#waitReplicas, this.#online);
    const lostAt = this.#replicaLostAt;
    return lostAt !== undefined && Date.now() - lostAt < REPLICA_LOSS_GRACE_MS
      ? this.#waitReplicas
      : 0;
  }

  #tracksReplication(): boolean {
    return this.#options.target?.mode === 'sentinel' || this.#waitReplicas > 0;
  }

  /**
   * The master's replication id and its replicas in sync. A promoted replica starts a new id, so
   * the scripts see that a channel's last writes were made under another master (Sentinel mode
   * only). A master with no replica in sync acknowledges on its own: waiting could only time out,
   * and it leaves no replica a failover could promote with less.
   */
  #replicationOf(cmd: Redis): Promise<Replication> | Replication {
    if (!this.#tracksReplication()) return UNTRACKED;
    return (this.#replication ??= this.#readReplication(cmd));
  }

  #readReplication(cmd: Redis): Promise<Replication> {
    const sentinel = this.#options.target?.mode === 'sentinel';
    const link = this.#link;
    const read: Promise<Replication> = cmd.info('replication').then(
      (info) => {
        const r = parseReplication(info, sentinel);
        if (link === this.#link) {
          this.#online = r.online;
          if (sentinel) this.#lineage = continueLineage(this.#lineage, r);
          if (r.online > 0) this.#replicaLostAt = undefined;
          else if (this.#sawReplica) this.#replicaLostAt ??= Date.now();
        }
        const unreplicated = this.#waitReplicas > 0 && r.online === 0;
        if (unreplicated !== this.#unreplicated) {
          this.#unreplicated = unreplicated;
          const log = this.#options.logger;
          if (unreplicated)
            log.warn(
              'redis master has no replica in sync: publishes are acknowledged unreplicated',
            );
          else log.info({ replicas: r.online }, 'redis replica in sync: publishes WAIT for it');
        }
        return { ...r, lineage: link === this.#link ? this.#lineage.join(' ') : r.lineage };
      },
      (err: unknown) => {
        if (this.#replication === read) this.#replication = undefined;
        throw classify(err);
      },
    );
    return read;
  }

  /** Re-reads the replication state; publishes keep the last one meanwhile. */
  #watchReplication(cmd: Redis): void {
    if (cmd.status !== 'ready' || this.#replication === undefined) return;
    const link = this.#link;
    const next = this.#readReplication(cmd);
    next.then(() => {
      if (link === this.#link) this.#replication = next;
    }, noop);
  }

  async probe(): Promise<void> {
    // SET is refused under maxmemory with noeviction like every write, so it stands for them.
    await this.#requireCmd().set(this.#probeKey, '1', 'PX', 60_000);
  }

  async history(channel: string, query: HistoryQuery): Promise<HistoryResult> {
    const keys = this.#keys;
    const cmd = this.#requireCmd();
    const known = this.#replicationOf(cmd);
    const { lineage } = 'then' in known ? await known : known;
    const gate = this.#gate;
    const read = (gated: '0' | '1') =>
      cmd.sbHistoryBuffer(
        keys.meta(channel),
        keys.stream(channel),
        query.sinceOffset ?? -1,
        query.limit,
        query.reverse === true ? 1 : 0,
        newEpoch(),
        this.#metaTtlMs,
        query.untilOffset ?? -1,
        lineage,
        gated,
      );
    return parseHistory(
      gate === undefined ? await read('0') : await confirmedRead(gate, () => read('1')),
    );
  }

  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#replicationTimer);
    this.#gate?.close();
    this.#unpark(this.#requireCmd());
    this.#desired.clear();
    await Promise.all([quit(this.#sub), quit(this.#cmd)]);
  }

  #resubscribe(): void {
    const channels = [...this.#desired];
    this.#options.logger.info(
      { channels: channels.length },
      'redis subscriber ready again: resubscribing',
    );
    const sub = this.#requireSub();
    // autoResubscribe is off, so the bridge patterns are ours to restore too: a new connection
    // holds no subscription at all, and without this a lost link (CLIENT KILL, Redis restart)
    // would silently end the delivery of raw PUBLISHes for good.
    const patterns = this.#options.bridgePatterns ?? [];
    const controls = [...this.#controls].map((t) => this.#keys.control(t));
    const done = Promise.all([
      controls.length === 0 ? undefined : sub.subscribe(...controls),
      channels.length === 0
        ? undefined
        : sub.subscribe(...channels.map((c) => this.#keys.pubsub(c))),
      patterns.length === 0 ? undefined : sub.psubscribe(...patterns),
    ]);
    done.then(
      () => {
        this.#bridgeRestored();
        this.#handler?.onResubscribed(channels);
      },
      (err: unknown) => this.#options.logger.error({ err }, 'redis resubscribe failed'),
    );
  }

  publishControl(topic: string, payload: string): Promise<number> {
    return this.#requireCmd().publish(this.#keys.control(topic), payload);
  }

  subscribeControl(topic: string): Promise<void> {
    this.#controls.add(topic);
    return this.#requireSub().subscribe(this.#keys.control(topic)).then(noop);
  }

  unsubscribeControl(topic: string): Promise<void> {
    this.#controls.delete(topic);
    return this.#requireSub().unsubscribe(this.#keys.control(topic)).then(noop);
  }

  #onMessage(pubsub: Buffer, payload: Buffer): void {
    if (this.#handler !== undefined) deliver(this.#keys, this.#handler, pubsub, payload);
  }

  /**
   * The bridge patterns are subscribed again: says so once per loss, before any later bridged
   * message is delivered (pmessages read with the PSUBSCRIBE reply run before its promise settles).
   */
  #bridgeRestored(): void {
    const from = this.#bridgeDownSince;
    if (from === undefined) return;
    this.#bridgeDownSince = undefined;
    const until = Date.now();
    this.#bridgeMetrics?.gaps.inc();
    this.#bridgeMetrics?.gapSeconds.inc((until - from) / 1000);
    this.#options.logger.warn(
      { patterns: this.#options.bridgePatterns, lostMs: until - from, from, until },
      'redis bridge resubscribed: raw PUBLISHes sent while it was down are lost; subscribers of bridged channels are told (event discontinuity)',
    );
    this.#handler?.onBridgeGap?.(this.#bridgeCovers, { from, until });
  }

  #onBridged(pubsub: Buffer, payload: Buffer): void {
    if (this.#bridgeDownSince !== undefined) this.#bridgeRestored();
    this.#bridgeMetrics?.messages.inc();
    const channel = pubsub.toString('utf8');
    if (
      this.#handler === undefined ||
      channel.startsWith(this.#keys.prefix) ||
      channelError(channel) !== undefined
    )
      return;
    const text = payload.toString('utf8');
    let dataJson: string;
    try {
      // Re-serialized so the frame holds no raw newline (the batch separator).
      dataJson = JSON.stringify(JSON.parse(text));
    } catch {
      dataJson = JSON.stringify(text);
    }
    const head = encodeMessageHead({ channel, dataJson, id: bridgeId(), timestamp: Date.now() });
    this.#handler.onPublication(
      channel,
      Buffer.from(closeMessageFrameUnpositioned(head)),
      undefined,
      undefined,
      // A raw PUBLISH has no assignment: it is measured from its arrival here.
      Date.now(),
    );
  }

  #requireCmd(): Redis & ScriptCommands {
    if (this.#cmd === undefined) throw new Error('RedisBroker is not started');
    return this.#cmd;
  }

  #requireSub(): Redis {
    if (this.#sub === undefined) throw new Error('RedisBroker is not started');
    return this.#sub;
  }
}

function noop(): void {}

/** How long publishes are refused after the master lost its replica in sync (see publish). */
const REPLICA_LOSS_GRACE_MS = 10_000;

/** Longest a publish is held unsent for the master to come back (#park); below the SDK's 10 s. */
const PARK_MS = 8000;
const PARK_POLL_MS = 20;

interface Parked {
  readonly channel: string;
  resolve(): void;
  reject(err: unknown): void;
  readonly timer: NodeJS.Timeout;
}

interface Replication {
  /**
   * Sentinel mode: the lineage the scripts get (master_replid, then the ids of the masters it
   * descends from, space-separated; see LINEAGE_LUA in redis-scripts.ts), else '' (not tracked).
   */
  readonly lineage: string;
  /** master_replid2: the replication id this master continued when it was promoted ('' none). */
  readonly parent: string;
  /** Replicas in sync (state=online). */
  readonly online: number;
}

const UNTRACKED: Replication = { lineage: '', parent: '', online: 0 };

/** The part of `INFO replication` the publish path uses. */
export function parseReplication(info: string, withLineage: boolean): Replication {
  const lineage = withLineage ? (/^master_replid:(\w+)/m.exec(info)?.[1] ?? '') : '';
  const parent = withLineage ? (/^master_replid2:(\w+)/m.exec(info)?.[1] ?? '') : '';
  const online = info.match(/^slave\d+:.*state=online/gm)?.length ?? 0;
  return { lineage, parent: /^0+$/.test(parent) ? '' : parent, online };
}

/** Masters of a lineage kept: enough for a few failovers between two writes of a channel. */
const LINEAGE_DEPTH = 8;

/**
 * The lineage after reading `r` (whose `lineage` is its master_replid alone): unchanged for the
 * same master; extended when the master continues one of the lineage (a promoted replica names
 * its old master's id as master_replid2); else it starts again from this master and its parent.
 */
export function continueLineage(known: readonly string[], r: Replication): string[] {
  if (r.lineage === '') return [];
  if (known[0] === r.lineage) return [...known];
  if (r.parent !== '' && known.includes(r.parent))
    return [r.lineage, ...known.slice(known.indexOf(r.parent), LINEAGE_DEPTH - 1)];
  return r.parent === '' ? [r.lineage] : [r.lineage, r.parent];
}

/** The reply of HISTORY_LUA: `{offset, epoch, id1, frame1, ...}`. */
export function parseHistory(reply: Buffer[] | (number | Buffer)[]): HistoryResult {
  const position = { offset: Number(reply[0]), epoch: String(reply[1]) };
  const entries: HistoryEntry[] = [];
  for (let i = 2; i + 1 < reply.length; i += 2) {
    const id = String(reply[i]);
    entries.push({ offset: Number(id.slice(0, id.indexOf('-'))), frame: reply[i + 1] as Buffer });
  }
  return { entries, position };
}

/** A message on one of our pub/sub channels, to the handler: a publication or a control message. */
export function deliver(
  keys: RedisKeys,
  handler: BrokerHandler,
  pubsub: Buffer,
  payload: Buffer,
): void {
  const name = pubsub.toString('latin1');
  const channel = keys.channelOf(name);
  if (channel === undefined) {
    const topic = keys.topicOf(name);
    if (topic !== undefined) handler.onControl(topic, payload);
    return;
  }
  // Presence events (published by the presence store's scripts) are whole frames, unpositioned.
  if (channel.startsWith(PRESENCE_STREAM_PREFIX)) {
    handler.onPublication(channel, payload, undefined, undefined);
    return;
  }
  // payload: `<offset> <epoch> <assigned µs> <frame>`; a frame starts with '{', so a payload
  // of a node from before the assignment time (`<offset> <epoch> <frame>`) still reads.
  const a = payload.indexOf(SPACE);
  const b = payload.indexOf(SPACE, a + 1);
  if (a <= 0 || b <= a) return;
  const offset = Number(payload.toString('latin1', 0, a));
  const epoch = payload.toString('latin1', a + 1, b);
  let start = b + 1;
  let assignedAt: number | undefined;
  const first = payload[start];
  if (first !== undefined && first >= DIGIT_0 && first <= DIGIT_9) {
    const c = payload.indexOf(SPACE, start);
    if (c < 0) return;
    assignedAt = Number(payload.toString('latin1', start, c)) / 1000;
    start = c + 1;
  }
  handler.onPublication(channel, payload.subarray(start), offset, epoch, assignedAt);
}

/** A gated publish stored: its reply, and when a WAIT confirmed it (redis-wait.ts). */
export interface Gated {
  readonly reply: PublishReply;
  readonly replicated: Promise<void>;
}

/**
 * Runs one gated batch script through `gate` (`call` sends `taken`, the first messages of `batch`
 * the gate has room for): each stored message's payload is held in storage order; the
 * replies, one per message of `batch`, carry the script's `replicated`. Messages beyond the room
 * are refused unsent (108), as a single gated publish would be.
 */
export function sendGated(
  gate: ReplicaGate,
  keys: RedisKeys,
  batch: readonly PublishRequest[],
  call: (taken: readonly PublishRequest[]) => Promise<BatchReply>,
): Promise<readonly (Gated | Error)[]> {
  const taken = Math.min(batch.length, gate.room);
  const refused = (): PublishError =>
    new PublishError('not-stored', 'too many stored messages wait for their replicas: not stored');
  if (taken === 0) return Promise.resolve(batch.map(refused));
  const first = batch.slice(0, taken);
  const { stored, replicated } = gate.sendMany(
    taken,
    () => call(first),
    (replies) =>
      replies.map((r, i) => {
        const req = batch[i];
        if (r instanceof Error || req === undefined || r.payload === undefined) return undefined;
        return heldOf(keys, req, r.payload);
      }),
  );
  return stored.then((replies) =>
    batch.map((_, i): Gated | Error => {
      if (i >= taken) return refused();
      const r = replies[i];
      if (r === undefined) return new Error('publish batch reply too short');
      return r instanceof Error ? r : { reply: r, replicated };
    }),
  );
}

/**
 * fanoutHeld on one connection: many payloads in one fanoutManyLua call, one alone by `publish`
 * (PUBLISH, or SPUBLISH on Cluster) or, checked against the master's entry, by fanoutLua.
 */
export function fanoutOn(
  cmd: ScriptCommands,
  held: readonly HeldPayload[],
  verify: boolean,
  publish: (pubsub: string, payload: string) => Promise<unknown>,
): Promise<readonly HeldPayload[]> {
  return fanoutHeld(
    held,
    (many) => cmd.sbFanoutMany(...fanoutManyArgs(many, verify)),
    (h) =>
      verify
        ? cmd.sbFanout(h.meta, h.stream, h.pubsub, h.payload, h.historySize)
        : publish(h.pubsub, h.payload),
  );
}

/**
 * A read whose reply is handed over only once a WAIT after it confirmed (the script makes a
 * value-preserving write so the WAIT covers what it read): otherwise a resume could hand a
 * subscriber an entry, or a position, that a failover then discards and the new master gives to
 * another message at the same offset. A short WAIT fails the read (the caller answers 108, the
 * client retries); with no replica in sync WAIT asks for none, as for publishes.
 */
export async function confirmedRead<R>(gate: ReplicaGate, read: () => Promise<R>): Promise<R> {
  if (gate.room < 1)
    throw new Error('too many writes wait for their replicas: the history read was not made');
  const { stored, replicated } = gate.send(read, () => undefined);
  const reply = await stored;
  try {
    await replicated;
  } catch (err) {
    throw new Error(
      `the replicas did not confirm the history read in time: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
  return reply;
}

/** What the gate holds of a stored message. */
export function heldOf(keys: RedisKeys, req: PublishRequest, payload: string): HeldPayload {
  return {
    pubsub: keys.pubsub(req.channel),
    payload,
    meta: keys.meta(req.channel),
    stream: keys.stream(req.channel),
    historySize: req.history.size,
  };
}

/**
 * The outcome of a failed publish script: a Redis error reply (OOM, BUSY, NOSCRIPT...) means it
 * wrote nothing (its first write is the one refused), a command that never left (offline queue
 * off, not connected) means it did not run; anything else (the command timeout, the connection
 * lost while the command was in flight) means it may have run.
 */
export function classify(err: unknown): PublishError {
  if (err instanceof PublishError) return err;
  const e = err instanceof Error ? err : new Error(String(err));
  if (e.name === 'ReplyError' || /isn't writeable|not connected|is closed\.?$/i.test(e.message))
    return new PublishError('not-stored', e.message, { cause: e });
  return new PublishError('unknown', e.message, { cause: e });
}

/**
 * Rejects the commands `conn` sent and has no reply for. Called on 'close' (emitted a tick after
 * the link dropped, before any reconnect): with autoResendUnfulfilledCommands off, ioredis would
 * otherwise forget them and leave their promises to the command timeout (ioredis 5.11 drops its
 * stash of them on reconnect unsettled: redis/ioredis#2193, fixed upstream by #2194). flushQueue
 * is ioredis's own, unexported; without it we fall back to that timeout.
 */
export function failInFlight(conn: Redis): void {
  const flush = (conn as unknown as Partial<Flushable>).flushQueue;
  if (typeof flush !== 'function') return;
  flush.call(conn, new Error('the Redis link was lost with the command in flight'), {
    offlineQueue: false,
  });
}

interface Flushable {
  flushQueue(err: Error, options: { offlineQueue: boolean; commandQueue?: boolean }): void;
}

export async function quit(conn: Redis | undefined): Promise<void> {
  if (conn === undefined || conn.status === 'end') return;
  try {
    await conn.quit();
  } catch {
    conn.disconnect();
  }
}

/** Ids for bridged messages: unique per node, no randomness per message. */
const bridgeId = uniqueIds('b-');

function rejectClassified(err: unknown): never {
  throw classify(err);
}
