/**
 * Ably credentials mapped onto Switchboard's: API keys in Ably's form (`appId.keyId:secret`, the
 * key name holds the dot) are Switchboard API keys; Ably tokens are JWTs signed per key (`kid` =
 * key name, HS256 with the key's secret) carrying `x-ably-capability` (a JSON string) and an
 * optional `x-ably-clientId`. A token can never do more than the key that signed it.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import type { ApiKeyConfig, ApiKeys } from '../auth/api-keys.js';
import {
  ANONYMOUS,
  OPEN,
  type Capability,
  type Credentials,
  type Permission,
} from '../auth/auth.js';
import type { AccessPolicy } from '../auth/policy.js';
import { AblyCode, ablyError, type AblyErrorInfo } from './codec.js';

export type AblyAuthResult =
  | {
      readonly credentials: Credentials;
      /** The key a token was signed with: the token may do only what both allow. */
      readonly limit?: Credentials;
      /** The identity the credentials fix (`*`: any the client picks), if any. */
      readonly clientId?: string;
    }
  | { readonly error: AblyErrorInfo };

const ABLY_OPS: Record<string, readonly Permission[]> = {
  publish: ['publish'],
  subscribe: ['subscribe'],
  presence: ['presence'],
  history: ['history'],
  '*': ['subscribe', 'publish', 'presence', 'history'],
};

/**
 * Ably capability JSON (`{"chat:*":["publish","subscribe"],"*":["*"]}`) as Switchboard
 * capabilities; ops Switchboard has no counterpart for (push, stats, …) are dropped. A string
 * saying why when it is malformed.
 */
