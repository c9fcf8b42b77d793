import { createHash } from 'node:crypto';

/** The events an endpoint may ask for. */
export const WEBHOOK_EVENTS = [
  'channel.occupied',
  'channel.vacated',
  'presence.enter',
  'presence.leave',
  'presence.update',
  'message.published',
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENTS)[number];

/** One endpoint as configured (`webhooks: [...]`). */
export interface WebhookConfig {
  readonly url: string;
  readonly events: readonly WebhookEventType[];
  /** Glob over channel names: `*` any run of characters, `?` one; default `*`. */
  readonly channels: string;
  /** Signing secret; the global `webhookSecret` when absent. */
  readonly secret?: string;
}

/** An endpoint ready to use: its stable id (the same on every node) and its channel matcher. */
export interface Endpoint {
  /** 16 hex digits of SHA-256(url): names its Redis stream, the same on every node and restart. */
  readonly id: string;
  readonly url: string;
  readonly events: ReadonlySet<WebhookEventType>;
  readonly secret: string;
  matches(channel: string): boolean;
}

/** Why a `webhooks` value is not a valid list of endpoints, or undefined when it is. */
export function webhooksError(value: unknown): string | undefined {
  if (!Array.isArray(value)) return 'expected a JSON list of {url, events, channels, secret?}';
  const seen = new Set<string>();
  for (const [i, raw] of value.entries()) {
    const at = `webhooks[${i}]`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      return `${at} must be an object`;
    const e = raw as Record<string, unknown>;
    for (const k of Object.keys(e))
      if (!['url', 'events', 'channels', 'secret'].includes(k))
        return `${at}: unknown setting ${k}`;
    let url: URL | undefined;
    try {
      url = typeof e['url'] === 'string' ? new URL(e['url']) : undefined;
    } catch {
      url = undefined;
    }
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:'))
      return `${at}.url must be an http(s) URL`;
    if (seen.has(url.href)) return `${at}.url ${url.href} is configured twice`;
    seen.add(url.href);
    const events = e['events'];
    if (
      !Array.isArray(events) ||
      events.length === 0 ||
      !events.every((x) => (WEBHOOK_EVENTS as readonly unknown[]).includes(x))
    )
      return `${at}.events must be a non-empty list of ${WEBHOOK_EVENTS.join(', ')}`;
    if (e['channels'] !== undefined && (typeof e['channels'] !== 'string' || e['channels'] === ''))
      return `${at}.channels must be a glob string like "chat:*"`;
    if (e['secret'] !== undefined && (typeof e['secret'] !== 'string' || e['secret'].length < 16))
      return `${at}.secret must be a string of at least 16 characters`;
  }
  return undefined;
}

/** `*` any run of characters, `?` one character, everything else literal. */
function globMatcher(glob: string): (channel: string) => boolean {
  if (glob === '*') return () => true;
  const source = glob
    .split('')
    .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
    .join('');
  const re = new RegExp(`^${source}$`, 's');
  return (channel) => re.test(channel);
}

/** Endpoints from validated configuration; each needs a secret of its own or the global one. */
export function endpointsOf(
  configs: readonly WebhookConfig[],
  globalSecret: string | undefined,
): Endpoint[] {
  return configs.map((c) => {
    const url = new URL(c.url).href;
    const secret = c.secret ?? globalSecret;
    if (secret === undefined) throw new RangeError(`webhook ${url} has no secret`);
    return {
      id: createHash('sha256').update(url).digest('hex').slice(0, 16),
      url,
      events: new Set(c.events),
      secret,
      matches: globMatcher(c.channels),
    };
  });
}
