/**
 * Ably subscribers of one channel on this node, behind one subscriber in the Hub. Each message
 * frame arrives once, is parsed once and encoded once per framing in use (JSON text, msgpack),
 * and the same bytes are written to every attached connection: the native hot path is untouched
 * and the dialect costs one transcode per message per node, not per socket.
 *
 * A connection joins as `catching up` while its ATTACH is answered: live frames are buffered for
 * it, merged with history by offset, and written only after its ATTACHED (the SDK drops MESSAGEs
 * for a channel that is still attaching).
 */
import type { StreamPosition } from '../broker/broker.js';
import type { TopicBroadcaster } from '../engine/transport.js';
import type { Sink } from '../hub.js';
import type { Node } from '../node.js';
import { mergeAfter, type Positioned } from '../recovery.js';
import { Action, encodeJson, encodeMsgpack, type Format, type ProtocolMessage } from './codec.js';
import { toWire, type StoredMessage } from './data.js';

/** What the fan-out writes to; implemented by the Ably session. */
export interface AblySubscriber {
  readonly connectionId: string;
  readonly format: Format;
  /** False when echo=false: skip the connection's own messages. */
  readonly echo: boolean;
  write(frame: string | Buffer): void;
  /** Native topics of the engine (uws), when the connection can join them. */
  joinTopic?(topic: string): boolean;
  leaveTopic?(topic: string): void;
  /** The channel's stream could not be kept whole for this connection (see Sink.close). */
  lost(channel: string, reason: string): void;
}

/** One message as delivered, encoded lazily once per framing. */
export class Delivery {
  readonly offset: number | undefined;
  readonly epoch: string | undefined;
  readonly publisher: string | undefined;
  readonly #m: StoredMessage;
  readonly #channel: string;
  #json: string | undefined;
  #msgpack: Buffer | undefined;

  constructor(channel: string, m: StoredMessage) {
    this.#channel = channel;
    this.#m = m;
    this.offset = m.offset;
    this.epoch = m.epoch;
    this.publisher = m.ably?.connectionId;
  }

  frame(format: Format): string | Buffer {
    if (format === 'json') return (this.#json ??= encodeJson(this.#pm('json')));
    return (this.#msgpack ??= encodeMsgpack(this.#pm('msgpack')));
  }

  /** The message as the SDK reads it in `format` (REST history answers with these). */
  message(format: Format): Record<string, unknown> {
    const m = this.#m;
    const meta = m.ably;
    const serial = this.#serial();
    const msg: Record<string, unknown> = { id: m.id, ...toWire(m, format), timestamp: m.timestamp };
    if (m.name !== undefined) msg['name'] = m.name;
    if (meta?.clientId !== undefined) msg['clientId'] = meta.clientId;
    if (meta?.connectionId !== undefined) msg['connectionId'] = meta.connectionId;
    if (meta?.extras !== undefined) msg['extras'] = meta.extras;
    if (serial !== undefined) msg['serial'] = serial;
    msg['action'] = 0;
    return msg;
  }

  #serial(): string | undefined {
    return this.epoch === undefined ? undefined : channelSerial(this.epoch, this.offset ?? 0);
  }

  #pm(format: Format): ProtocolMessage {
    const m = this.#m;
    const meta = m.ably;
    const serial = this.#serial();
    const msg = this.message(format);
    const pm: ProtocolMessage = {
      action: Action.MESSAGE,
      channel: this.#channel,
      timestamp: m.timestamp,
      messages: [msg],
    };
    if (serial !== undefined) pm.channelSerial = serial;
    if (meta?.connectionId !== undefined) pm.connectionId = meta.connectionId;
    return pm;
  }
}

/** Several messages of a channel as one MESSAGE, encoded lazily once per framing. */
class Batch {
  readonly #channel: string;
  readonly #list: readonly Delivery[];
  #json: string | undefined;
  #msgpack: Buffer | undefined;

  constructor(channel: string, list: readonly Delivery[]) {
    this.#channel = channel;
    this.#list = list;
  }

