/**
 * Message data between the Ably wire and Switchboard's store. Ably `data` is a string or bytes
 * with an `encoding` chain (`json`, `base64`, `utf-8`, `cipher+…`, applied right to left); the
 * store keeps any JSON value. The rules, so native and Ably clients read the same message:
 * - a trailing `base64` step is undone on the way in, so bytes are stored once as bytes
 *   (base64 text in the store, `binary: true` beside it) whatever framing the publisher used;
 * - `json` with nothing before it is stored as the JSON value itself (native subscribers get the
 *   object); anything left of the chain (cipher steps) is kept as `encoding`;
 * - on the way out, JSON subscribers get bytes as base64 with `/base64` appended, msgpack
 *   subscribers get msgpack `bin`.
 * Pure: no I/O.
 */

/** What an Ably publisher sent with the data; stored as the message's `ably` object. */
export interface AblyMeta {
  /** The encoding steps still to undo (never a trailing base64); absent when none. */
  encoding?: string;
  /** The stored message is the base64 text of bytes. */
  binary?: true;
  clientId?: string;
  connectionId?: string;
  extras?: unknown;
}

export interface StoredData {
  /** The data as JSON text, as Node.publish takes it. */
  readonly dataJson: string;
  readonly meta: AblyMeta;
}

/** An Ably wire message's data in the store's terms, or why it cannot be taken. */
export function toStored(data: unknown, encoding: unknown): StoredData | string {
  if (encoding !== undefined && encoding !== null && typeof encoding !== 'string')
    return 'encoding must be a string';
  let steps = typeof encoding === 'string' && encoding !== '' ? encoding.split('/') : [];
  let value: unknown = data;
  if (steps[steps.length - 1] === 'base64') {
    if (typeof value !== 'string') return 'base64-encoded data must be a string';
    value = Buffer.from(value, 'base64');
    steps = steps.slice(0, -1);
  }
  const meta: AblyMeta = {};
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) {
    const bytes = Buffer.isBuffer(value) ? value : Buffer.from(value);
    if (steps.length > 0) meta.encoding = steps.join('/');
    meta.binary = true;
    return { dataJson: JSON.stringify(bytes.toString('base64')), meta };
  }
  if (value === undefined || value === null) {
    if (steps.length > 0) meta.encoding = steps.join('/');
    return { dataJson: 'null', meta };
  }
  if (typeof value !== 'string') return 'data must be a string, binary or JSON-encoded text';
  if (steps.length === 1 && steps[0] === 'json') {
    try {
      JSON.parse(value);
    } catch {
      return 'data with encoding json is not JSON';
    }
    // Stored as the value: the text is valid JSON already, and native subscribers get the object.
    return { dataJson: value, meta };
  }
  if (steps.length > 0) meta.encoding = steps.join('/');
  return { dataJson: JSON.stringify(value), meta };
}

/** One message as the store delivers it (the parsed native frame). */
export interface StoredMessage {
  readonly message: unknown;
  readonly id: string;
  readonly timestamp: number;
  readonly name?: string;
  readonly ably?: AblyMeta;
  readonly offset?: number;
  readonly epoch?: string;
}

export interface WireData {
  data: unknown;
  encoding?: string;
}

/** The data of a stored message for a subscriber of `format`. */
export function toWire(m: StoredMessage, format: 'json' | 'msgpack'): WireData {
  const meta = m.ably;
  const enc = meta?.encoding;
  if (meta?.binary === true && typeof m.message === 'string') {
    if (format === 'msgpack') return withEncoding(Buffer.from(m.message, 'base64'), enc);
    return withEncoding(m.message, enc === undefined ? 'base64' : enc + '/base64');
  }
  if (typeof m.message === 'string') return withEncoding(m.message, enc);
  if (m.message === null || m.message === undefined) return withEncoding(undefined, enc);
  return withEncoding(JSON.stringify(m.message), 'json');
}

function withEncoding(data: unknown, encoding: string | undefined): WireData {
  return encoding === undefined ? { data } : { data, encoding };
}
