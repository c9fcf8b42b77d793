/**
 * Who a request comes from behind trusted proxies (trustProxy, the admin lockout's key): the
 * nearest X-Forwarded-For hop from the right that is not a listed proxy; the peer otherwise.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ClientAddresses } from '../src/client-address.js';

const req = (peer: string, xff?: string | string[]) => ({
  socket: { remoteAddress: peer },
  headers: xff === undefined ? {} : { 'x-forwarded-for': xff },
});

describe('ClientAddresses', () => {
  it('ignores X-Forwarded-For without trusted proxies, or from a peer that is not one', () => {
    assert.equal(new ClientAddresses([]).of(req('10.0.0.1', '1.2.3.4')), '10.0.0.1');
    const a = new ClientAddresses(['10.0.0.0/8']);
    assert.equal(a.of(req('192.0.2.1', '1.2.3.4')), '192.0.2.1');
  });

  it('takes the rightmost hop that is not a trusted proxy', () => {
    const a = new ClientAddresses(['10.0.0.0/8', '2001:db8::/32']);
    assert.equal(a.of(req('10.0.0.1', '9.9.9.9, 1.2.3.4')), '1.2.3.4');
    assert.equal(a.of(req('10.0.0.1', '1.2.3.4, 10.1.1.1')), '1.2.3.4');
    assert.equal(a.of(req('2001:db8::1', '2001:db8::2, 2001:db8:ffff::1')), '2001:db8::2');
    assert.equal(a.of(req('10.0.0.1', ['5.6.7.8', '10.2.2.2'])), '5.6.7.8');
    // An IPv4 peer on a dual-stack socket is still the IPv4 proxy.
    assert.equal(a.of(req('::ffff:10.0.0.1', '1.2.3.4')), '1.2.3.4');
  });

  it('falls back to the peer on a missing or malformed header, to the leftmost when all are proxies', () => {
    const a = new ClientAddresses(['10.0.0.0/8']);
    assert.equal(a.of(req('10.0.0.1')), '10.0.0.1');
    assert.equal(a.of(req('10.0.0.1', 'unknown, 1.2.3.4, garbage')), '10.0.0.1');
    assert.equal(a.of(req('10.0.0.1', '10.3.3.3, 10.4.4.4')), '10.3.3.3');
  });

  it('refuses an entry that is no address or range', () => {
    assert.throws(() => new ClientAddresses(['10.0.0.0/33']), /trustProxy/);
    assert.throws(() => new ClientAddresses(['proxy.local']), /trustProxy/);
  });
});
