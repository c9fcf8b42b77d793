import { invoke } from './emitter.js';
import { replyError, type SwitchboardError } from './errors.js';
import type { Frame } from './frames.js';

/** Deployment-wide counts of a channel. */
export interface Occupancy {
  /** Connections attached to the channel (subscribed to it or to its presence events). */
  readonly connections: number;
  /** Subscriptions to the channel's messages. */
  readonly subscribers: number;
  /** Presence members entered in the channel. */
  readonly presenceMembers: number;
  /** Distinct publishers in the last minute. */
  readonly publishersLastMinute: number;
}

/** An occupancy change, as delivered to occupancy listeners (at most one per second). */
export interface OccupancyEvent extends Occupancy {
  readonly channel: string;
}

export type OccupancyListener = (event: OccupancyEvent) => void;

/** `channel.occupancy`. Needs the `subscribe` capability on the channel. */
export interface ChannelOccupancy {
  /**
   * Listens to the channel's occupancy: the server sends the counts at most once per second,
   * when they changed. Resolves with the current counts once the server confirmed.
   */
  subscribe(listener: OccupancyListener): Promise<Occupancy>;
  /** Removes a listener (all when omitted); the last one stops the events on the server. */
  unsubscribe(listener?: OccupancyListener): void;
  /** The last counts the server sent, if any. */
  readonly current: Occupancy | undefined;
}

export interface OccupancyHost {
  readonly channel: string;
  send(command: Frame, onReply: (frame: Frame | undefined) => void): boolean;
  request(command: Frame): Promise<Frame>;
  failed(err: SwitchboardError): void;
}

/** The occupancy side of one channel: listeners, re-subscribed after every reconnect. */
export class OccupancyStream {
  readonly #host: OccupancyHost;
  #listeners: readonly OccupancyListener[] = [];
  #current: Occupancy | undefined;
  /** Bumped by unsubscribe and revocation: a late reply of an earlier subscribe is ignored. */
  #generation = 0;

  constructor(host: OccupancyHost) {
    this.#host = host;
  }

  api(): ChannelOccupancy {
    const current = (): Occupancy | undefined => this.#current;
    return {
      subscribe: (listener) => this.subscribe(listener),
      unsubscribe: (listener) => this.unsubscribe(listener),
      get current() {
        return current();
      },
    };
  }

  async subscribe(listener: OccupancyListener): Promise<Occupancy> {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    const first = this.#listeners.length === 0;
    this.#listeners = [...this.#listeners, listener];
    if (!first && this.#current !== undefined) return this.#current;
    const generation = this.#generation;
    let reply: Frame;
    try {
      reply = await this.#host.request({
        action: 'occupancy-subscribe',
        channel: this.#host.channel,
      });
    } catch (err) {
      // Already streaming on this connection (a second subscribe raced the first) is fine.
      if ((err as SwitchboardError).code !== 105) {
        if (generation === this.#generation)
          this.#listeners = this.#listeners.filter((l) => l !== listener);
        throw err;
      }
      return this.#current ?? zero();
    }
    const occupancy = toOccupancy(reply['occupancy']) ?? zero();
    if (generation === this.#generation) this.#current = occupancy;
    return occupancy;
  }

  unsubscribe(listener?: OccupancyListener): void {
    const had = this.#listeners.length > 0;
    this.#listeners = listener ? this.#listeners.filter((l) => l !== listener) : [];
    if (!had || this.#listeners.length > 0) return;
    this.#generation++;
    this.#current = undefined;
    this.#host.send({ action: 'occupancy-unsubscribe', channel: this.#host.channel }, () => {});
  }

  /** The link is up again: stream again; counts that changed meanwhile are delivered. */
  up(): void {
    if (this.#listeners.length === 0) return;
    const generation = this.#generation;
    this.#host.send({ action: 'occupancy-subscribe', channel: this.#host.channel }, (reply) => {
      if (reply === undefined || generation !== this.#generation) return;
      const err = replyError(reply);
      if (err !== undefined) {
        if (err.code !== 105 && !err.temporary) this.revoked(err);
        return;
      }
      const o = toOccupancy(reply['occupancy']);
      if (o !== undefined) this.#update(o);
    });
  }

  /** An occupancy event from the server. */
  event(frame: Frame): void {
    const o = toOccupancy(frame);
    if (o !== undefined && this.#listeners.length > 0) this.#update(o);
  }

  /** The server ended the stream (a refreshed token no longer allows it). */
  revoked(err: SwitchboardError): void {
    if (this.#listeners.length === 0) return;
    this.#listeners = [];
    this.#generation++;
    this.#current = undefined;
    this.#host.failed(err);
  }

  #update(o: Occupancy): void {
    const c = this.#current;
    this.#current = o;
    if (
      c !== undefined &&
      c.connections === o.connections &&
      c.subscribers === o.subscribers &&
      c.presenceMembers === o.presenceMembers &&
      c.publishersLastMinute === o.publishersLastMinute
    )
      return;
    const event: OccupancyEvent = { channel: this.#host.channel, ...o };
    for (const l of this.#listeners) invoke(l, event);
  }
}

function zero(): Occupancy {
  return { connections: 0, subscribers: 0, presenceMembers: 0, publishersLastMinute: 0 };
}

function toOccupancy(value: unknown): Occupancy | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { connections, subscribers, presenceMembers, publishersLastMinute } = value as Frame;
  const n = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  if (typeof subscribers !== 'number') return undefined;
  return {
    connections: n(connections),
    subscribers: n(subscribers),
    presenceMembers: n(presenceMembers),
    publishersLastMinute: n(publishersLastMinute),
  };
}
