/**
 * Channel names: 1-255 characters from a safe set, so that a name can be embedded in a Redis key,
 * a Redis Cluster hash tag and a URL path without escaping, and can never act as a glob pattern.
 */

export const MAX_CHANNEL_LENGTH = 255;

const CHANNEL_RE = /^[A-Za-z0-9_.:@/=,~-]{1,255}$/;

/** The characters a channel name may use, for error messages and docs. */
export const CHANNEL_CHARSET = 'A-Z a-z 0-9 _ . : @ / = , ~ -';

/** Returns why `name` is not a valid channel name, or undefined when it is. */
export function channelError(name: unknown): string | undefined {
  if (typeof name !== 'string') return 'channel must be a string';
  if (name.length === 0) return 'channel must not be empty';
  if (name.length > MAX_CHANNEL_LENGTH)
    return `channel is longer than ${MAX_CHANNEL_LENGTH} characters`;
  if (!CHANNEL_RE.test(name)) return `channel may only contain ${CHANNEL_CHARSET}`;
  return undefined;
}

/** The namespace of a channel: the part before the first ':' ('' when there is none). */
export function channelNamespace(name: string): string {
  const i = name.indexOf(':');
  return i === -1 ? '' : name.slice(0, i);
}
