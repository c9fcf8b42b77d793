/**
 * A message oracle for continuity tests (Guarantees 1, 2 and 4 of ARCHITECTURE.md §4).
 *
 * Every publish goes through `Oracle.publish`, which stamps the data with a unique key: the
 * publisher's id `p` and a sequence `s` counted per (publisher, channel) from 1 in call order. The
 * oracle records what was acknowledged (and where it was stored), and every delivery each
 * subscriber's listener got, with the discontinuities the SDK reported. `report()` then counts:
 *
 * - lost: acknowledged, inside the subscriber's coverage, never delivered to it. Coverage starts at
 *   the subscriber's start position and is cut by each discontinuity: the messages between the
 *   position the SDK held and the one delivery continues from are excused (the subscriber was told).
 * - duplicated: one key delivered twice to the same subscriber.
 * - reordered: per subscriber and channel, an offset that does not increase within an epoch, or a
 *   publisher's sequence that does not increase.
 * - mismatched: a key seen at two positions (by two subscribers, or by a subscriber and the ack),
 *   or two keys at one position: the stored order is not the same for everyone.
 * - replayedInGap: delivered although outside the coverage, e.g. a message of the gap after
 *   `recovered: false` (a partial replay), or one of a new epoch without a discontinuity.
 *
 * Memory stays small at a million deliveries: counts live in byte arrays indexed by sequence.
 */
import type { DiscontinuityInfo, Message, Position } from '../src/index.js';

/** What an oracle-tracked message carries in its data. */
export interface Stamp {
  /** Publisher id. */
  readonly p: string;
  /** Sequence per (publisher, channel), from 1, in publish-call order. */
  readonly s: number;
}

/** Where the server said it stored a message. */
export interface Stored extends Position {
  readonly duplicate?: boolean;
}

export interface OracleReport {
  /** Publish calls. */
  readonly published: number;
  /** Publishes acknowledged (each key once). */
  readonly acknowledged: number;
  /** Acknowledgements that said `duplicate: true` (a retried publish recognised by its id). */
  readonly duplicateAcks: number;
  /** Publishes that rejected: not acknowledged, stored or not. */
  readonly failed: number;
  /** Publishes neither acknowledged nor rejected yet. */
  readonly pending: number;
  /** Subscriber-channel pairs watched. */
  readonly watched: number;
  /** Deliveries the coverage required (acknowledged messages, summed over subscriber-channels). */
  readonly expected: number;
  /** Deliveries seen by listeners (tracked messages only). */
  readonly delivered: number;
  readonly lost: number;
  readonly duplicated: number;
  readonly reordered: number;
  readonly mismatched: number;
  readonly replayedInGap: number;
  /** Deliveries of keys never acknowledged (a publish that failed after being stored, or pending). */
  readonly unacknowledgedDelivered: number;
  /** Discontinuities reported by the SDK, summed over subscriber-channels. */
  readonly discontinuities: number;
  /** The first problems found, for assertion messages. */
  readonly examples: readonly string[];
}

/** One part of a subscriber's coverage: offsets in (from, to] of `epoch` (undefined: the next seen). */
interface Segment {
  epoch: string | undefined;
  from: number;
  to: number;
}

/** One subscriber on one channel. */
class Track {
  readonly subscriber: string;
  readonly channel: string;
  /** Per publisher: how often each sequence was delivered (saturating at 255). */
  readonly counts = new Map<string, Uint8Array>();
  readonly lastSeq = new Map<string, number>();
  lastEpoch: string | undefined;
  lastOffset = 0;
  delivered = 0;
  readonly segments: Segment[];
  readonly discontinuities: DiscontinuityInfo[] = [];

  constructor(subscriber: string, channel: string, start: Position | undefined) {
    this.subscriber = subscriber;
    this.channel = channel;
    this.segments = [{ epoch: start?.epoch, from: start?.offset ?? 0, to: Infinity }];
  }

  get open(): Segment {
    return this.segments[this.segments.length - 1] as Segment;
  }

  count(p: string, s: number): number {
    return this.counts.get(p)?.[s] ?? 0;
  }

