import { DisconnectCode, encodePublishedMessage, presenceEventAction } from '@switchboard/protocol';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { createHttpHandler } from './api/http.js';
import type { Broker } from './broker/broker.js';
import { MemoryBroker } from './broker/memory.js';
import { createBridgeMetrics } from './broker/bridge-metrics.js';
import { RedisBroker } from './broker/redis.js';
import { RedisClusterBroker } from './broker/redis-cluster.js';
import { redisTargetOf } from './broker/redis-target.js';
import { ConfigError, type Config } from './config.js';
import type { Connection, RequestInfo } from './engine/transport.js';
import { createEdge, type Edge } from './engine/edge.js';
import { HttpTransports } from './engine/http-transports.js';
import { Hub } from './hub.js';
import { authFailureReason, createMetrics } from './metrics.js';
import { InstrumentedBroker } from './broker/instrumented.js';
import { channelNamespace } from '@switchboard/protocol';
import type { HistoryOptions } from './broker/broker.js';
import { Node } from './node.js';
import {
  AblyAuth,
  AblyContext,
  AblyRest,
  ablyDialect,
  WS_CHECK_PATH,
  wsCheck,
} from './ably/index.js';
import {
  MemoryConnectionStore,
  RedisConnectionStore,
  type AblyConnectionStore,
} from './ably/connection-state.js';
import { Readiness } from './readiness.js';
import { Session } from './session.js';
import { drain } from './drain.js';
import { Shedding } from './shedding.js';
import { createPublicKey, randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { VERSION, createWebRoutes } from './web/front-page.js';
import { Admission, isRefusal } from './admission.js';
import { ApiKeys } from './auth/api-keys.js';
import { AuthFailureLog } from './auth/auth-log.js';
import type { Authenticator } from './auth/auth.js';
import { createJwtAuthenticator, readKeyFile } from './auth/jwt.js';
import { createPolicy } from './auth/policy.js';
import { SessionRegistry } from './auth/registry.js';
import {
  parseRevocation,
  revocationJson,
  type Revocation,
  type RevocationStore,
} from './auth/revocation.js';
import { MemoryRevocationStore } from './auth/revocation-memory.js';
import { RedisRevocationStore } from './auth/revocation-redis.js';
import { MemoryPresenceStore } from './presence/memory.js';
import type { PresenceStore } from './presence/presence.js';
import { RedisPresenceStore } from './presence/redis.js';
import { endpointsOf } from './webhooks/endpoints.js';
import { MemoryWebhookStore } from './webhooks/memory.js';
import { RedisWebhookStore } from './webhooks/redis.js';
import type { WebhookStore } from './webhooks/store.js';
import { Webhooks } from './webhooks/webhooks.js';
import {
  ErrorRing,
  RecordingAuthLog,
  adminEnabled,
  checkAdminConfig,
  createAdmin,
} from './admin/index.js';
import { ChannelDirectory } from './occupancy/directory.js';
import { MemoryOccupancyStore } from './occupancy/memory.js';
import { RedisOccupancyStore } from './occupancy/redis.js';

export interface RunningServer {
  /** The port actually bound (useful with port 0). */
  readonly port: number;
  readonly broker: Broker;
  /** Where presence is kept (tests fill a channel through it). */
  readonly presence: PresenceStore;
  /** The channel directory (also `node.directory`): listing, occupancy, occupied/vacated hook. */
  readonly directory: ChannelDirectory;
  /** The network engine actually running (uws falls back to ws when it cannot load). */
  readonly engine: 'uws' | 'ws';
  /** Signed webhooks: `webhooks.log(limit)` is this node's delivery log (for the admin API). */
  readonly webhooks: Webhooks;
  /**
   * Graceful stop (the drain): not ready at once, stop accepting, ask clients to reconnect
   * elsewhere (3012) spread over drainWindowMs, wait for the last one to leave (up to
   * shutdownTimeoutMs from the call), then release the broker.
   */
  close(): Promise<void>;
}

/** Commands one connection may have waiting on the broker. */
const MAX_IN_FLIGHT = 1024;

/** How often readiness probes the broker with a write, and how long it must be well again. */
const READINESS_PROBE_MS = 1000;
const READINESS_RECOVER_MS = 2000;

/** Closes kept in the admin API's error ring: refusals and failures, not ordinary goodbyes. */
const RECORDED_CLOSES = new Set<number>([
  DisconnectCode.SLOW,
  DisconnectCode.TOO_MANY_CONNECTIONS,
  DisconnectCode.INSUFFICIENT_STATE,
  DisconnectCode.FLOODING,
  DisconnectCode.UNAUTHORIZED,
  DisconnectCode.BAD_REQUEST,
  DisconnectCode.TOKEN_EXPIRED,
  DisconnectCode.NO_PONG,
]);

/** The control topic on which nodes tell each other about revocations. */
const REVOCATIONS_TOPIC = 'revocations';

/** The composition root: picks the broker from config and wires node, hub, engine and API. */
/** Implementations given instead of the ones the configuration picks (tests, embedders). */
export interface ServerParts {
  readonly revocations?: RevocationStore;
}

export async function startServer(
  config: Config,
  logger: Logger,
  parts: ServerParts = {},
): Promise<RunningServer> {
  const authenticator = await createAuthenticator(config);
  checkAdminConfig(config);
  let apiKeys: ApiKeys;
  try {
    apiKeys = new ApiKeys(config.apiKeys);
  } catch (err) {
    throw new ConfigError(
      'apiKeys',
      `apiKeys: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  const policy = createPolicy(authenticator !== undefined || apiKeys.size > 0, config.namespaces);
  if (!policy.enabled) {
    logger.warn(
      'NO AUTH CONFIGURED: anyone who reaches this port can subscribe, publish and read history on every channel. Set jwtSecret/jwtPublicKey/jwtJwksUrl and apiKeys before exposing it.',
    );
  }
  const redisTarget = redisTargetOf(config);
  const presence: PresenceStore =
    redisTarget === undefined
      ? new MemoryPresenceStore()
      : new RedisPresenceStore(redisTarget, config.redisPrefix);
  const revocations: RevocationStore =
    parts.revocations ??
    (redisTarget === undefined
      ? new MemoryRevocationStore(config.maxTokenLifetimeMs)
      : new RedisRevocationStore(redisTarget, config.redisPrefix, config.maxTokenLifetimeMs));
  const registry = new SessionRegistry(config.maxConnectionsPerUser);
  const nodeId = config.nodeId ?? `${hostname()}-${randomBytes(3).toString('hex')}`;
  // Recent errors and refusals of this node, for the admin API (bounded).
  const errorRing = new ErrorRing(nodeId);
  const authLog: AuthFailureLog = new RecordingAuthLog(errorRing, logger, (reason) =>
    metrics.authFailure(authFailureReason(reason)),
  );
  const picked: Broker =
    redisTarget === undefined
      ? new MemoryBroker()
      : redisTarget.mode === 'cluster'
        ? new RedisClusterBroker({
            seeds: config.redisCluster,
            prefix: config.redisPrefix,
            commandTimeoutMs: config.redisCommandTimeoutMs,
            ...(config.redisWaitReplicas >= 0 && { waitReplicas: config.redisWaitReplicas }),
            waitTimeoutMs: config.redisWaitTimeoutMs,
            publishBatch: config.redisPublishBatch,
            logger,
          })
        : new RedisBroker({
            url: config.redis ?? '',
            target: redisTarget,
            prefix: config.redisPrefix,
            bridgePatterns: config.redisBridge,
            commandTimeoutMs: config.redisCommandTimeoutMs,
            ...(config.redisWaitReplicas >= 0 && { waitReplicas: config.redisWaitReplicas }),
            waitTimeoutMs: config.redisWaitTimeoutMs,
            publishBatch: config.redisPublishBatch,
            logger,
          });
  const broker: Broker = new InstrumentedBroker(picked, (op, s) => metrics.brokerCommand(op, s));
  // The edge comes first: the Hub fans out through its native topics when it has them. Its
  // callbacks reach sessions, transports and the API, which exist before the first request.
  const edge: Edge = createEdge({
    engine: config.engine,
    path: '/ws',
    maxMessageBytes: config.maxMessageBytes,
    maxOutboundBytes: config.maxOutboundBytes,
    pingIntervalMs: config.pingIntervalMs,
    perMessageDeflate: config.perMessageDeflate,
    httpHeadersTimeoutMs: config.httpHeadersTimeoutMs,
    logger,
    admit: (req) => {
      const origin = admission.origin(req);
      return isRefusal(origin) ? origin : counted(admission.connection(req));
    },
    accept: (conn, req) => accept(conn, req),
    dialects: config.ably
      ? [
          { path: '/', accept: (conn, req) => ably.accept(conn, req) },
          { path: WS_CHECK_PATH, accept: wsCheck },
        ]
      : [],
    onDisconnect: (code) => disconnected(code),
    request: (req, res) => request(req, res),
  });
  // Metrics off: the Hub counts nothing, so the bench can tell what counting costs.
  const hub = config.metrics
    ? new Hub(
        (n) => metrics.messagesOut.inc(n),
        edge.topics,
        (s, n) => metrics.delivered(s, n),
      )
    : new Hub(undefined, edge.topics);
  const metrics = createMetrics(
    {
      connections: () => edge.connections + transports.connections,
      subscriptions: () => hub.subscriptions,
      channels: () => hub.channels,
      maxConnections: () => config.maxConnections,
    },
    config.metrics,
  );
  if (picked instanceof RedisBroker) picked.instrumentBridge(createBridgeMetrics(metrics.registry));
  const readiness = new Readiness({
    graceMs: config.readinessGraceMs,
    recoverMs: READINESS_RECOVER_MS,
    probeMs: READINESS_PROBE_MS,
    probe: () => broker.probe(),
    connected: () => broker.ready,
  });
  const webhooks = createWebhooks(config, redisTarget, logger, metrics.registry);
  presence.onProduced?.((channel, events) => {
    for (const e of events) {
      const type = presenceEventType(e);
      if (type !== undefined) webhooks.emit(type, channel, e);
    }
  });
  const directory = new ChannelDirectory({
    store:
      redisTarget === undefined
        ? new MemoryOccupancyStore({
            position: (channel) => (picked as MemoryBroker).positionOf(channel),
            streams: () => (picked as MemoryBroker).channelNames(),
            members: (channel) => (presence as MemoryPresenceStore).count(channel),
            presence: () => (presence as MemoryPresenceStore).channelNames(),
          })
        : new RedisOccupancyStore((presence as RedisPresenceStore).connection, config.redisPrefix),
    // One life of this process: a restarted node with the same nodeId never inherits the shares
    // of its predecessor, which the survivors reap.
    nodeId: `${nodeId}/${randomBytes(4).toString('hex')}`,
    logger,
    ttlMs: config.presenceTtlMs,
  });
  // The directory reports each change once deployment-wide; the webhooks debounce it.
  directory.on('occupied', (channel) => webhooks.occupancy(channel, 'occupied'));
  directory.on('vacated', (channel) => webhooks.occupancy(channel, 'vacated'));
  const node = new Node({
    directory,
    broker,
    hub,
    logger,
    metrics,
    historyFor: historyResolver(config),
    dedupeMs: config.dedupeMs,
    recoveryMaxMessages: config.recoveryMaxMessages,
    // Half the outbound limit: the page and the live traffic queued behind it both fit.
    historyPageBytes: Math.floor(config.maxOutboundBytes / 2),
    presence,
    presenceFor: (channel) => config.namespaces[channelNamespace(channel)]?.presence === true,
    presenceTtlMs: config.presenceTtlMs,
    presenceMaxMembers: config.presenceMaxMembers,
    autoEnterFor: (channel) => config.namespaces[channelNamespace(channel)]?.autoEnter === true,
    onWrite: (ok, startedAt, error) => readiness.observeWrite(ok, startedAt, error),
    onPublished: (input, p, timestamp) => {
      if (!webhooks.wants('message.published', input.channel)) return;
      webhooks.emit(
        'message.published',
        input.channel,
        encodePublishedMessage({
          id: p.id,
          name: input.name,
          dataJson: input.dataJson,
          timestamp,
          offset: p.offset,
          epoch: p.epoch,
        }),
      );
    },
  });
  if (config.ably && config.dedupeMs < 120_000)
    logger.warn(
      { dedupeMs: config.dedupeMs },
      'dedupeMs is below the Ably connectionStateTtl (120 s): a publish the Ably SDK resends after a late resume may be stored twice',
    );
  const ablyStore: AblyConnectionStore =
    redisTarget === undefined
      ? new MemoryConnectionStore()
      : new RedisConnectionStore((presence as RedisPresenceStore).connection, config.redisPrefix);
  const ablyContext = new AblyContext({
    node,
    policy,
    auth: new AblyAuth(config.apiKeys, apiKeys, policy),
    logger,
    keyMaterial: ablyKeyMaterial(config),
    // The frame limit (maxMessageBytes) must also hold the ProtocolMessage around the messages,
    // so an oversized publish is NACKed 40009 instead of closing the socket at the frame limit.
    maxMessageSize: Math.max(1024, config.maxMessageBytes - 2048),
    maxChannels: config.maxSubscriptionsPerConnection,
    maxReplay: config.recoveryMaxMessages,
    pingIntervalMs: config.pingIntervalMs,
    commandsPerSecond: config.maxCommandsPerSecond,
    revocations,
    registry,
    store: ablyStore,
    broadcaster: edge.broadcaster,
    presence: {
      maxDataBytes: config.presenceMaxDataBytes,
      maxEntersPerConnection: config.presenceMaxEntersPerConnection,
      graceMs: config.presenceGraceMs,
    },
  });
  const ably = ablyDialect(ablyContext);
  const sessionContext = {
    node,
    metrics,
    limits: {
      maxSubscriptions: config.maxSubscriptionsPerConnection,
      maxInFlight: MAX_IN_FLIGHT,
      commandsPerSecond: config.maxCommandsPerSecond,
      commandBurst: config.commandBurst,
    },
    presence: {
      maxDataBytes: config.presenceMaxDataBytes,
      maxEntersPerConnection: config.presenceMaxEntersPerConnection,
      graceMs: config.presenceGraceMs,
    },
    policy,
    authenticator,
    revocations,
    registry,
    authTimeoutMs: config.authTimeoutMs,
    authLog,
    tokenRefreshLeadMs: config.tokenRefreshLeadMs,
    tokenLeewayMs: config.jwtLeewayMs,
    onFlooding: (address: string) => {
      errorRing.push({
        code: DisconnectCode.FLOODING,
        message: 'commands over the rate after refusals',
        address,
      });
      admission.penalize(address);
    },
    flooding: (address: string) => admission.flooding(address),
  };
  const shedding = new Shedding({
    maxConnections: config.maxConnections,
    memoryBytes: config.shedMemoryBytes,
    eventLoopLagMs: config.shedEventLoopLagMs,
    connections: (): number => edge.connections + transports.connections,
    readiness,
  });
  const admission: Admission = new Admission({
    allowedOrigins: config.allowedOrigins,
    authEnabled: policy.enabled,
    maxConnectionsPerIpPerSecond: config.maxConnectionsPerIpPerSecond,
    shedding: () => shedding.check(),
    retryAfterS: Math.ceil(config.shedRetryAfterMs / 1000),
  });
  const disconnected = (code: number): void => {
    metrics.disconnects.inc({ code });
    if (code === DisconnectCode.SLOW) metrics.slowConsumers.inc();
    if (RECORDED_CLOSES.has(code)) errorRing.push({ code, message: 'connection closed' });
  };
  /** Counts connections refused for the per-address rate. */
  const counted = <T>(refusal: T): T => {
    if (isRefusal(refusal) && refusal.status === 429) {
      metrics.rateLimited.inc({ kind: 'connection' });
      errorRing.push({ code: refusal.code, message: refusal.message });
    }
    return refusal;
  };
  // Browsers cannot set headers on a WebSocket: the token may come as ?token= (or in a connect frame).
  const accept = (conn: Connection, req: RequestInfo): Session =>
    new Session(sessionContext, conn, tokenParam(req.url), req.socket.remoteAddress);
  // SSE and long-polling: the same admission and the same sessions as WebSocket.
  const transports: HttpTransports = new HttpTransports({
    node,
    maxMessageBytes: config.maxMessageBytes,
    maxBodyBytes: config.maxRequestBodyBytes,
    maxOutboundBytes: config.maxOutboundBytes,
    pingIntervalMs: config.pingIntervalMs,
    logger,
    admit: (req, opening) => {
      const origin = admission.origin(req);
      if (isRefusal(origin)) return origin;
      return opening ? counted(admission.connection(req)) : undefined;
    },
    accept,
    onDisconnect: (code) => disconnected(code),
  });
  const startedAt = Date.now();
  const withAdmin = adminEnabled(config, policy.enabled, redisTarget === undefined);
  const web = createWebRoutes({
    info: () => ({
      name: 'switchboard',
      version: VERSION,
      nodeId,
      engine: edge.engine,
      broker: broker.name,
      startedAt: new Date(startedAt).toISOString(),
      uptimeMs: Date.now() - startedAt,
      auth: policy.enabled,
      connections: edge.connections + transports.connections,
      channels: hub.channels,
      links: {
        demo: config.demoUrl ?? null,
        admin: withAdmin ? '/admin' : null,
        metrics: '/metrics',
        docs: '/docs/README.md',
      },
    }),
  });
  const revoke = async (r: Revocation): Promise<void> => {
    await revocations.add(r);
    await broker.publishControl(REVOCATIONS_TOPIC, revocationJson(r));
  };
  const admin = withAdmin
    ? createAdmin({
        config,
        nodeId,
        node,
        hub,
        metrics,
        logger,
        authEnabled: policy.enabled,
        apiKeys,
        authenticator,
        authLog,
        errors: errorRing,
        webhookLog: (limit) => webhooks.log(limit),
        redis: redisTarget,
        keyMaterial: ablyKeyMaterial(config),
        revoke,
        info: () => ({
          id: nodeId,
          version: VERSION,
          engine: edge.engine,
          broker: broker.name,
          startedAt: new Date(startedAt).toISOString(),
          uptimeMs: Date.now() - startedAt,
          connections: edge.connections + transports.connections,
          channels: hub.channels,
          ready: readiness.ready,
        }),
      })
    : undefined;
  const api = createHttpHandler({
    admin: admin?.routes,
    web,
    node,
    metrics,
    logger,
    maxBodyBytes: config.maxRequestBodyBytes,
    maxMessageBytes: config.maxMessageBytes,
    readiness: () => {
      shedding.check();
      return readiness.state();
    },
    policy,
    apiKeys,
    authenticator,
    revocations,
    admission,
    authLog,
    revoke,
  });
  const ablyRest = new AblyRest(ablyContext, {
    maxBodyBytes: config.maxRequestBodyBytes,
    origin: (req) => {
      const o = admission.origin(req);
      return isRefusal(o) ? undefined : o;
    },
  });
  const request = transports.before(config.ably ? ablyRest.before(api) : api);
  transports.start();

  await broker.start(node);
  webhooks.start();
  await admin?.start();
  await directory.start();
  readiness.start();
  shedding.start();
  // Revocations reach the live connections of every node through the broker.
  await node.onControlTopic(REVOCATIONS_TOPIC, (payload) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(payload.toString());
    } catch {
      return;
    }
    const r = parseRevocation(parsed, Date.now());
    if (typeof r === 'string') return;
    const n = registry.apply(r);
    logger.info({ kind: r.kind, closed: n }, 'revocation applied');
  });
  let port: number;
  try {
    port = await edge.listen(config.host, config.port);
  } catch (err) {
    await Promise.all([
      broker.close(),
      revocations.close(),
      presence.close(),
      directory.close(),
      webhooks.close(),
      admin?.close(),
      ablyStore.close(),
    ]);
    throw err;
  }
  logger.info(
    { port, host: config.host, broker: broker.name, engine: edge.engine },
    'switchboard listening',
  );
  if (redisTarget === undefined)
    logger.info('embedded engine: single node, state lives in this process');

  let closing: Promise<void> | undefined;
  return {
    port,
    broker,
    presence,
    directory,
    engine: edge.engine,
    webhooks,
    close() {
      closing ??= (async () => {
        const startedAt = Date.now();
        const deadline = startedAt + config.shutdownTimeoutMs;
        readiness.set('draining', `since ${new Date(startedAt).toISOString()}`);
        edge.stopAccepting();
        const clients = [...edge.openWebSockets(), ...transports.beginDrain()];
        const windowMs = Math.min(config.drainWindowMs, config.shutdownTimeoutMs);
        logger.info(
          { connections: clients.length, drainWindowMs: windowMs, ready: readiness.ready },
          'draining: not ready, not accepting; asking clients to reconnect elsewhere',
        );
        const left = await drain(clients, {
          windowMs,
          deadline,
          connections: () => edge.connections + transports.connections,
          code: DisconnectCode.DRAINING,
          reason: 'node draining: reconnect elsewhere',
          onFirst: (at) => logger.info({ at }, 'draining: first client asked to leave'),
        });
        logger.info(
          {
            left,
            connections: edge.connections + transports.connections,
            elapsedMs: Date.now() - startedAt,
          },
          left ? 'drained: every client left' : 'drain timed out: dropping the rest',
        );
        // Whatever is still open (a client that did not answer its close) goes now.
        const rest = Math.max(0, deadline - Date.now());
        await Promise.all([
          edge.closeWebSockets(DisconnectCode.DRAINING, 'node draining: reconnect elsewhere', rest),
          transports.closeAll(DisconnectCode.DRAINING, 'node draining: reconnect elsewhere', rest),
        ]);
        shedding.stop();
        edge.closeRemaining();
        ablyContext.close();
        node.close();
        readiness.stop();
        await admin?.close();
        await directory.close();
        // Deliveries in flight finish first (up to webhookTimeoutMs); pending ones stay in Redis.
        await webhooks.close();
        await Promise.all([
          broker.close(),
          revocations.close(),
          presence.close(),
          ablyStore.close(),
        ]);
        logger.info('shutdown complete');
      })();
      return closing;
    },
  };
}

/**
 * Webhooks from the configuration: pending deliveries in Redis when the node uses Redis (so they
 * survive restarts and go out from one node), else in this process.
 */
function createWebhooks(
  config: Config,
  redisTarget: ReturnType<typeof redisTargetOf>,
  logger: Logger,
  registry: Registry,
): Webhooks {
  const endpoints = endpointsOf(config.webhooks, config.webhookSecret);
  const store: WebhookStore =
    endpoints.length === 0 || redisTarget === undefined
      ? new MemoryWebhookStore()
      : new RedisWebhookStore(
          redisTarget,
          config.redisPrefix,
          `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`,
          // Longer than a live node holds a delivery: its read-ahead waits at most two timeouts,
          // then one request; the rest is margin for a stalled loop or a slow Redis.
          4 * config.webhookTimeoutMs + 1000,
        );
  return new Webhooks({
    endpoints,
    store,
    logger,
    registry: config.metrics ? registry : undefined,
    retryBaseMs: config.webhookRetryBaseMs,
    retryMaxDelayMs: config.webhookRetryMaxDelayMs,
    retryForMs: config.webhookRetryForMs,
    timeoutMs: config.webhookTimeoutMs,
    concurrency: config.webhookConcurrency,
    maxPending: config.webhookMaxPending,
    debounceMs: config.webhookDebounceMs,
    logSize: config.webhookLogSize,
  });
}

/** The webhook type of a presence event text (`{"action":"enter",...}`). */
function presenceEventType(
  event: string,
): 'presence.enter' | 'presence.leave' | 'presence.update' | undefined {
  const action = presenceEventAction(event);
  return action === undefined ? undefined : `presence.${action}`;
}

/** History retention per channel: its namespace's settings over the global ones. */
function historyResolver(config: Config): (channel: string) => HistoryOptions {
  const fallback: HistoryOptions = { size: config.historySize, ttlMs: config.historyTtlMs };
  const byNamespace = new Map<string, HistoryOptions>();
  for (const [ns, c] of Object.entries(config.namespaces)) {
    byNamespace.set(ns, {
      size: c.historySize ?? fallback.size,
      ttlMs: c.historyTtlMs ?? fallback.ttlMs,
    });
  }
  if (byNamespace.size === 0) return () => fallback;
  return (channel) => byNamespace.get(channelNamespace(channel)) ?? fallback;
}

/**
 * What Ably connection keys are signed with: the configured secrets, the same on every node, so
 * any node recognises a key another issued (resume after a node loss). Without auth anyone may
 * connect as anything anyway, and a fixed secret is as good as any.
 */
function ablyKeyMaterial(config: Config): string {
  const secrets = config.apiKeys.map((k) => `${k.name}:${k.secret}`).sort();
  return [...secrets, config.jwtSecret ?? ''].join('\n');
}

function tokenParam(url: string | undefined): string | undefined {
  const q = url?.indexOf('?') ?? -1;
  if (url === undefined || q === -1) return undefined;
  return new URLSearchParams(url.slice(q + 1)).get('token') ?? undefined;
}

/**
 * The token authenticator the configuration asks for, if any. A key that cannot be used (too
 * short, unreadable, not a key, the wrong algorithms) is a configuration error like any other:
 * ConfigError, which the CLI reports with exit status 2 (#15.5).
 */
async function createAuthenticator(config: Config): Promise<Authenticator | undefined> {
  try {
    return await createAuthenticatorOrThrow(config);
  } catch (err) {
    const key =
      config.jwtSecret !== undefined
        ? 'jwtSecret'
        : config.jwtKeyFile !== undefined
          ? 'jwtKeyFile'
          : config.jwtPublicKey !== undefined
            ? 'jwtPublicKey'
            : 'jwtJwksUrl';
    const text = err instanceof Error ? err.message : String(err);
    throw new ConfigError(key, text.includes(key) ? text : `${key}: ${text}`);
  }
}

async function createAuthenticatorOrThrow(config: Config): Promise<Authenticator | undefined> {
  const publicKey =
    config.jwtPublicKey ??
    (config.jwtKeyFile === undefined ? undefined : readKeyFile(config.jwtKeyFile));
  if (config.jwtSecret === undefined && publicKey === undefined && config.jwtJwksUrl === undefined)
    return undefined;
  return createJwtAuthenticator({
    secret: config.jwtSecret,
    publicKey,
    jwksUrl: config.jwtJwksUrl,
    algorithms:
      config.jwtAlgorithms.length > 0
        ? config.jwtAlgorithms
        : defaultAlgorithms(config.jwtSecret, publicKey),
    issuer: config.jwtIssuer,
    audience: config.jwtAudience,
    leewayMs: config.jwtLeewayMs,
    requireExp: config.jwtRequireExp,
    maxLifetimeMs: config.maxTokenLifetimeMs,
  });
}

/** One algorithm family per key: never HMAC next to a public key. */
function defaultAlgorithms(secret: string | undefined, publicKey: string | undefined): string[] {
  if (secret !== undefined) return ['HS256', 'HS384', 'HS512'];
  if (publicKey === undefined) return ['RS256', 'ES256', 'EdDSA'];
  const text = publicKey.trim();
  if (!text.startsWith('-----BEGIN')) {
    const jwk = JSON.parse(text) as { alg?: string; kty?: string; keys?: unknown };
    if (jwk.keys !== undefined) return ['RS256', 'ES256', 'EdDSA'];
    if (jwk.alg !== undefined) return [jwk.alg];
    return [jwk.kty === 'EC' ? 'ES256' : jwk.kty === 'OKP' ? 'EdDSA' : 'RS256'];
  }
  const type = createPublicKey(text).asymmetricKeyType;
  return [type === 'ec' ? 'ES256' : type === 'ed25519' ? 'EdDSA' : 'RS256'];
}
