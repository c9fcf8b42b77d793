/** @module Switchboard server: start one with startServer(resolveConfig(...), createLogger(...)). */
export { startServer } from './server.js';
export { MemoryBroker } from './broker/memory.js';
export { RedisBroker } from './broker/redis.js';
export { RedisClusterBroker } from './broker/redis-cluster.js';
export type { RedisClusterBrokerOptions } from './broker/redis-cluster.js';
export { Hub } from './hub.js';
export { Node } from './node.js';
export { ReplyError } from './errors.js';
export {
  ConfigError,
  defaults,
  resolveConfig,
  readConfigFile,
  readEnv,
  settings,
} from './config.js';
export { createLogger } from './logger.js';
export { ErrorCode, DisconnectCode } from '@switchboard/protocol';
export type { RunningServer, ServerParts } from './server.js';
export type {
  Broker,
  BrokerHandler,
  HistoryEntry,
  HistoryOptions,
  HistoryQuery,
  HistoryResult,
  PublishRequest,
  PublishResult,
  StreamPosition,
} from './broker/broker.js';
export type { RedisBrokerOptions } from './broker/redis.js';
export type { Config, LogLevel } from './config.js';
export type { Sink } from './hub.js';
export { ChannelDirectory } from './occupancy/directory.js';
export type { DirectoryEvents, DirectoryOptions, Role } from './occupancy/directory.js';
export type {
  ChannelDetails,
  ChannelList,
  ChannelSummary,
  ListQuery,
  Occupancy,
  OccupancyStore,
} from './occupancy/occupancy.js';
