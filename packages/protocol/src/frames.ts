/**
 * Protocol v1: JSON text frames over WebSocket (see docs/protocol.md).
 *
 * Client commands: `{"action": "subscribe" | "unsubscribe" | "publish" | "ping", "id"?: ..., ...}`.
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

export interface SubscribeCommand {
  readonly action: 'subscribe';
  readonly id?: RequestId;
  readonly channel: string;
}
export interface UnsubscribeCommand {
  readonly action: 'unsubscribe';
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
export type Command = SubscribeCommand | UnsubscribeCommand | PublishCommand | PingCommand;

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
    case 'subscribe':
    case 'unsubscribe': {
      const channel = obj['channel'];
      const why = channelError(channel);
      if (why !== undefined) return fail(ErrorCode.INVALID_CHANNEL, why, id);
      const command = { action, channel: channel as string };
      return { ok: true, command: id === undefined ? command : { ...command, id } };
    }
    case 'publish':
      return decodePublish(obj, id);
    default:
      return fail(ErrorCode.UNKNOWN_ACTION, 'unknown action', id);
  }
}

function decodePublish(obj: Record<string, unknown>, id: RequestId | undefined): DecodeResult {
  const channel = obj['channel'];
  const why = channelError(channel);
  if (why !== undefined) return fail(ErrorCode.INVALID_CHANNEL, why, id);
  // `message` is accepted as an alias so tutorial-shaped publishers work unchanged.
  const data = obj['data'] !== undefined ? obj['data'] : obj['message'];
  if (data === undefined) return fail(ErrorCode.BAD_REQUEST, 'publish needs data', id);
  const command: { -readonly [K in keyof PublishCommand]: PublishCommand[K] } = {
    action: 'publish',
    channel: channel as string,
    dataJson: JSON.stringify(data),
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
  return s;
}

/** Closes a message head with a stream position. `epoch` must be JSON-safe (it is generated). */
export function closeMessageFrame(head: string, offset: number, epoch: string): string {
  return head + ',"offset":' + offset + ',"epoch":"' + epoch + '"}';
}

/** Closes a message head that has no stream position (bridged or unstored messages). */
export function closeMessageFrameUnpositioned(head: string): string {
  return head + '}';
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
