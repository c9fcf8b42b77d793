import { PRESENCE_STREAM_PREFIX } from '@switchboard/protocol';

/**
 * The only place Redis key and pub/sub channel names are built (listed in docs/redis.md).
 * Every name of a channel carries the channel as its hash tag, so stream, metadata, idempotency keys
 * and the pub/sub channel share one Redis Cluster slot and one Lua script can touch them all.
 * Channel names come from a safe set without braces (protocol `channelError`), so the tag is exact.
 */
export interface RedisKeys {
  readonly prefix: string;
  /** Pub/sub channel carrying the channel's publications. */
  pubsub(channel: string): string;
  /** Hash holding the channel's epoch (`e`) and last offset (`o`). */
  meta(channel: string): string;
  /** Stream holding the channel's history; entry ids are `<offset>-0`. */
  stream(channel: string): string;
  /** Idempotency record of one message id. */
  dedupe(channel: string, id: string): string;
  /** Presence: sorted set of the channel's member client ids, scored by expiry (ms, Redis clock). */
  presenceMembers(channel: string): string;
  /** Presence: hash of the channel's member keys → member record. */
  presenceInfo(channel: string): string;
  /** Presence: sorted set of the channel's member keys, all scored 0 (lexicographic pages). */
  presenceOrder(channel: string): string;
  /** Presence: the channel's presence offset (a counter, kept a day after its last change). */
  presenceOffset(channel: string): string;
  /** Webhooks: the stream of one endpoint's pending deliveries (all webhook keys share one tag). */
  webhookStream(endpoint: string): string;
  /** Webhooks: sorted set of retries and debounced channel events, scored by due time (ms). */
  webhookDue(): string;
  /** Webhooks: hash channel → its occupancy change waiting out the debounce. */
  webhookDebounce(): string;
  /** Occupancy: hash of node id → `"<connections> <subscribers>"`, that node's share. */
  occupancy(channel: string): string;
  /** Occupancy: sorted set of the channel's publishers, scored by last publish (ms, Redis clock). */
  occupancyPublishers(channel: string): string;
  /** Occupancy: sorted set of live node ids, scored by heartbeat expiry (ms, Redis clock). */
  occupancyNodes(): string;
  /** Occupancy: sorted set of dead node ids being reaped, scored by when the claim lapses. */
  occupancyReaping(): string;
  /** Occupancy: set of the channels a node holds a share of (what a reaper removes). */
  occupancyNodeChannels(node: string): string;
  /** Presence: the epoch of the channel's presence offset (a new one whenever the offset was lost). */
  presenceEpoch(channel: string): string;
  /** A node's readiness probe (a string written every second, expiring after a minute). */
  probe(node: string): string;
  /** Pub/sub channel of a node-to-node control topic. */
  control(topic: string): string;
  /** The topic named by a control pub/sub channel, or undefined when it is not one. */
  topicOf(pubsub: string): string | undefined;
  /** The channel named by a pub/sub channel of ours, or undefined when it is not one. */
  channelOf(pubsub: string): string | undefined;
}

/**
 * The names of a channel's publish keys as Lua expressions (`prefix`, `channel`, `id`: Lua
 * expressions), for the batch publish script, which builds them from the prefix and the channel
 * instead of receiving four names per message (redis-batch.ts). The same names as the builders
 * below, from the same tags (lua-keys.test.ts evaluates them in Redis). Published channels never
 * are presence pseudo-channels (a channel name has no '['), so `pubsub` has one form here.
 */
export const channelKeysLua = {
  meta: (prefix: string, channel: string) => tagged(prefix, META, channel),
  stream: (prefix: string, channel: string) => tagged(prefix, STREAM, channel),
  pubsub: (prefix: string, channel: string) => tagged(prefix, PUBSUB, channel),
  dedupe: (prefix: string, channel: string, id: string) =>
    `${tagged(prefix, DEDUPE, channel)} .. ':' .. ${id}`,
};

const META = 'm:{';
const STREAM = 's:{';
const PUBSUB = 'p:{';
const DEDUPE = 'i:{';

function tagged(prefix: string, head: string, channel: string): string {
  return `${prefix} .. '${head}' .. ${channel} .. '}'`;
}

export function createRedisKeys(prefix: string): RedisKeys {
  const pubsubHead = prefix + PUBSUB;
  // Presence events of `c` (the pseudo-channel `[presence]c`) share c's hash tag.
  const presenceHead = prefix + 'pe:{';
  const controlHead = prefix + 'c:';
  return {
    prefix,
    control: (topic) => controlHead + topic,
    probe: (node) => prefix + 'probe:' + node,
    webhookStream: (endpoint) => prefix + 'wh:{webhooks}:s:' + endpoint,
    webhookDue: () => prefix + 'wh:{webhooks}:due',
    webhookDebounce: () => prefix + 'wh:{webhooks}:debounce',
    topicOf: (pubsub) =>
      pubsub.startsWith(controlHead) ? pubsub.slice(controlHead.length) : undefined,
    pubsub: (channel) =>
      channel.startsWith(PRESENCE_STREAM_PREFIX)
        ? presenceHead + channel.slice(PRESENCE_STREAM_PREFIX.length) + '}'
        : pubsubHead + channel + '}',
    meta: (channel) => prefix + META + channel + '}',
    stream: (channel) => prefix + STREAM + channel + '}',
    dedupe: (channel, id) => prefix + DEDUPE + channel + '}:' + id,
    presenceMembers: (channel) => prefix + 'pz:{' + channel + '}',
    presenceInfo: (channel) => prefix + 'ph:{' + channel + '}',
    presenceOrder: (channel) => prefix + 'pl:{' + channel + '}',
    presenceOffset: (channel) => prefix + 'po:{' + channel + '}',
    presenceEpoch: (channel) => prefix + 'pp:{' + channel + '}',
    occupancy: (channel) => prefix + 'oc:{' + channel + '}',
    occupancyPublishers: (channel) => prefix + 'op:{' + channel + '}',
    occupancyNodes: () => prefix + 'occ:{nodes}',
    occupancyReaping: () => prefix + 'occ:{nodes}:reaping',
    occupancyNodeChannels: (node) => prefix + 'occ:n:' + node,
    channelOf: (pubsub) => {
      if (!pubsub.endsWith('}')) return undefined;
      if (pubsub.startsWith(pubsubHead)) return pubsub.slice(pubsubHead.length, -1);
      if (pubsub.startsWith(presenceHead))
        return PRESENCE_STREAM_PREFIX + pubsub.slice(presenceHead.length, -1);
      return undefined;
    },
  };
}
