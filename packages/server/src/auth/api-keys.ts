import { createHash, timingSafeEqual } from 'node:crypto';
import { parseCapabilities, type Credentials } from './auth.js';

/** One configured backend key: `name:secret` with its own capabilities. */
export interface ApiKeyConfig {
  readonly name: string;
  readonly secret: string;
  /** `{"chat:*": ["publish", "history"]}`, as in tokens. */
  readonly capabilities: Readonly<Record<string, readonly string[]>>;
  /** May use the admin API (revocations). */
  readonly admin?: boolean;
}

interface StoredKey {
  readonly digest: Buffer;
  readonly credentials: Credentials;
}

/** Validates the `apiKeys` setting; returns why it is malformed as a string. */
export function apiKeysError(value: unknown): string | undefined {
  if (!Array.isArray(value)) return 'expected a list of {name, secret, capabilities, admin?}';
  const names = new Set<string>();
  for (const [i, k] of value.entries()) {
    if (typeof k !== 'object' || k === null) return `apiKeys[${i}] must be an object`;
    const { name, secret, capabilities, admin } = k as Record<string, unknown>;
    if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(name))
      return `apiKeys[${i}].name must be 1-64 of A-Z a-z 0-9 _ . -`;
    if (names.has(name)) return `apiKeys[${i}].name ${name} is used twice`;
    names.add(name);
    if (typeof secret !== 'string' || Buffer.byteLength(secret) < 16)
      return `apiKeys[${i}].secret must be a string of at least 16 bytes`;
    const caps = parseCapabilities(capabilities);
    if (typeof caps === 'string') return `apiKeys[${i}].capabilities: ${caps}`;
    if (admin !== undefined && typeof admin !== 'boolean')
      return `apiKeys[${i}].admin must be true or false`;
  }
  return undefined;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/**
 * Checks `Authorization` headers against the configured keys: `Basic base64(name:secret)` or
 * `Bearer name:secret`. Secrets are compared as SHA-256 digests with timingSafeEqual, so neither
 * their content nor their length leaks through timing.
 */
export class ApiKeys {
  readonly #keys = new Map<string, StoredKey>();

  constructor(keys: readonly ApiKeyConfig[]) {
    for (const k of keys) {
      const capabilities = parseCapabilities(k.capabilities);
      if (typeof capabilities === 'string')
        throw new TypeError(`api key ${k.name}: ${capabilities}`);
      this.#keys.set(k.name, {
        digest: digest(k.secret),
        credentials: { kind: 'apiKey', userId: k.name, capabilities, admin: k.admin === true },
      });
    }
  }

  get size(): number {
    return this.#keys.size;
  }

  /** The key's credentials, or undefined when the header holds no valid key. */
  verify(authorization: string | undefined): Credentials | undefined {
    if (authorization === undefined) return undefined;
    const space = authorization.indexOf(' ');
    if (space === -1) return undefined;
    const scheme = authorization.slice(0, space).toLowerCase();
    let pair = authorization.slice(space + 1).trim();
    if (scheme === 'basic') pair = Buffer.from(pair, 'base64').toString('utf8');
    else if (scheme !== 'bearer') return undefined;
    const colon = pair.indexOf(':');
    if (colon <= 0) return undefined;
    const stored = this.#keys.get(pair.slice(0, colon));
    // Compare against a dummy when the name is unknown so both paths cost the same.
    const expected = stored?.digest ?? DUMMY;
    const ok = timingSafeEqual(expected, digest(pair.slice(colon + 1)));
    return ok && stored !== undefined ? stored.credentials : undefined;
  }
}

const DUMMY = digest('no such key');
