import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server as HttpServer,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { DisconnectCode } from '@switchboard/protocol';
import type { Logger } from 'pino';
import { createHttpHandler } from './api/http.js';
import type { Broker } from './broker/broker.js';
import { MemoryBroker } from './broker/memory.js';
import { RedisBroker } from './broker/redis.js';
import type { Config } from './config.js';
import { WsEngine } from './engine/ws.js';
import type { Connection } from './engine/connection.js';
import { HttpTransports } from './engine/http-transports.js';
import { Hub } from './hub.js';
import { createMetrics } from './metrics.js';
import { channelNamespace } from '@switchboard/protocol';
import type { HistoryOptions } from './broker/broker.js';
import { Node } from './node.js';
import { Session } from './session.js';
import { createPublicKey } from 'node:crypto';
import { Admission, isRefusal } from './admission.js';
import { ApiKeys } from './auth/api-keys.js';
import type { Authenticator } from './auth/auth.js';
import { createJwtAuthenticator, readKeyFile } from './auth/jwt.js';
import { createPolicy } from './auth/policy.js';
import { SessionRegistry } from './auth/registry.js';
import { parseRevocation, revocationJson, type RevocationStore } from './auth/revocation.js';
import { MemoryRevocationStore } from './auth/revocation-memory.js';
import { RedisRevocationStore } from './auth/revocation-redis.js';

export interface RunningServer {
  /** The port actually bound (useful with port 0). */
  readonly port: number;
  readonly broker: Broker;
  /**
   * Graceful stop: refuse new work, close every client with 1001, wait for them (up to
   * shutdownTimeoutMs), then release the broker.
   */
  close(): Promise<void>;
}

/** Commands one connection may have waiting on the broker. */
const MAX_IN_FLIGHT = 1024;

/** The control topic on which nodes tell each other about revocations. */
const REVOCATIONS_TOPIC = 'revocations';

/** The composition root: picks the broker from config and wires node, hub, engine and API. */
export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  const authenticator = await createAuthenticator(config);
  const apiKeys = new ApiKeys(config.apiKeys);
  const policy = createPolicy(authenticator !== undefined || apiKeys.size > 0, config.namespaces);
  if (!policy.enabled) {
    logger.warn(
      'NO AUTH CONFIGURED: anyone who reaches this port can subscribe, publish and read history on every channel. Set jwtSecret/jwtPublicKey/jwtJwksUrl and apiKeys before exposing it.',
    );
  }
  const revocations: RevocationStore =
    config.redis === undefined
      ? new MemoryRevocationStore(config.maxTokenLifetimeMs)
      : new RedisRevocationStore(config.redis, config.redisPrefix, config.maxTokenLifetimeMs);
  const registry = new SessionRegistry(config.maxConnectionsPerUser);
  const broker: Broker =
    config.redis === undefined
      ? new MemoryBroker()
      : new RedisBroker({
          url: config.redis,
          prefix: config.redisPrefix,
          bridgePatterns: config.redisBridge,
          logger,
        });
  const hub = new Hub((n) => metrics.messagesOut.inc(n));
  const metrics = createMetrics({
    connections: () => engine.connections + transports.connections,
    subscriptions: () => hub.subscriptions,
    channels: () => hub.channels,
  });
  const node = new Node({
    broker,
    hub,
    logger,
    metrics,
    historyFor: historyResolver(config),
    dedupeMs: config.dedupeMs,
    recoveryMaxMessages: config.recoveryMaxMessages,
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
    tokenRefreshLeadMs: config.tokenRefreshLeadMs,
  };
  const admission: Admission = new Admission({
    allowedOrigins: config.allowedOrigins,
    authEnabled: policy.enabled,
    maxConnections: config.maxConnections,
    maxConnectionsPerIpPerSecond: config.maxConnectionsPerIpPerSecond,
    connections: (): number => engine.connections + transports.connections,
  });
  // Browsers cannot set headers on a WebSocket: the token may come as ?token= (or in a connect frame).
  const accept = (conn: Connection, req: IncomingMessage): Session =>
    new Session(sessionContext, conn, tokenParam(req.url));
  const engine: WsEngine = new WsEngine({
    path: '/ws',
    maxMessageBytes: config.maxMessageBytes,
    maxOutboundBytes: config.maxOutboundBytes,
    pingIntervalMs: config.pingIntervalMs,
    logger,
    perMessageDeflate: config.perMessageDeflate,
    admit: (req: IncomingMessage) => {
      const origin = admission.origin(req);
      return isRefusal(origin) ? origin : admission.connection(req);
    },
    accept,
    onDisconnect: (code) => metrics.disconnects.inc({ code }),
  });
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
  let draining = false;
  const http: HttpServer = createHttpServer(
    // Node enforces headersTimeout/requestTimeout only when it sweeps its connections, every
    // connectionsCheckingInterval (30 s by default): a slowloris socket lived up to 30 s past
    // httpHeadersTimeoutMs. Sweep often enough that the timeout holds to within a quarter of it.
    {
      connectionsCheckingInterval: Math.max(250, Math.min(30_000, config.httpHeadersTimeoutMs / 4)),
    },
    transports.before(
      createHttpHandler({
        node,
        metrics,
        logger,
        maxBodyBytes: config.maxRequestBodyBytes,
        maxMessageBytes: config.maxMessageBytes,
        ready: () => !draining && broker.ready,
        policy,
        apiKeys,
        authenticator,
        revocations,
        admission,
        revoke: async (r) => {
          await revocations.add(r);
          await broker.publishControl(REVOCATIONS_TOPIC, revocationJson(r));
        },
      }),
    ),
  );
  // Against slowloris: a client must send its headers, and its whole request, in bounded time.
  http.headersTimeout = config.httpHeadersTimeoutMs;
  http.requestTimeout = 30_000;
  http.keepAliveTimeout = 5_000;
  engine.attach(http);
  transports.start();

  await broker.start(node);
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
  try {
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(config.port, config.host, () => {
        http.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await Promise.all([broker.close(), revocations.close()]);
    throw err;
  }
  const port = (http.address() as AddressInfo).port;
  logger.info({ port, host: config.host, broker: broker.name }, 'switchboard listening');
  if (config.redis === undefined)
    logger.info('embedded engine: single node, state lives in this process');

  let closing: Promise<void> | undefined;
  return {
    port,
    broker,
    close() {
      closing ??= (async () => {
        draining = true;
        logger.info(
          { connections: engine.connections },
          'shutting down: closing client connections',
        );
        http.close();
        await Promise.all([
          engine.closeAll(
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
        http.closeAllConnections();
        node.close();
        await Promise.all([broker.close(), revocations.close()]);
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
