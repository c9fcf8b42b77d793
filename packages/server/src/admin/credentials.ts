import { createHash, createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

/**
 * The admin session: a stateless cookie `sb_admin=<sid>.<expires>.<mac>` signed with HMAC-SHA256
 * under a key every node derives from the same configuration (so any node accepts a session
 * another issued), and a CSRF token bound to the session by the same key. Changing the admin
 * password changes the key, which ends every session.
 */

export const COOKIE = 'sb_admin';
/** How long a login lasts. */
export const SESSION_MS = 8 * 3_600_000;

export interface AdminSession {
  readonly sid: string;
  readonly expires: number;
}

export class SessionSigner {
  readonly #key: Buffer;

  constructor(material: string) {
    this.#key = createHash('sha256')
      .update('switchboard admin session\n')
      .update(material)
      .digest();
  }

  #mac(text: string): string {
    return createHmac('sha256', this.#key).update(text).digest('base64url');
  }

  issue(now: number): { value: string; session: AdminSession } {
    const sid = randomBytes(16).toString('base64url');
    const expires = now + SESSION_MS;
    return {
      value: `${sid}.${expires}.${this.#mac(`s:${sid}.${expires}`)}`,
      session: { sid, expires },
    };
  }

  /** The session a cookie value names, when its signature holds and it has not expired. */
  verify(value: string | undefined, now: number): AdminSession | undefined {
    if (value === undefined) return undefined;
    const m = /^([A-Za-z0-9_-]{22})\.(\d{1,16})\.([A-Za-z0-9_-]{43})$/.exec(value);
    if (m === null) return undefined;
    const [, sid, exp, mac] = m as unknown as [string, string, string, string];
    if (!equal(mac, this.#mac(`s:${sid}.${exp}`))) return undefined;
    const expires = Number(exp);
    return expires > now ? { sid, expires } : undefined;
  }

  csrf(session: AdminSession): string {
    return this.#mac(`c:${session.sid}`);
  }

  csrfMatches(session: AdminSession, header: string | string[] | undefined): boolean {
    return typeof header === 'string' && equal(header, this.csrf(session));
  }
}

function equal(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The value of one cookie in a Cookie header. */
export function cookieValue(
  header: string | string[] | undefined,
  name: string,
): string | undefined {
  if (typeof header !== 'string') return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** scrypt parameters of adminPasswordHash (node's defaults: N=16384, r=8, p=1). */
const HASH_BYTES = 64;

/** Checks a password against adminPassword or adminPasswordHash, without blocking the loop. */
export type PasswordCheck = (password: string) => Promise<boolean>;

/** Why a configured hash cannot be used, or undefined. */
export function passwordHashError(hash: string): string | undefined {
  return /^scrypt\$[0-9a-f]{16,128}\$[0-9a-f]{128}$/.test(hash)
    ? undefined
    : 'expected scrypt$<salt hex>$<64-byte hash hex> (docs/operations.md, Admin API)';
}

/** The adminPasswordHash form of `password` (also for the docs' one-liner). */
export function hashPassword(password: string, salt = randomBytes(16)): Promise<string> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, HASH_BYTES, (err, key) => {
      if (err) reject(err);
      else resolve(`scrypt$${salt.toString('hex')}$${key.toString('hex')}`);
    });
  });
}

export function passwordCheck(
  plain: string | undefined,
  hash: string | undefined,
): PasswordCheck | undefined {
  if (hash !== undefined) {
    const [, saltHex, keyHex] = hash.split('$') as [string, string, string];
    const salt = Buffer.from(saltHex, 'hex');
    const expected = Buffer.from(keyHex, 'hex');
    return (password) =>
      new Promise((resolve) => {
        scrypt(password, salt, HASH_BYTES, (err, key) => {
          resolve(err === null && timingSafeEqual(key, expected));
        });
      });
  }
  if (plain !== undefined) {
    const expected = createHash('sha256').update(plain).digest();
    return (password) =>
      Promise.resolve(timingSafeEqual(expected, createHash('sha256').update(password).digest()));
  }
  return undefined;
}
