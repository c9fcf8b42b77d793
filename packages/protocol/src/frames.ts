/**
 * Protocol v1: JSON text frames over WebSocket (see docs/protocol.md).
 *
 * Client commands: `{"action": "subscribe" | "unsubscribe" | "publish" | "history" | "presence" |
 * "enter" | "update" | "leave" | "presence-subscribe" | "presence-unsubscribe" |
 * "occupancy-subscribe" | "occupancy-unsubscribe" | "ping" |
 * "connect" | "refresh", "id"?: ..., ...}`.
 * Server frames are one of
 * - a message push: `{"channel", "message", "id", "timestamp", "name"?, "offset"?, "epoch"?}`,
 *   which is exactly what the classic tutorial's clients read;
 * - a reply: `{"reply": <id>, "ok": true, ...}`, sent only to commands that carry an `id`;
 * - an error: `{"reply"?: <id>, "error": "<text>", "code": <number>}`, always sent.
 */

import { channelError } from './channel.js';
import { ErrorCode, type ErrorCodeValue } from './codes.js';

/** Subprotocol under which the server may put several frames, separated by '\n', in one WebSocket message. */
export const BATCH_SUBPROTOCOL = 'switchboard.v1';

export const PROTOCOL_VERSION = 1;

export type RequestId = string | number;

/** A place in a channel's stream: the offset of a message and the epoch of the stream it belongs to. */
export interface Position {
  readonly offset: number;
  readonly epoch: string;
}

export interface SubscribeCommand {
  readonly action: 'subscribe';
  readonly id?: RequestId;
  readonly channel: string;
  /** Resume after this position. */
  readonly since?: Position;
  /** Deliver the last `rewind` messages first. */
  readonly rewind?: number;
}
export interface HistoryCommand {
  readonly action: 'history';
  readonly id?: RequestId;
  readonly channel: string;
  readonly limit: number;
  readonly direction: 'forward' | 'backward';
  /** Forward: messages after this position. */
  readonly since?: Position;
  /** Backward: messages before this offset. */
  readonly before?: number;
  /** Opaque cursor from a previous page; replaces since/before/direction. */
  readonly cursor?: string;
}
export interface UnsubscribeCommand {
  readonly action: 'unsubscribe';
  readonly id?: RequestId;
  readonly channel: string;
}
/** Reads one page of the channel's presence members (a snapshot with the presence offset). */
export interface PresenceCommand {
  readonly action: 'presence';
  readonly id?: RequestId;
  readonly channel: string;
  /** Members per page (1-1000, default 100). */
  readonly limit?: number;
  /** Opaque cursor from the previous page. */
  readonly cursor?: string;
  /** Only this client's members (its connections). */
  readonly clientId?: string;
}
/** Makes the connection a presence member of the channel, changes its data, or ends it. */
export interface MemberCommand {
  readonly action: 'enter' | 'update' | 'leave';
  readonly id?: RequestId;
  readonly channel: string;
  /** The member's data as JSON text; absent: `null` (leave: the data it had). */
  readonly dataJson?: string;
  /**
   * A secret the client keeps across its connections: a connection that enters with the key of
   * one that dropped less than the grace period ago takes its membership over without leave/enter.
   */
  readonly presenceKey?: string;
}
/** Starts or stops the channel's presence events (enter, update, leave) on this connection. */
export interface PresenceStreamCommand {
  readonly action: 'presence-subscribe' | 'presence-unsubscribe';
  readonly id?: RequestId;
  readonly channel: string;
}
/**
 * Starts or stops the channel's occupancy events on this connection: `{"event": "occupancy",
 * "channel", "connections", "subscribers", "presenceMembers", "publishersLastMinute"}`, at most
 * once per second, when the deployment-wide counts changed. The reply carries the current counts.
 */
