import { BlockList, isIP } from 'node:net';

/**
 * The address of the client behind a request. A request whose peer is one of the trusted proxies
 * (`trustProxy`: addresses or CIDR ranges) is attributed to the nearest address in its
 * X-Forwarded-For that is not itself a trusted proxy, read from the right: a client can write
 * anything on the left of that header, only the proxies' own appends can be believed. Without
 * trusted proxies, or from any other peer, the header is ignored and the peer is the client.
 */
export class ClientAddresses {
  readonly #trusted: BlockList | undefined;

  constructor(trustProxy: readonly string[]) {
    if (trustProxy.length === 0) return;
    const list = new BlockList();
    for (const entry of trustProxy) {
      const parsed = parseProxyEntry(entry);
      if (parsed === undefined) throw new Error(`trustProxy: ${entry} is not an address or CIDR`);
      const [address, prefix, family] = parsed;
      if (prefix === undefined) list.addAddress(address, family);
      else list.addSubnet(address, prefix, family);
    }
    this.#trusted = list;
  }

  of(req: {
    readonly socket: { readonly remoteAddress?: string | undefined };
    readonly headers: { readonly [name: string]: string | string[] | undefined };
  }): string {
    const peer = plain(req.socket.remoteAddress ?? '');
    if (this.#trusted === undefined || !this.#isTrusted(peer)) return peer || 'unknown';
    const header = req.headers['x-forwarded-for'];
    const hops = (Array.isArray(header) ? header.join(',') : (header ?? ''))
      .split(',')
      .map((h) => plain(h.trim()));
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i] as string;
      // A hop that is no address at all was not written by a proxy we trust: stop believing there.
      if (isIP(hop) === 0) return peer;
      if (!this.#isTrusted(hop)) return hop;
    }
    // Every hop is one of ours: the leftmost is as close to the client as we can tell.
    return isIP(hops[0] ?? '') !== 0 ? (hops[0] as string) : peer;
  }

  #isTrusted(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.#trusted!.check(address, family === 4 ? 'ipv4' : 'ipv6');
  }
}

/** `[address, prefix?, family]` of an address or CIDR range; undefined when it is neither. */
export function parseProxyEntry(
  entry: string,
): [string, number | undefined, 'ipv4' | 'ipv6'] | undefined {
  const slash = entry.indexOf('/');
  const address = slash === -1 ? entry : entry.slice(0, slash);
  const family = isIP(address);
  if (family === 0) return undefined;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (slash === -1) return [address, undefined, type];
  const bits = entry.slice(slash + 1);
  const prefix = /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
  if (!(prefix >= 0 && prefix <= (family === 4 ? 32 : 128))) return undefined;
  return [address, prefix, type];
}

/** An IPv4 client seen through a dual-stack socket (`::ffff:10.0.0.1`) as plain IPv4. */
function plain(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}
