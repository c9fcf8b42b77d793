/** @module Switchboard wire protocol: frames, codes and channel rules. No I/O. */
export {
  ErrorCode,
  DisconnectCode,
  errorHttpStatus,
  isTemporary,
  shouldReconnect,
} from './codes.js';
export { channelError, channelNamespace, CHANNEL_CHARSET, MAX_CHANNEL_LENGTH } from './channel.js';
export {
  BATCH_SUBPROTOCOL,
  PROTOCOL_VERSION,
  MAX_MESSAGE_ID_LENGTH,
  MAX_NAME_LENGTH,
  MAX_REQUEST_ID_LENGTH,
  MAX_PAGE,
  MAX_TOKEN_LENGTH,
  MAX_PRESENCE_KEY_LENGTH,
  MIN_PRESENCE_KEY_LENGTH,
  PRESENCE_STREAM_PREFIX,
  OCCUPANCY_STREAM_PREFIX,
  presenceStream,
  DEFAULT_HISTORY_LIMIT,
  decodeCommand,
  peekRequestId,
  positionOf,
  encodeMessageHead,
  encodeMessage,
  encodePositionSuffix,
  positionSuffixLua,
  closeMessageFrame,
  closeMessageFrameUnpositioned,
  encodeDiscontinuityEvent,
  encodeReply,
  encodeError,
  messageIdError,
  messageNameError,
} from './frames.js';
export * from './server-frames.js';
export { parseFrames, frameKind, toMessage, toPosition } from './decode-server.js';
export type { Frame, FrameKind, Message } from './decode-server.js';
export type {
  ErrorCodeName,
  ErrorCodeValue,
  DisconnectCodeName,
  DisconnectCodeValue,
} from './codes.js';
export type {
  Command,
  CommandError,
  DecodeResult,
  HistoryCommand,
  Position,
  MessageHeadFields,
  PingCommand,
  PresenceCommand,
  MemberCommand,
  PresenceStreamCommand,
  OccupancyStreamCommand,
  PublishCommand,
  RequestId,
  SubscribeCommand,
  TokenCommand,
  UnsubscribeCommand,
} from './frames.js';
