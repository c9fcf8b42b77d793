import { createHmac, timingSafeEqual } from 'node:crypto';

/** The header carrying the timestamp and signature of a delivery. */
export const SIGNATURE_HEADER = 'Switchboard-Signature';
/** The header carrying the event id (the same on every attempt: the receiver's dedupe key). */
export const EVENT_ID_HEADER = 'Switchboard-Event-Id';

/** `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. */
export function signWebhook(secret: string, rawBody: string | Buffer, unixSeconds: number): string {
  const mac = createHmac('sha256', secret).update(`${unixSeconds}.`).update(rawBody).digest('hex');
  return `t=${unixSeconds},v1=${mac}`;
}

/**
 * Whether `header` (the Switchboard-Signature value) signs `rawBody` (the bytes received, before
 * any JSON parsing) with `secret`, made at most `toleranceS` seconds from now (against replays).
 * Compares in constant time; several v1 entries (secret rotation) are accepted if any matches.
 *
 * @example
 * const header = String(req.headersDistinct['switchboard-signature']?.[0] ?? '');
 * if (!verifyWebhook(process.env.SECRET, rawBody, header, 300))
 *   return res.writeHead(400).end();
 */
export function verifyWebhook(
  secret: string,
  rawBody: string | Buffer,
  header: string | undefined,
  toleranceS = 300,
  nowS = Math.floor(Date.now() / 1000),
): boolean {
  if (header === undefined) return false;
  let t: number | undefined;
  const sigs: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (k === 't' && /^\d{1,12}$/.test(v)) t = Number(v);
    else if (k === 'v1' && /^[0-9a-f]{64}$/.test(v)) sigs.push(v);
  }
  if (t === undefined || sigs.length === 0 || Math.abs(nowS - t) > toleranceS) return false;
  const want = Buffer.from(signWebhook(secret, rawBody, t).slice(`t=${t},v1=`.length), 'hex');
  return sigs.some((s) => timingSafeEqual(Buffer.from(s, 'hex'), want));
}