export function fromAblyCapability(text: unknown): Capability[] | string {
  let value: unknown = text;
  if (typeof text === 'string') {
    try {
      value = JSON.parse(text);
    } catch {
      return 'capability is not JSON';
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return 'capability must be an object of resource → operations';
  const out: Capability[] = [];
  for (const [resource, ops] of Object.entries(value as Record<string, unknown>)) {
    if (!Array.isArray(ops)) return `operations of ${JSON.stringify(resource)} must be a list`;
    const allow = new Set<Permission>();
    for (const op of ops) for (const p of ABLY_OPS[String(op)] ?? []) allow.add(p);
    // Ably's `[*]*` / `[qualifier]name` forms address channels across apps; only the name matters here.
    const pattern = resource.replace(/^\[[^\]]*\]/, '');
    if (pattern.slice(0, -1).includes('*')) return `unsupported resource pattern ${resource}`;
    if (allow.size > 0) out.push({ channels: [pattern], allow: [...allow] });
  }
  return out;
}

/** Switchboard capabilities as Ably capability JSON (TokenDetails.capability). */
export function toAblyCapability(caps: readonly Capability[]): string {
  const out: Record<string, string[]> = {};
  for (const c of caps)
    for (const ch of c.channels) out[ch] = [...new Set([...(out[ch] ?? []), ...c.allow])];
  return JSON.stringify(out);
}

export class AblyAuth {
  readonly #apiKeys: ApiKeys;
  readonly #secrets = new Map<string, Uint8Array>();
  readonly #keyCreds = new Map<string, Credentials>();
  readonly #policy: AccessPolicy;

  constructor(keys: readonly ApiKeyConfig[], apiKeys: ApiKeys, policy: AccessPolicy) {
    this.#apiKeys = apiKeys;
    this.#policy = policy;
    for (const k of keys) {
      this.#secrets.set(k.name, new TextEncoder().encode(k.secret));
      const creds = apiKeys.verify(`Bearer ${k.name}:${k.secret}`);
      if (creds !== undefined) this.#keyCreds.set(k.name, creds);
    }
  }

  /** The credentials of a WebSocket's `key=` or `access_token=`, or the Ably error for them. */
  async connect(key: string | null, token: string | null): Promise<AblyAuthResult> {
    if (token !== null) return this.token(token);
    if (key !== null) return this.key(key);
    if (!this.#policy.enabled) return { credentials: OPEN };
    if (this.#policy.anonymousAnywhere) return { credentials: ANONYMOUS };
    return {
      error: ablyError(AblyCode.NO_KEY, 'no key or token given (key= or access_token=)', 401),
    };
  }

  /** `appId.keyId:secret`: basic auth. With no auth configured anything is accepted. */
  key(key: string): AblyAuthResult {
    if (!this.#policy.enabled) return { credentials: OPEN, clientId: '*' };
    const creds = this.#apiKeys.verify(`Bearer ${key}`);
    if (creds === undefined)
      return { error: ablyError(AblyCode.INVALID_CREDENTIALS, 'Invalid key in request', 401) };
    // Basic auth lets the client name itself.
    return { credentials: creds, clientId: '*' };
  }

  /** An Ably JWT signed with one of the configured keys. */
  async token(token: string): Promise<AblyAuthResult> {
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch {
      return { error: ablyError(AblyCode.INVALID_CREDENTIALS, 'token is not a JWT', 401) };
    }
    const secret = kid === undefined ? undefined : this.#secrets.get(kid);
    const limit = kid === undefined ? undefined : this.#keyCreds.get(kid);
    if (secret === undefined || limit === undefined)
      return {
        error: ablyError(
          AblyCode.INVALID_CREDENTIALS,
          'token not signed by a known key (kid)',
          401,
        ),
      };
    let payload;
    try {
      ({ payload } = await jwtVerify(token, secret, { algorithms: ['HS256'] }));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired)
        return { error: ablyError(AblyCode.TOKEN_EXPIRED, 'Token expired', 401) };
      return {
        error: ablyError(AblyCode.INVALID_CREDENTIALS, 'token signature is not valid', 401),
      };
    }
    const caps = fromAblyCapability(payload['x-ably-capability'] ?? '{"*":["*"]}');
    if (typeof caps === 'string')
      return { error: ablyError(AblyCode.INVALID_CREDENTIALS, caps, 401) };
    const clientId = payload['x-ably-clientId'];
    const credentials: Credentials = {
      kind: 'token',
      userId: typeof clientId === 'string' ? clientId : (kid ?? ''),
      capabilities: caps,
      ...(typeof payload.jti === 'string' ? { tokenId: payload.jti } : {}),
      ...(typeof payload.iat === 'number' ? { issuedAt: payload.iat * 1000 } : {}),
      ...(typeof payload.exp === 'number' ? { expiresAt: payload.exp * 1000 } : {}),
    };
    return {
      credentials,
      limit,
      ...(typeof clientId === 'string' ? { clientId } : {}),
    };
  }

  /**
   * A token for a TokenRequest (`POST /keys/{keyName}/requestToken`): checks its mac the way the
   * SDK computes it, then issues an Ably JWT. Undefined key or mac: the Ably error.
   */
  async issue(
    req: Record<string, unknown>,
    keyName: string,
    now: number,
  ): Promise<Record<string, unknown> | AblyErrorInfo> {
    const secret = this.#secrets.get(keyName);
    const limit = this.#keyCreds.get(keyName);
    if (secret === undefined || limit === undefined || req['keyName'] !== keyName)
      return ablyError(AblyCode.INVALID_CREDENTIALS, 'unknown key', 401);
    const str = (v: unknown): string =>
      typeof v === 'string' || typeof v === 'number' ? String(v) : '';
    const text =
      [
        req['keyName'],
        req['ttl'],
        req['capability'],
        req['clientId'],
        req['timestamp'],
        req['nonce'],
      ]
        .map(str)
        .join('\n') + '\n';
    const mac = createHmac('sha256', Buffer.from(secret)).update(text).digest('base64');
    if (typeof req['mac'] !== 'string' || req['mac'] !== mac)
      return ablyError(AblyCode.INVALID_CREDENTIALS, 'TokenRequest mac does not match', 401);
    const ts = Number(req['timestamp']);
    if (!(Math.abs(now - ts) < 10 * 60_000))
      return ablyError(40104, 'TokenRequest timestamp is not within 10 minutes of now', 401);
    const ttl = req['ttl'] === undefined || req['ttl'] === '' ? 3_600_000 : Number(req['ttl']);
    if (!(ttl > 0 && ttl <= 24 * 3_600_000)) return ablyError(40003, 'ttl out of range', 400);
    const capability =
      typeof req['capability'] === 'string' && req['capability'] !== ''
        ? req['capability']
        : toAblyCapability(limit.capabilities);
    const caps = fromAblyCapability(capability);
    if (typeof caps === 'string') return ablyError(40003, caps, 400);
    const clientId =
      typeof req['clientId'] === 'string' && req['clientId'] !== '' ? req['clientId'] : undefined;
    const issued = Math.floor(now / 1000);
    const jwt = new SignJWT({
      'x-ably-capability': capability,
      ...(clientId !== undefined ? { 'x-ably-clientId': clientId } : {}),
    })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid: keyName })
      // A jti makes one token revocable on its own (POST /v1/revocations {"jti"}).
      .setJti(randomBytes(12).toString('base64url'))
      .setIssuedAt(issued)
      .setExpirationTime(issued + Math.ceil(ttl / 1000));
    const token = await jwt.sign(secret);
    return {
      token,
      keyName,
      issued: issued * 1000,
      expires: (issued + Math.ceil(ttl / 1000)) * 1000,
      capability,
      ...(clientId !== undefined ? { clientId } : {}),
    };
  }
}