  bump(p: string, s: number): void {
    let a = this.counts.get(p);
    if (a === undefined || a.length <= s) {
      const grown = new Uint8Array(Math.max(64, (s + 1) * 2));
      if (a !== undefined) grown.set(a);
      a = grown;
      this.counts.set(p, a);
    }
    if ((a[s] as number) < 255) a[s] = (a[s] as number) + 1;
  }

  covers(epoch: string, offset: number): boolean {
    return this.segments.some(
      (g) => (g.epoch === undefined || g.epoch === epoch) && offset > g.from && offset <= g.to,
    );
  }
}

interface PublishRecord {
  stored?: Stored;
  settled: boolean;
}

const key = (a: string, b: string): string => `${a}\u0000${b}`;
const MAX_EXAMPLES = 12;

export function isStamp(data: unknown): data is Stamp {
  if (typeof data !== 'object' || data === null) return false;
  const { p, s } = data as Record<string, unknown>;
  return typeof p === 'string' && typeof s === 'number' && Number.isSafeInteger(s) && s > 0;
}

export class Oracle {
  /** channel → publisher → sequence → record (index 0 unused). */
  readonly #publishes = new Map<string, Map<string, PublishRecord[]>>();
  /** channel → "epoch/offset" → the key first seen there, and key → its position. */
  readonly #byPosition = new Map<string, Map<string, string>>();
  readonly #byKey = new Map<string, Map<string, string>>();
  readonly #tracks = new Map<string, Track>();
  #published = 0;
  #duplicateAcks = 0;
  #failed = 0;
  #duplicated = 0;
  #reordered = 0;
  #mismatched = 0;
  #replayedInGap = 0;
  readonly #examples: string[] = [];