export interface OccupancyStreamCommand {
  readonly action: 'occupancy-subscribe' | 'occupancy-unsubscribe';
  readonly id?: RequestId;
  readonly channel: string;
}
export interface PublishCommand {
  readonly action: 'publish';
  readonly id?: RequestId;
  readonly channel: string;
  /** The message data, already serialized as JSON text (the server never re-encodes it). */
  readonly dataJson: string;
  readonly name?: string;
  /** Publisher-supplied message id: the idempotency key. */
  readonly messageId?: string;
}
export interface PingCommand {
  readonly action: 'ping';
  readonly id?: RequestId;
}
/** Authenticates the connection (first frame) or replaces its token before it expires (refresh). */
export interface TokenCommand {
  readonly action: 'connect' | 'refresh';
  readonly id?: RequestId;
  readonly token: string;
}
export type Command =
  | SubscribeCommand
  | UnsubscribeCommand
  | PublishCommand
  | PingCommand
  | HistoryCommand
  | PresenceCommand
  | MemberCommand
  | PresenceStreamCommand
  | OccupancyStreamCommand
  | TokenCommand;

export interface CommandError {
  readonly id?: RequestId;
  readonly code: ErrorCodeValue;
  readonly message: string;
}

export type DecodeResult =
  { readonly ok: true; readonly command: Command } | ({ readonly ok: false } & CommandError);

export const MAX_REQUEST_ID_LENGTH = 64;
export const MAX_MESSAGE_ID_LENGTH = 128;
export const MAX_NAME_LENGTH = 255;
/** Largest `rewind` and history page. */
export const MAX_PAGE = 1000;
export const DEFAULT_HISTORY_LIMIT = 100;
export const MAX_TOKEN_LENGTH = 8192;
/**
 * Presence events of channel `c` travel (Hub, broker) as the pseudo-channel `[presence]c`: `[`
 * is outside the channel charset, so no client channel can collide with it.
 */
export const PRESENCE_STREAM_PREFIX = '[presence]';

/** Occupancy events of channel `c` travel (Hub only, never the broker) as `[occupancy]c`. */
export const OCCUPANCY_STREAM_PREFIX = '[occupancy]';

export function presenceStream(channel: string): string {
  return PRESENCE_STREAM_PREFIX + channel;
}

/** Longest presence key (a client secret; 16-128 characters). */
export const MAX_PRESENCE_KEY_LENGTH = 128;
export const MIN_PRESENCE_KEY_LENGTH = 16;
/** Longest clientId filter of a presence read (a token's sub). */
const MAX_CLIENT_ID_LENGTH = 512;
const MAX_EPOCH_LENGTH = 64;

/** Reads a `{offset, epoch}` object or returns why it is not one. */
export function positionOf(value: unknown): Position | string {
  if (typeof value !== 'object' || value === null) return 'must be an object {offset, epoch}';
  const v = value as Record<string, unknown>;
  const offset = v['offset'];
  const epoch = v['epoch'];
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0)
    return 'offset must be a non-negative integer';
  if (typeof epoch !== 'string' || epoch.length === 0 || epoch.length > MAX_EPOCH_LENGTH)
    return 'epoch must be a non-empty string';
  return { offset, epoch };
}

function intIn(value: unknown, min: number, max: number): number | undefined {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= min && value <= max
    ? value
    : undefined;
}

function fail(code: ErrorCodeValue, message: string, id: RequestId | undefined): DecodeResult {
  return id === undefined ? { ok: false, code, message } : { ok: false, id, code, message };
}

function requestIdOf(value: unknown): RequestId | undefined | null {
  if (value === undefined) return undefined;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
  if (typeof value === 'string' && value.length <= MAX_REQUEST_ID_LENGTH) return value;
  return null;
}

/** Validates a message id (the idempotency key) or returns why it is invalid. */
export function messageIdError(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_MESSAGE_ID_LENGTH) {
    return `id must be a non-empty string of at most ${MAX_MESSAGE_ID_LENGTH} characters`;
  }
  return undefined;
}

/** Validates a message name or returns why it is invalid. */
export function messageNameError(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length > MAX_NAME_LENGTH) {
    return `name must be a string of at most ${MAX_NAME_LENGTH} characters`;
  }
  return undefined;
}

/**
 * Decodes one client frame. Never throws: malformed input yields an error naming the problem,
 * with the request id when one could be read, so the client can match it.
 */
