import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DisconnectCode } from '@switchboard/protocol';
import type { Logger } from 'pino';
import { createHttpHandler } from './api/http.js';
import type { Broker } from './broker/broker.js';
import { MemoryBroker } from './broker/memory.js';
import { RedisBroker } from './broker/redis.js';
import type { Config } from './config.js';
import { WsEngine } from './engine/ws.js';
import { Hub } from './hub.js';
import { createMetrics } from './metrics.js';
import { channelNamespace } from '@switchboard/protocol';
import type { HistoryOptions } from './broker/broker.js';
import { Node } from './node.js';
import { Session } from './session.js';

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

/** The composition root: picks the broker from config and wires node, hub, engine and API. */
export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
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
    connections: () => engine.connections,
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
  const limits = {
    maxSubscriptions: config.maxSubscriptionsPerConnection,
    maxInFlight: MAX_IN_FLIGHT,
  };
  const engine = new WsEngine({
    path: '/ws',
    maxMessageBytes: config.maxMessageBytes,
    maxOutboundBytes: config.maxOutboundBytes,
    pingIntervalMs: config.pingIntervalMs,
    logger,
    accept: (conn) => new Session(node, conn, metrics, limits),
    onDisconnect: (code) => metrics.disconnects.inc({ code }),
  });
  let draining = false;
  const http: HttpServer = createHttpServer(
    createHttpHandler({
      node,
      metrics,
      logger,
      maxBodyBytes: config.maxRequestBodyBytes,
      maxMessageBytes: config.maxMessageBytes,
      ready: () => !draining && broker.ready,
    }),
  );
  // Against slowloris: a client must send its headers, and its whole request, in bounded time.
  http.headersTimeout = 10_000;
  http.requestTimeout = 30_000;
  http.keepAliveTimeout = 5_000;
  engine.attach(http);

  await broker.start(node);
  try {
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(config.port, config.host, () => {
        http.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await broker.close();
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
        await engine.closeAll(
          DisconnectCode.GOING_AWAY,
          'server shutting down',
          config.shutdownTimeoutMs,
        );
        http.closeAllConnections();
        node.close();
        await broker.close();
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