  /**
   * Stamps a message for `publisher` on `channel` and publishes it with `send`, which gets the data
   * to publish and resolves with the stored position (or rejects). The stamp is taken now, so the
   * sequence follows call order. Returns the stamp, and a promise of the stored position (undefined
   * on failure, which is recorded; it never rejects).
   */
  publish(
    publisher: string,
    channel: string,
    send: (data: Stamp) => Promise<Stored>,
  ): { stamp: Stamp; stored: Promise<Stored | undefined> } {
    let byPublisher = this.#publishes.get(channel);
    if (byPublisher === undefined) {
      byPublisher = new Map<string, PublishRecord[]>();
      this.#publishes.set(channel, byPublisher);
    }
    let records = byPublisher.get(publisher);
    if (records === undefined) byPublisher.set(publisher, (records = [{ settled: true }]));
    const stamp: Stamp = { p: publisher, s: records.length };
    const record: PublishRecord = { settled: false };
    records.push(record);
    this.#published++;
    let sent: Promise<Stored>;
    try {
      sent = send(stamp);
    } catch (err) {
      sent = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const stored = sent.then(
      (stored) => {
        record.settled = true;
        record.stored = stored;
        if (stored.duplicate === true) this.#duplicateAcks++;
        this.#place(channel, `${stamp.p}#${stamp.s}`, stored, 'ack');
        return stored;
      },
      (err: unknown) => {
        record.settled = true;
        this.#failed++;
        this.#problem(`publish ${channel} ${stamp.p}#${stamp.s} failed: ${String(err)}`);
        return undefined;
      },
    );
    return { stamp, stored };
  }

  /**
   * Starts watching `subscriber` on `channel`: every acknowledged message after `start` (all of
   * them when undefined) must be delivered, except across a reported discontinuity.
   */
  watch(subscriber: string, channel: string, start?: Position): void {
    const k = key(subscriber, channel);
    if (this.#tracks.has(k)) throw new Error(`${subscriber} already watches ${channel}`);
    this.#tracks.set(k, new Track(subscriber, channel, start));
  }

  /** Records one delivery to `subscriber`'s listener. */
  received(subscriber: string, m: Message): void {
    const t = this.#track(subscriber, m.channel);
    if (!isStamp(m.data)) return;
    const { p, s } = m.data;
    t.delivered++;
    const label = `${subscriber} ${m.channel} ${p}#${s}@${m.epoch ?? '?'}/${m.offset ?? '?'}`;
    if (m.offset === undefined || m.epoch === undefined) {
      this.#problem(`${label}: delivered without a position`);
      this.#mismatched++;
    } else {
      this.#place(m.channel, `${p}#${s}`, { offset: m.offset, epoch: m.epoch }, subscriber);
      const open = t.open;
      if (open.epoch === undefined && m.offset > open.from) open.epoch = m.epoch;
      if (open.epoch !== m.epoch || m.offset <= open.from) {
        this.#replayedInGap++;
        this.#problem(`${label}: delivered outside coverage ${JSON.stringify(open)}`);
      }
    }
    if (t.count(p, s) > 0) {
      this.#duplicated++;
      this.#problem(`${label}: delivered again`);
    } else if (
      (m.offset !== undefined && m.epoch === t.lastEpoch && m.offset <= t.lastOffset) ||
      s <= (t.lastSeq.get(p) ?? 0)
    ) {
      this.#reordered++;
      this.#problem(
        `${label}: out of order (last offset ${t.lastOffset}, last seq ${t.lastSeq.get(p) ?? 0})`,
      );
    }
    t.bump(p, s);
    t.lastSeq.set(p, Math.max(s, t.lastSeq.get(p) ?? 0));
    if (m.epoch !== undefined && m.offset !== undefined) {
      t.lastEpoch = m.epoch;
      t.lastOffset = m.offset;
    }
  }

  /**
   * Records a discontinuity the SDK reported: the messages between `previous` and `current` are
   * excused, and nothing of them may be delivered. For reason `epoch` the message at `current` is
   * delivered right after the event; for `unrecovered` delivery continues after `current`.
   */
  discontinuity(subscriber: string, channel: string, info: DiscontinuityInfo): void {
    const t = this.#track(subscriber, channel);
    t.discontinuities.push(info);
    const open = t.open;
    const { previous, current } = info;
    if (previous === undefined) {
      // The SDK held no position: nothing of the open part was delivered.
      open.to = open.from;
    } else if (open.epoch === undefined || open.epoch === previous.epoch) {
      open.epoch = previous.epoch;
      open.to = Math.max(open.from, previous.offset);
    }
    t.segments.push({
      epoch: current?.epoch,
      from: current === undefined ? 0 : current.offset - (info.reason === 'epoch' ? 1 : 0),
      to: Infinity,
    });
  }

  /** How often `subscriber` got the message stamped `stamp` on `channel`. */
  deliveries(subscriber: string, channel: string, stamp: Stamp): number {
    return this.#track(subscriber, channel).count(stamp.p, stamp.s);
  }

  /** Deliveries `subscriber` got on `channel` (tracked messages). */
  deliveredTo(subscriber: string, channel: string): number {
    return this.#track(subscriber, channel).delivered;
  }

  /** Discontinuities `subscriber` got on `channel`. */
  discontinuitiesOf(subscriber: string, channel: string): readonly DiscontinuityInfo[] {
    return this.#track(subscriber, channel).discontinuities;
  }

  /** Acknowledged messages on `channel` not yet delivered to `subscriber` although covered. */
  missing(subscriber: string, channel: string): number {
    const t = this.#track(subscriber, channel);
    let n = 0;
    for (const [p, records] of this.#publishes.get(channel) ?? []) {
      for (let s = 1; s < records.length; s++) {
        const stored = records[s]?.stored;
        if (stored !== undefined && t.covers(stored.epoch, stored.offset) && t.count(p, s) === 0)
          n++;
      }
    }
    return n;
  }

  report(): OracleReport {
    let acknowledged = 0;
    let pending = 0;
    let expected = 0;
    let lost = 0;
    let delivered = 0;
    let unacknowledgedDelivered = 0;
    let discontinuities = 0;
    for (const byPublisher of this.#publishes.values()) {
      for (const records of byPublisher.values()) {
        for (let s = 1; s < records.length; s++) {
          const r = records[s] as PublishRecord;
          if (r.stored !== undefined) acknowledged++;
          else if (!r.settled) pending++;
        }
      }
    }
    for (const t of this.#tracks.values()) {
      delivered += t.delivered;
      discontinuities += t.discontinuities.length;
      const byPublisher = this.#publishes.get(t.channel) ?? new Map<string, PublishRecord[]>();
      for (const [p, records] of byPublisher) {
        for (let s = 1; s < records.length; s++) {
          const stored = records[s]?.stored;
          const got = t.count(p, s);
          if (stored === undefined) {
            if (got > 0) unacknowledgedDelivered++;
            continue;
          }
          if (!t.covers(stored.epoch, stored.offset)) continue;
          expected++;
          if (got === 0) {
            lost++;
            this.#problem(
              `${t.subscriber} ${t.channel} ${p}#${s}@${stored.epoch}/${stored.offset}: acknowledged, never delivered`,
            );
          }
        }
      }
      for (const [p, counts] of t.counts) {
        const records = byPublisher.get(p);
        for (let s = records?.length ?? 1; s < counts.length; s++)
          if ((counts[s] as number) > 0) {
            this.#problem(`${t.subscriber} ${t.channel} ${p}#${s}: delivered, never published`);
            unacknowledgedDelivered++;
          }
      }
    }
    return {
      published: this.#published,
      acknowledged,
      duplicateAcks: this.#duplicateAcks,
      failed: this.#failed,
      pending,
      watched: this.#tracks.size,
      expected,
      delivered,
      lost,
      duplicated: this.#duplicated,
      reordered: this.#reordered,
      mismatched: this.#mismatched,
      replayedInGap: this.#replayedInGap,
      unacknowledgedDelivered,
      discontinuities,
      examples: [...this.#examples],
    };
  }

  #track(subscriber: string, channel: string): Track {
    const t = this.#tracks.get(key(subscriber, channel));
    if (t === undefined) throw new Error(`${subscriber} does not watch ${channel}: call watch()`);
    return t;
  }