export function decodeCommand(text: string): DecodeResult {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return fail(ErrorCode.INVALID_JSON, 'frame is not valid JSON', undefined);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return fail(ErrorCode.BAD_REQUEST, 'frame must be a JSON object', undefined);
  }
  const obj = raw as Record<string, unknown>;
  const id = requestIdOf(obj['id']);
  if (id === null) {
    return fail(
      ErrorCode.BAD_REQUEST,
      `id must be an integer or a string of at most ${MAX_REQUEST_ID_LENGTH} characters`,
      undefined,
    );
  }
  const action = obj['action'];
  if (typeof action !== 'string') return fail(ErrorCode.BAD_REQUEST, 'action must be a string', id);
  switch (action) {
    case 'ping':
      return { ok: true, command: id === undefined ? { action } : { action, id } };
    case 'presence':
      return decodePresence(obj, id);
    case 'enter':
    case 'update':
    case 'leave':
      return decodeMember(action, obj, id);
    case 'unsubscribe':
    case 'presence-subscribe':
    case 'presence-unsubscribe':
    case 'occupancy-subscribe':
    case 'occupancy-unsubscribe': {
      const channel = obj['channel'];
      const why = channelError(channel);
      if (why !== undefined) return fail(ErrorCode.INVALID_CHANNEL, why, id);
      const command = { action, channel: channel as string };
      return { ok: true, command: id === undefined ? command : { ...command, id } };
    }
    case 'subscribe':
      return decodeSubscribe(obj, id);
    case 'history':
      return decodeHistory(obj, id);
    case 'connect':
    case 'refresh': {
      const token = obj['token'];
      if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
        return fail(
          ErrorCode.BAD_REQUEST,
          `token must be a non-empty string of at most ${MAX_TOKEN_LENGTH} characters`,
          id,
        );
      }
      return { ok: true, command: id === undefined ? { action, token } : { action, token, id } };
    }
    case 'publish':
      return decodePublish(obj, id);
    default:
      return fail(ErrorCode.UNKNOWN_ACTION, 'unknown action', id);
  }
}

/** Frames up to this length are parsed by peekRequestId when the scans find no id. */
const PEEK_PARSE_MAX_LENGTH = 512;

/**
 * The request id of a frame the server refuses without decoding it (over the client's command
 * rate), found cheaply so that the refusal can still name the request: a top-level `"id"` that is
 * the object's last member (where the SDK puts it) or its first, read by scanning at most a few
 * dozen characters from either end; else, for a frame of at most 512 characters, by parsing it.
 * Undefined when none is found (the refusal then goes without `reply`). Never throws.
 */
