import { DisconnectCode } from '@switchboard/protocol';
import type { Logger } from 'pino';
import { createHttpHandler } from './api/http.js';
import type { Broker } from './broker/broker.js';
import { MemoryBroker } from './broker/memory.js';
import { RedisBroker } from './broker/redis.js';
import { RedisClusterBroker } from './broker/redis-cluster.js';
import { redisTargetOf } from './broker/redis-target.js';
import type { Config } from './config.js';
import type { Connection, RequestInfo } from './engine/connection.js';
import { createEdge, type Edge } from './engine/edge.js';
import { HttpTransports } from './engine/http-transports.js';
import { Hub } from './hub.js';
import { createMetrics } from './metrics.js';
import { channelNamespace } from '@switchboard/protocol';
import type { HistoryOptions } from './broker/broker.js';
import { Node } from './node.js';
import { Readiness } from './readiness.js';
import { Session } from './session.js';
import { createPublicKey } from 'node:crypto';
import { Admission, isRefusal } from './admission.js';
import { ApiKeys } from './auth/api-keys.js';
import { AuthFailureLog } from './auth/auth-log.js';
import type { Authenticator } from './auth/auth.js';
import { createJwtAuthenticator, readKeyFile } from './auth/jwt.js';
import { createPolicy } from './auth/policy.js';
import { SessionRegistry } from './auth/registry.js';
import { parseRevocation, revocationJson, type RevocationStore } from './auth/revocation.js';
import { MemoryRevocationStore } from './auth/revocation-memory.js';
import { RedisRevocationStore } from './auth/revocation-redis.js';
import { MemoryPresenceStore } from './presence/memory.js';
import type { PresenceStore } from './presence/presence.js';
import { RedisPresenceStore } from './presence/redis.js';

export interface RunningServer {
  /** The port actually bound (useful with port 0). */
  readonly port: number;
  readonly broker: Broker;
  /** The network engine actually running (uws falls back to ws when it cannot load). */
  readonly engine: 'uws' | 'ws';
  /**
   * Graceful stop: refuse new work, close every client with 1001, wait for them (up to
   * shutdownTimeoutMs), then release the broker.
   */
  close(): Promise<void>;
}

/** Commands one connection may have waiting on the broker. */
const MAX_IN_FLIGHT = 1024;

/** How often readiness probes the broker with a write, and how long it must be well again. */
const READINESS_PROBE_MS = 1000;
const READINESS_RECOVER_MS = 2000;

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
  const apiKeys = new ApiKeys(config.apiKeys);
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
  const authLog = new AuthFailureLog(logger);
  const broker: Broker =
    redisTarget === undefined
      ? new MemoryBroker()
      : redisTarget.mode === 'cluster'
        ? new RedisClusterBroker({
            seeds: config.redisCluster,
            prefix: config.redisPrefix,
            commandTimeoutMs: config.redisCommandTimeoutMs,
            logger,
          })
        : new RedisBroker({
            url: config.redis ?? '',
            target: redisTarget,
            prefix: config.redisPrefix,
            bridgePatterns: config.redisBridge,
            commandTimeoutMs: config.redisCommandTimeoutMs,
            logger,
          });
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
      return isRefusal(origin) ? origin : admission.connection(req);
    },
    accept: (conn, req) => accept(conn, req),
    onDisconnect: (code) => metrics.disconnects.inc({ code }),
    request: (req, res) => request(req, res),
  });
  const hub = new Hub((n) => metrics.messagesOut.inc(n), edge.topics);
  const metrics = createMetrics({
    connections: () => edge.connections + transports.connections,
    subscriptions: () => hub.subscriptions,
    channels: () => hub.channels,
  });
  const readiness = new Readiness({
    graceMs: config.readinessGraceMs,
    recoverMs: READINESS_RECOVER_MS,
    probeMs: READINESS_PROBE_MS,
    probe: () => broker.probe(),
    connected: () => broker.ready,
  });
  const node = new Node({
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
    onWrite: (ok, startedAt, error) => readiness.observeWrite(ok, startedAt, error),
  });
  const sessionContext = {
    node,
    metrics,
    limits: {
      maxSubscriptions: config.maxSubscriptionsPerConnection,
      maxInFlight: MAX_IN_FLIGHT,
      commandsPerSecond: config.maxCommandsPerSecond,
      commandBurst: config.commandBurst,
    },
    policy,
    authenticator,
    revocations,
    registry,
    authTimeoutMs: config.authTimeoutMs,
    authLog,
    tokenRefreshLeadMs: config.tokenRefreshLeadMs,
    tokenLeewayMs: config.jwtLeewayMs,
    onFlooding: (address: string) => admission.penalize(address),
    flooding: (address: string) => admission.flooding(address),
  };
  const admission: Admission = new Admission({
    allowedOrigins: config.allowedOrigins,
    authEnabled: policy.enabled,
    maxConnections: config.maxConnections,
    maxConnectionsPerIpPerSecond: config.maxConnectionsPerIpPerSecond,
    connections: (): number => edge.connections + transports.connections,
  });
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
      return opening ? admission.connection(req) : undefined;
    },
    accept,
    onDisconnect: (code) => metrics.disconnects.inc({ code }),
  });
  const request = transports.before(
    createHttpHandler({
      node,
      metrics,
      logger,
      maxBodyBytes: config.maxRequestBodyBytes,
      maxMessageBytes: config.maxMessageBytes,
      readiness: () => readiness.state(),
      policy,
      apiKeys,
      authenticator,
      revocations,
      admission,
      authLog,
      revoke: async (r) => {
        await revocations.add(r);
        await broker.publishControl(REVOCATIONS_TOPIC, revocationJson(r));
      },
    }),
  );
  transports.start();

  await broker.start(node);
  readiness.start();
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
    await Promise.all([broker.close(), revocations.close(), presence.close()]);
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
    engine: edge.engine,
    close() {
      closing ??= (async () => {
        readiness.set('draining', 'shutting down');
        logger.info(
          { connections: edge.connections + transports.connections },
          'shutting down: closing client connections',
        );
        edge.stopAccepting();
        await Promise.all([
          edge.closeWebSockets(
            DisconnectCode.GOING_AWAY,
            'server shutting down',
            config.shutdownTimeoutMs,
          ),
          transports.closeAll(
            DisconnectCode.GOING_AWAY,
            'server shutting down',
            config.shutdownTimeoutMs,
          ),
        ]);
        edge.closeRemaining();
        node.close();
        readiness.stop();
        await Promise.all([broker.close(), revocations.close(), presence.close()]);
        logger.info('shutdown complete');
      })();
      return closing;
    },
  };
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

function tokenParam(url: string | undefined): string | undefined {
  const q = url?.indexOf('?') ?? -1;
  if (url === undefined || q === -1) return undefined;
  return new URLSearchParams(url.slice(q + 1)).get('token') ?? undefined;
}

/** The token authenticator the configuration asks for, if any. */
async function createAuthenticator(config: Config): Promise<Authenticator | undefined> {
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
