/**
 * @module Switchboard server, for embedding: start one with
 * `startServer(resolveConfig(...), createLogger(...))` and keep the RunningServer handle it
 * resolves with. What is exported here is the supported surface (examples/ and the tests use
 * nothing else); the Hub, sessions and engines are internals and may change in any release. The
 * wire format itself lives in @switchboard/protocol.
 */

// Starting and stopping a server.
export { startServer } from './server.js';
export type { RunningServer, ServerParts } from './server.js';
export {
  ConfigError,
  defaults,
  resolveConfig,
  readConfigFile,
  readEnv,
  settings,
} from './config.js';
export type { Config, LogLevel } from './config.js';
export { createLogger } from './logger.js';

// Brokers: the contract and the engines that implement it (a custom one rejects publishes with a
// PublishError saying whether the message may have been stored).
export { MemoryBroker } from './broker/memory.js';
export { RedisBroker } from './broker/redis.js';
export { RedisClusterBroker } from './broker/redis-cluster.js';
export { PublishError } from './broker/publish-error.js';
export type { RedisBrokerOptions } from './broker/redis.js';
export type { RedisClusterBrokerOptions } from './broker/redis-cluster.js';
export type {
  Broker,
  BrokerHandler,
  BridgeGap,
  HistoryEntry,
  HistoryOptions,
  HistoryQuery,
  HistoryResult,
  PublishOutcome,
  PublishRequest,
  PublishResult,
  StreamPosition,
} from './broker/broker.js';

// What the RunningServer handle exposes and ServerParts accepts.
export type { ChannelDirectory, DirectoryEvents } from './occupancy/directory.js';
export type {
  ChannelDetails,
  ChannelList,
  ChannelSummary,
  ListQuery,
  Occupancy,
} from './occupancy/occupancy.js';
export type { PresenceStore } from './presence/presence.js';
export type { RevocationStore } from './auth/revocation.js';
export type { Webhooks, DeliveryLogEntry } from './webhooks/webhooks.js';

// Receiving webhooks.
export { verifyWebhook, SIGNATURE_HEADER, EVENT_ID_HEADER } from './webhooks/signature.js';
export { WEBHOOK_EVENTS } from './webhooks/endpoints.js';
export type { WebhookConfig, WebhookEventType } from './webhooks/endpoints.js';

export { ErrorCode, DisconnectCode } from '@switchboard/protocol';