export function peekRequestId(text: string): RequestId | undefined {
  const id = idAtEnd(text) ?? idAtStart(text);
  if (id !== undefined || text.length > PEEK_PARSE_MAX_LENGTH) return id;
  try {
    const raw: unknown = JSON.parse(text);
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
    return requestIdOf((raw as Record<string, unknown>)['id']) ?? undefined;
  } catch {
    return undefined;
  }
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function skipBack(text: string, i: number): number {
  while (i >= 0 && isSpace(text.charCodeAt(i))) i--;
  return i;
}

function skipForward(text: string, i: number): number {
  while (i < text.length && isSpace(text.charCodeAt(i))) i++;
  return i;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** `..., "id": <value> }` at the end of the text; `<value>` a safe integer or a plain short string. */
function idAtEnd(text: string): RequestId | undefined {
  let i = skipBack(text, text.length - 1);
  if (text.charCodeAt(i) !== 0x7d /* } */) return undefined;
  i = skipBack(text, i - 1);
  let value: RequestId;
  if (text.charCodeAt(i) === QUOTE) {
    let start = i - 1;
    const stop = Math.max(-1, i - 2 - MAX_REQUEST_ID_LENGTH);
    while (start > stop && text.charCodeAt(start) !== QUOTE) {
      // An escaped id is rare: leave it to the parse rather than unescape here.
      if (text.charCodeAt(start) === BACKSLASH) return undefined;
      start--;
    }
    if (start <= stop) return undefined;
    value = text.slice(start + 1, i);
    i = start - 1;
  } else {
    let j = i;
    while (j >= 0 && j > i - 17 && isDigit(text.charCodeAt(j))) j--;
    if (j === i) return undefined;
    if (text.charCodeAt(j) === 0x2d /* - */) j--;
    const n = Number(text.slice(j + 1, i + 1));
    if (!Number.isSafeInteger(n)) return undefined;
    value = n;
    i = j;
  }
  i = skipBack(text, i);
  if (text.charCodeAt(i) !== 0x3a /* : */) return undefined;
  i = skipBack(text, i - 1);
  if (i < 4 || !text.startsWith('"id"', i - 3)) return undefined;
  const before = text.charCodeAt(skipBack(text, i - 4));
  return before === 0x2c /* , */ || before === 0x7b /* { */ ? value : undefined;
}

/** `{ "id": <value> , ...` at the start of the text. */
function idAtStart(text: string): RequestId | undefined {
  let i = skipForward(text, 0);
  if (text.charCodeAt(i) !== 0x7b /* { */) return undefined;
  i = skipForward(text, i + 1);
  if (!text.startsWith('"id"', i)) return undefined;
  i = skipForward(text, i + 4);
  if (text.charCodeAt(i) !== 0x3a /* : */) return undefined;
  i = skipForward(text, i + 1);
  let value: RequestId;
  if (text.charCodeAt(i) === QUOTE) {
    let end = i + 1;
    const stop = Math.min(text.length, i + 2 + MAX_REQUEST_ID_LENGTH);
    while (end < stop && text.charCodeAt(end) !== QUOTE) {
      if (text.charCodeAt(end) === BACKSLASH) return undefined;
      end++;
    }
    if (end >= stop) return undefined;
    value = text.slice(i + 1, end);
    i = end + 1;
  } else {
    let j = i;
    if (text.charCodeAt(j) === 0x2d /* - */) j++;
    const digits = j;
    while (j < text.length && j < digits + 16 && isDigit(text.charCodeAt(j))) j++;
    if (j === digits) return undefined;
    const n = Number(text.slice(i, j));
    if (!Number.isSafeInteger(n)) return undefined;
    value = n;
    i = j;
  }
  const after = text.charCodeAt(skipForward(text, i));
  return after === 0x2c /* , */ || after === 0x7d /* } */ ? value : undefined;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function decodeSubscribe(obj: Record<string, unknown>, id: RequestId | undefined): DecodeResult {
  const channel = obj['channel'];
  const why = channelError(channel);
  if (why !== undefined) return fail(ErrorCode.INVALID_CHANNEL, why, id);
  const command: { -readonly [K in keyof SubscribeCommand]: SubscribeCommand[K] } = {
    action: 'subscribe',
    channel: channel as string,
  };
  if (id !== undefined) command.id = id;
  if (obj['since'] !== undefined) {
    const since = positionOf(obj['since']);
    if (typeof since === 'string') return fail(ErrorCode.BAD_REQUEST, `since ${since}`, id);
    command.since = since;
  }
  if (obj['rewind'] !== undefined) {
    const rewind = intIn(obj['rewind'], 1, MAX_PAGE);
    if (rewind === undefined)
      return fail(ErrorCode.BAD_REQUEST, `rewind must be an integer from 1 to ${MAX_PAGE}`, id);
    if (command.since !== undefined)
      return fail(ErrorCode.BAD_REQUEST, 'since and rewind cannot be combined', id);
    command.rewind = rewind;
  }
  return { ok: true, command };
}

function decodeHistory(obj: Record<string, unknown>, id: RequestId | undefined): DecodeResult {
  const channel = obj['channel'];
  const why = channelError(channel);
  if (why !== undefined) return fail(ErrorCode.INVALID_CHANNEL, why, id);
  const limit =
    obj['limit'] === undefined ? DEFAULT_HISTORY_LIMIT : intIn(obj['limit'], 1, MAX_PAGE);
  if (limit === undefined)
    return fail(ErrorCode.BAD_REQUEST, `limit must be an integer from 1 to ${MAX_PAGE}`, id);
  const direction = obj['direction'] ?? 'forward';
  if (direction !== 'forward' && direction !== 'backward')
    return fail(ErrorCode.BAD_REQUEST, 'direction must be "forward" or "backward"', id);
  const command: { -readonly [K in keyof HistoryCommand]: HistoryCommand[K] } = {
    action: 'history',
    channel: channel as string,
    limit,
    direction,
  };
  if (id !== undefined) command.id = id;
  if (obj['since'] !== undefined) {
    const since = positionOf(obj['since']);
    if (typeof since === 'string') return fail(ErrorCode.BAD_REQUEST, `since ${since}`, id);
    command.since = since;
  }
  if (obj['before'] !== undefined) {
    const before = intIn(obj['before'], 1, Number.MAX_SAFE_INTEGER);
    if (before === undefined)
      return fail(ErrorCode.BAD_REQUEST, 'before must be a positive integer offset', id);
    command.before = before;
  }
  if (obj['cursor'] !== undefined) {
    if (typeof obj['cursor'] !== 'string' || obj['cursor'].length > 200)
      return fail(ErrorCode.BAD_REQUEST, 'cursor must be a string from a previous page', id);
    command.cursor = obj['cursor'];
  }
  return { ok: true, command };
}

function decodePresence(obj: Record<string, unknown>, id: RequestId | undefined): DecodeResult {
  const channel = obj['channel'];
  const why = channelError(channel);
  if (why !== undefined) return fail(ErrorCode.INVALID_CHANNEL, why, id);
  const command: { -readonly [K in keyof PresenceCommand]: PresenceCommand[K] } = {
    action: 'presence',
    channel: channel as string,
  };
  if (id !== undefined) command.id = id;
  if (obj['limit'] !== undefined) {
    const limit = intIn(obj['limit'], 1, MAX_PAGE);
    if (limit === undefined)
      return fail(ErrorCode.BAD_REQUEST, `limit must be an integer from 1 to ${MAX_PAGE}`, id);
    command.limit = limit;
  }
  const cursor = obj['cursor'];
  if (cursor !== undefined && cursor !== null) {
    if (typeof cursor !== 'string' || cursor.length > 2048)
      return fail(ErrorCode.BAD_REQUEST, 'cursor must be a string from a previous page', id);
    command.cursor = cursor;
  }
  const clientId = obj['clientId'];
  if (clientId !== undefined) {
    if (typeof clientId !== 'string' || clientId.length > MAX_CLIENT_ID_LENGTH)
      return fail(
        ErrorCode.BAD_REQUEST,
        `clientId must be a string of at most ${MAX_CLIENT_ID_LENGTH} characters`,
        id,
      );
    command.clientId = clientId;
  }
  return { ok: true, command };
}

function decodeMember(
  action: 'enter' | 'update' | 'leave',
  obj: Record<string, unknown>,
  id: RequestId | undefined,
): DecodeResult {
  const channel = obj['channel'];
  const why = channelError(channel);
  if (why !== undefined) return fail(ErrorCode.INVALID_CHANNEL, why, id);
  const command: { -readonly [K in keyof MemberCommand]: MemberCommand[K] } = {
    action,
    channel: channel as string,
  };
  if (id !== undefined) command.id = id;
  if (obj['data'] !== undefined) {
    try {
      command.dataJson = JSON.stringify(obj['data']);
    } catch {
      return fail(ErrorCode.BAD_REQUEST, 'data is nested too deeply', id);
    }
  }
  const key = obj['presenceKey'];
  if (key !== undefined) {
    if (
      typeof key !== 'string' ||
      key.length < MIN_PRESENCE_KEY_LENGTH ||
      key.length > MAX_PRESENCE_KEY_LENGTH
    )
      return fail(
        ErrorCode.BAD_REQUEST,
        `presenceKey must be a string of ${MIN_PRESENCE_KEY_LENGTH} to ${MAX_PRESENCE_KEY_LENGTH} characters`,
        id,
      );
    command.presenceKey = key;
  }
  return { ok: true, command };
}

function decodePublish(obj: Record<string, unknown>, id: RequestId | undefined): DecodeResult {
  const channel = obj['channel'];
  const why = channelError(channel);
  if (why !== undefined) return fail(ErrorCode.INVALID_CHANNEL, why, id);
  // `message` is accepted as an alias so tutorial-shaped publishers work unchanged.
  const data = obj['data'] !== undefined ? obj['data'] : obj['message'];
  if (data === undefined) return fail(ErrorCode.BAD_REQUEST, 'publish needs data', id);
  // JSON.stringify recurses: data nested a few thousand levels deep, which JSON.parse accepts,
  // throws a RangeError, and this function must never throw (a throw here crashed the server).
  let dataJson: string;
  try {
    dataJson = JSON.stringify(data);
  } catch {
    return fail(ErrorCode.BAD_REQUEST, 'data is nested too deeply', id);
  }
  const command: { -readonly [K in keyof PublishCommand]: PublishCommand[K] } = {
    action: 'publish',
    channel: channel as string,
    dataJson,
  };
  if (id !== undefined) command.id = id;
  const name = obj['name'];
  if (name !== undefined) {
    const bad = messageNameError(name);
    if (bad !== undefined) return fail(ErrorCode.BAD_REQUEST, bad, id);
    command.name = name as string;
  }
  const messageId = obj['messageId'];
  if (messageId !== undefined) {
    const bad = messageIdError(messageId);
    if (bad !== undefined) return fail(ErrorCode.BAD_REQUEST, `messageId: ${bad}`, id);
    command.messageId = messageId as string;
  }
  return { ok: true, command };
}

/** What a message push carries before the broker gives it a position. */
export interface MessageHeadFields {
  readonly channel: string;
  readonly dataJson: string;
  readonly id: string;
  readonly timestamp: number;
  readonly name?: string | undefined;
  /**
   * JSON object text of what an Ably-dialect publisher sent beside the data (clientId,
   * connectionId, encoding, extras, whether the data is binary), so Ably subscribers get the
   * message back as published; native clients may ignore it.
   */
  readonly ably?: string | undefined;
}

/**
 * Encodes a message push without its closing brace, so the broker can append the position it
 * assigns (`,"offset":N,"epoch":"E"}`) without decoding the frame. Done once per message.
 */
export function encodeMessageHead(m: MessageHeadFields): string {
  let s =
    '{"channel":' +
    JSON.stringify(m.channel) +
    ',"message":' +
    m.dataJson +
    ',"id":' +
    JSON.stringify(m.id) +
    ',"timestamp":' +
    m.timestamp;
  if (m.name !== undefined) s += ',"name":' + JSON.stringify(m.name);
  if (m.ably !== undefined) s += ',"ably":' + m.ably;
  return s;
}

/** Closes a message head with a stream position. `epoch` must be JSON-safe (it is generated). */
export function closeMessageFrame(head: string, offset: number, epoch: string): string {
  return head + encodePositionSuffix(offset, epoch);
}

/**
 * The position suffix that closes a message head: `,"offset":N,"epoch":"E"}`. `epoch` must be
 * JSON-safe (the broker generates it); the Redis publish script appends the same bytes.
 */
export function encodePositionSuffix(offset: number, epoch: string): string {
  return ',"offset":' + offset + ',"epoch":"' + epoch + '"}';
}

/**
 * encodePositionSuffix as a Lua expression, for the Redis publish scripts that close the frame
 * where the offset is assigned. `offset` and `epoch` are Lua expressions (variable names). A
 * server test evaluates it in Redis and compares the bytes.
 */
export function positionSuffixLua(offset: string, epoch: string): string {
  return `',"offset":' .. ${offset} .. ',"epoch":"' .. ${epoch} .. '"}'`;
}

/** A whole message push: the head closed with its position, or unpositioned without one. */
export function encodeMessage(m: MessageHeadFields, position?: Position): string {
  const head = encodeMessageHead(m);
  return position === undefined
    ? closeMessageFrameUnpositioned(head)
    : closeMessageFrame(head, position.offset, position.epoch);
}

/** Closes a message head that has no stream position (bridged or unstored messages). */
export function closeMessageFrameUnpositioned(head: string): string {
  return head + '}';
}

/**
 * Tells a channel's subscribers that messages may be missing right here in its live stream and
 * cannot be replayed: raw Redis PUBLISHes (which carry no stream position) sent between `from`
 * and `until` (ms since the Unix epoch) while the node's bridge subscription was down.
 */
export function encodeDiscontinuityEvent(channel: string, from: number, until: number): string {
  return (
    '{"event":"discontinuity","channel":' +
    JSON.stringify(channel) +
    ',"reason":"bridge","from":' +
    from +
    ',"until":' +
    until +
    '}'
  );
}

/** A success reply to the command with request id `id`; `fields` is JSON object text or ''. */
export function encodeReply(id: RequestId, fields = ''): string {
  return (
    '{"reply":' + JSON.stringify(id) + ',"ok":true' + (fields === '' ? '' : ',' + fields) + '}'
  );
}

/** An error frame; `id` is omitted when the failing command had none (or it was unreadable). */
export function encodeError(err: CommandError): string {
  const head = err.id === undefined ? '{' : '{"reply":' + JSON.stringify(err.id) + ',';
  return head + '"error":' + JSON.stringify(err.message) + ',"code":' + err.code + '}';
}