  /** Checks that a key has one position and a position one key, whoever reports it. */
  #place(channel: string, k: string, at: Position, who: string): void {
    let byPosition = this.#byPosition.get(channel);
    let byKey = this.#byKey.get(channel);
    if (byPosition === undefined || byKey === undefined) {
      byPosition = new Map<string, string>();
      byKey = new Map<string, string>();
      this.#byPosition.set(channel, byPosition);
      this.#byKey.set(channel, byKey);
    }
    const pos = `${at.epoch}/${at.offset}`;
    const knownPos = byKey.get(k);
    const knownKey = byPosition.get(pos);
    if (knownPos === undefined && knownKey === undefined) {
      byKey.set(k, pos);
      byPosition.set(pos, k);
      return;
    }
    if (knownPos !== undefined && knownPos !== pos) {
      this.#mismatched++;
      this.#problem(`${channel} ${k}: at ${pos} for ${who}, at ${knownPos} before`);
    } else if (knownKey !== undefined && knownKey !== k) {
      this.#mismatched++;
      this.#problem(`${channel} ${pos}: ${k} for ${who}, ${knownKey} before`);
    }
  }

  #problem(text: string): void {
    if (this.#examples.length < MAX_EXAMPLES) this.#examples.push(text);
  }
}

/** One line with every count, for test output. */
export function summarize(r: OracleReport): string {
  return (
    `published=${r.published} acked=${r.acknowledged} dupAcks=${r.duplicateAcks} failed=${r.failed} ` +
    `pending=${r.pending} watched=${r.watched} expected=${r.expected} delivered=${r.delivered} ` +
    `lost=${r.lost} duplicated=${r.duplicated} reordered=${r.reordered} mismatched=${r.mismatched} ` +
    `replayedInGap=${r.replayedInGap} unackedDelivered=${r.unacknowledgedDelivered} ` +
    `discontinuities=${r.discontinuities}`
  );
}

/** The counts that must be 0 for a clean run; `discontinuities` only when `allowDiscontinuities` is false. */
export function violations(r: OracleReport, allowDiscontinuities = false): string[] {
  const bad: string[] = [];
  for (const k of [
    'failed',
    'pending',
    'lost',
    'duplicated',
    'reordered',
    'mismatched',
    'replayedInGap',
  ] as const) {
    if (r[k] !== 0) bad.push(`${k}=${r[k]}`);
  }
  if (!allowDiscontinuities && r.discontinuities !== 0)
    bad.push(`discontinuities=${r.discontinuities}`);
  return bad;
}
