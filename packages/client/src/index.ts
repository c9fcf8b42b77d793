/** @module Switchboard client SDK for browsers and Node: reconnect, resume, heartbeats, idempotent publish. */
export { Switchboard } from './client.js';
export { SwitchboardError, ConnectionClosedError, QueueFullError, TimeoutError } from './errors.js';
export { fullJitter } from './backoff.js';
export { sessionStoragePositions } from './positions.js';
export { ErrorCode, DisconnectCode } from '@switchboard/protocol';
export type { SwitchboardOptions } from './client.js';
export type {
  Channel,
  Channels,
  ChannelEvents,
  ChannelState,
  ChannelStateChange,
  DiscontinuityInfo,
  HistoryOptions,
  HistoryPage,
  MessageListener,
  OutgoingMessage,
  PositionStore,
  PublishResult,
  SubscribeOptions,
} from './channel.js';
export type {
  ChannelPresence,
  PresenceAction,
  PresenceEvent,
  PresenceGetOptions,
  PresenceListener,
  PresenceMember,
} from './presence.js';
export type {
  ChannelOccupancy,
  Occupancy,
  OccupancyEvent,
  OccupancyListener,
} from './occupancy.js';
export type {
  Connection,
  ConnectionEvents,
  ConnectionState,
  StateChange,
  TransportName,
  WebSocketConstructor,
  WebSocketLike,
} from './connection.js';
export type { Reason } from './errors.js';
export type { BackoffOptions } from './backoff.js';
export type { Message, Position } from './frames.js';