  frame(format: Format): string | Buffer {
    if (format === 'json') return (this.#json ??= encodeJson(this.#pm('json')));
    return (this.#msgpack ??= encodeMsgpack(this.#pm('msgpack')));
  }

  #pm(format: Format): ProtocolMessage {
    const messages = this.#list.map((d) => d.message(format));
    const last = this.#list[this.#list.length - 1];
    // Each message carries its own id, connectionId and timestamp; the channelSerial is the last.
    const pm: ProtocolMessage = {
      action: Action.MESSAGE,
      channel: this.#channel,
      timestamp: (messages[messages.length - 1]?.['timestamp'] as number | undefined) ?? Date.now(),
      messages,
    };
    if (last?.epoch !== undefined) pm.channelSerial = channelSerial(last.epoch, last.offset ?? 0);
    return pm;
  }
}

/** `epoch:offset`: Ably's channelSerial for a Switchboard stream position. */
export function channelSerial(epoch: string, offset: number): string {
  return `${epoch}:${offset}`;
}

/** The position a channelSerial this server issued names, or undefined. */
export function parseChannelSerial(serial: unknown): StreamPosition | undefined {
  if (typeof serial !== 'string') return undefined;
  const m = /^([A-Za-z0-9_-]{1,64}):(\d{1,15})$/.exec(serial);
  if (m === null) return undefined;
  return { epoch: m[1] as string, offset: Number(m[2]) };
}

interface Member {
  /** Frames at or below this offset (in `epoch`) were already covered by its ATTACHED. */
  after: number;
  epoch: string;
  /** Set while catching up: live deliveries held until its ATTACHED is written. */
  held: Delivery[] | undefined;
  /** In the engine's topic for its framing: deliveries reach it without a JavaScript call. */
  topic: boolean;
}

/** Deliveries a catching-up connection may hold; more and it is told the channel was lost. */
const MAX_HELD = 10_000;

export interface AttachResult {
  /** The position the ATTACHED names (the last message the connection is given by the replay). */
  readonly position: StreamPosition;
  /** Whether everything after the requested position is replayed. */
  readonly resumed: boolean;
  /** Messages to write after ATTACHED (history, then held live ones), in order. */
  readonly replay: readonly Delivery[];
}

export class ChannelFanout implements Sink {
  readonly batched = false;
  readonly channel: string;
  readonly #node: Node;
  readonly #members = new Map<AblySubscriber, Member>();
  readonly #onEmpty: () => void;
  readonly #broadcaster: TopicBroadcaster | undefined;
  /** Members in each framing's topic. */
  #inTopic = { json: 0, msgpack: 0 };
  readonly #topicName: { json: string; msgpack: string };
  #subscribed: Promise<void> | undefined;
  #position: StreamPosition = { epoch: '', offset: 0 };
  #closed = false;

  constructor(node: Node, channel: string, onEmpty: () => void, broadcaster?: TopicBroadcaster) {
    this.#node = node;
    this.channel = channel;
    this.#onEmpty = onEmpty;
    this.#broadcaster = broadcaster;
    // Native protocol topics are `p…`/`b…` (uws.ts): these cannot collide with them.
    this.#topicName = { json: `aj${channel}`, msgpack: `am${channel}` };
  }

  get size(): number {
    return this.#members.size;
  }

  has(sub: AblySubscriber): boolean {
    return this.#members.has(sub);
  }

  /**
   * Joins `sub` and works out what it must be sent after its ATTACHED: everything after `since`
   * when history still holds it (resumed), else nothing before now; `rewind` replays the last n.
   * The caller writes ATTACHED, the replay, then calls `live` — synchronously on resolution.
   */
  async join(
    sub: AblySubscriber,
    since: StreamPosition | undefined,
    rewind: number,
    maxReplay: number,
  ): Promise<AttachResult> {
    const member: Member = { after: -1, epoch: '', held: [], topic: false };
    this.#members.set(sub, member);
    try {
      this.#subscribed ??= this.#node.subscribe(this, this.channel).then((s) => {
        if (this.#position.epoch === '') this.#position = s.position;
      });
      await this.#subscribed;
      if (since === undefined && rewind === 0)
        return this.#settle(member, this.#position, [], false);
      const h = await this.#node.broker.history(
        this.channel,
        since !== undefined
          ? { sinceOffset: since.offset, limit: maxReplay + 1 }
          : { limit: Math.min(rewind, maxReplay), reverse: true },
      );
      if (this.#members.get(sub) !== member) throw new Error('detached while attaching');
      const top = h.position;
      const entries = since === undefined ? [...h.entries].reverse() : h.entries;
      const history: (Positioned & { d: Delivery })[] = [];
      for (const e of entries) {
        const d = parseFrame(this.channel, e.frame, { offset: e.offset, epoch: top.epoch });
        if (d !== undefined) history.push({ offset: e.offset, frame: e.frame, d });
      }
      if (since !== undefined) {
        const ok =
          since.epoch === top.epoch &&
          since.offset <= top.offset &&
          top.offset - since.offset <= maxReplay;
        const merged = ok ? mergeAfter(since.offset, history, []) : undefined;
        if (merged !== undefined && (merged.length > 0 || since.offset === top.offset)) {
          return this.#settle(
            member,
            since,
            history.slice(0, merged.length).map((x) => x.d),
            true,
          );
        }
        if (merged !== undefined && since.offset < top.offset && merged.length === 0) {
          return this.#settle(member, top, [], false);
        }
        return this.#settle(member, top, [], false);
      }
      const start = (history[0]?.offset ?? top.offset + 1) - 1;
      return this.#settle(
        member,
        { epoch: top.epoch, offset: start },
        history.map((x) => x.d),
        false,
      );
    } catch (err) {
      this.leave(sub);
      throw err;
    }
  }

  /**
   * The replay for a member that starts after `from`: `history` (contiguous from there), then the
   * live deliveries it held that come after them.
   */
  #settle(
    member: Member,
    from: StreamPosition,
    history: readonly Delivery[],
    resumed: boolean,
  ): AttachResult {
    let last = from.offset;
    const replay: Delivery[] = [];
    for (const d of history) {
      replay.push(d);
      last = d.offset ?? last;
    }
    for (const d of member.held ?? []) {
      if (d.offset === undefined || d.epoch === undefined) replay.push(d);
      else if (d.epoch === from.epoch && d.offset > last) {
        replay.push(d);
        last = d.offset;
      }
    }
    member.after = last;
    member.epoch = from.epoch;
    return { position: from, resumed, replay };
  }

  /** From now on `sub` gets every live delivery (after its replay). */
  live(sub: AblySubscriber): void {
    const member = this.#members.get(sub);
    if (member !== undefined) member.held = undefined;
  }

  leave(sub: AblySubscriber): void {
    const member = this.#members.get(sub);
    if (member === undefined) return;
    this.#members.delete(sub);
    if (member.topic) {
      this.#inTopic[sub.format]--;
      sub.leaveTopic?.(this.#topicName[sub.format]);
    }
    if (this.#members.size > 0 || this.#closed) return;
    this.#closed = true;
    this.#node.unsubscribe(this, this.channel);
    this.#onEmpty();
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(frame: Buffer, position?: StreamPosition): void {
    const d = parseFrame(this.channel, frame, position ?? null);
    if (d === undefined) return;
    if (d.epoch !== undefined && d.offset !== undefined)
      this.#position = { epoch: d.epoch, offset: d.offset };
    const b = this.#broadcaster;
    if (b !== undefined) {
      if (this.#inTopic.json > 0) b.publishTopic(this.#topicName.json, d.frame('json'), false);
      if (this.#inTopic.msgpack > 0)
        b.publishTopic(this.#topicName.msgpack, d.frame('msgpack'), true);
    }
    for (const [sub, member] of this.#members) {
      if (member.topic) continue;
      if (member.held !== undefined) {
        if (member.held.length < MAX_HELD) member.held.push(d);
        continue;
      }
      this.#deliver(sub, member, d);
    }
  }

  /**
   * A turn's messages for the channel: subscribers in a topic, and live ones with nothing to
   * skip, get them as one MESSAGE carrying them all (one WebSocket message to write and to read,
   * like the native protocol's batching); the others message by message.
   */
  sendMany(frames: readonly Buffer[], positions?: readonly (StreamPosition | undefined)[]): void {
    const list: Delivery[] = [];
    for (let i = 0; i < frames.length; i++) {
      const d = parseFrame(this.channel, frames[i] as Buffer, positions?.[i] ?? null);
      if (d !== undefined) list.push(d);
    }
    const first = list[0];
    const last = list[list.length - 1];
    if (list.length < 2 || first === undefined || last === undefined) {
      for (let i = 0; i < frames.length; i++) this.send(frames[i] as Buffer, positions?.[i]);
      return;
    }
    if (last.epoch !== undefined && last.offset !== undefined)
      this.#position = { epoch: last.epoch, offset: last.offset };
    const batch = new Batch(this.channel, list);
    const b = this.#broadcaster;
    if (b !== undefined) {
      if (this.#inTopic.json > 0) b.publishTopic(this.#topicName.json, batch.frame('json'), false);
      if (this.#inTopic.msgpack > 0)
        b.publishTopic(this.#topicName.msgpack, batch.frame('msgpack'), true);
    }
    const sameEpoch = list.every((d) => d.epoch !== undefined && d.epoch === first.epoch);
    for (const [sub, member] of this.#members) {
      if (member.topic) continue;
      if (member.held !== undefined) {
        for (const d of list) if (member.held.length < MAX_HELD) member.held.push(d);
        continue;
      }
      const whole =
        sameEpoch &&
        member.epoch === first.epoch &&
        (first.offset ?? 0) > member.after &&
        (sub.echo || list.every((d) => d.publisher !== sub.connectionId));
      if (!whole) {
        for (const d of list) this.#deliver(sub, member, d);
        continue;
      }
      member.after = last.offset ?? member.after;
      sub.write(batch.frame(sub.format));
      this.#promote(sub, member);
    }
  }

  /** One delivery to a member written by JavaScript, skipping what its replay covered. */
  #deliver(sub: AblySubscriber, member: Member, d: Delivery): void {
    if (d.offset !== undefined && d.epoch === member.epoch) {
      if (d.offset <= member.after) return;
      member.after = d.offset;
    } else if (d.epoch !== undefined) {
      member.epoch = d.epoch;
      member.after = d.offset ?? 0;
    }
    if (!sub.echo && d.publisher === sub.connectionId) return;
    sub.write(d.frame(sub.format));
    this.#promote(sub, member);
  }

  /**
   * Live and past everything its replay covered: from the next message on, the engine delivers
   * to it natively (a member without echo needs the per-message check, so stays).
   */
  #promote(sub: AblySubscriber, member: Member): void {
    if (this.#broadcaster === undefined || !sub.echo || member.topic) return;
    if (sub.joinTopic?.(this.#topicName[sub.format]) === true) {
      member.topic = true;
      this.#inTopic[sub.format]++;
    }
  }

  /** The node could not keep the channel's stream whole: every member must re-attach. */
  close(_code: number, reason: string): void {
    for (const sub of [...this.#members.keys()]) sub.lost(this.channel, reason);
  }
}

/**
 * A native message frame as a Delivery; undefined for a frame that is not a message. Decoded once
 * per message per node (one AblyChannel per channel), then encoded the Ably way per format.
 * `position` is the message's stream position as data (the Hub and history carry it), null when
 * it has none (a bridged message): never read back out of the frame.
 */
export function parseFrame(
  channel: string,
  frame: Buffer,
  position: StreamPosition | null,
): Delivery | undefined {
  let m: unknown;
  try {
    m = JSON.parse(frame.toString());
  } catch {
    return undefined;
  }
  if (typeof m !== 'object' || m === null) return undefined;
  const s = m as Record<string, unknown>;
  if (typeof s['id'] !== 'string') return undefined;
  return new Delivery(channel, {
    message: s['message'],
    id: s['id'],
    timestamp: typeof s['timestamp'] === 'number' ? s['timestamp'] : Date.now(),
    ...(typeof s['name'] === 'string' ? { name: s['name'] } : {}),
    ...(typeof s['ably'] === 'object' && s['ably'] !== null ? { ably: s['ably'] } : {}),
    ...(position === null ? {} : { offset: position.offset, epoch: position.epoch }),
  });
}
