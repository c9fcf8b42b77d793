/**
 * Which uWebSockets.js build the uws engine loads, per Node ABI and glibc (the matrix in the
 * README), and that a server reports what it loaded, or why it fell back to ws, in its log.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { currentPlatform, loadUws, selectUwsBuild, UWS_BUILDS } from '../src/engine/uws-load.js';
import { startNodeProcess } from './helpers.js';

const label = (r: ReturnType<typeof selectUwsBuild>): string =>
  'build' in r ? r.build.label : `error: ${r.error}`;

describe('uWebSockets.js build selection', () => {
  it('Node 20 (ABI 115): the 20.30 build, whatever the glibc', () => {
    assert.match(label(selectUwsBuild({ abi: 115, glibc: '2.36' })), /trufflesuite.*20\.30/);
    assert.match(label(selectUwsBuild({ abi: 115, glibc: undefined })), /trufflesuite/);
  });

  it('Node 22 and 24 (ABI 127, 137): the 20.57 build where glibc >= 2.38, else a reason', () => {
    for (const abi of [127, 137]) {
      assert.match(label(selectUwsBuild({ abi, glibc: '2.39' })), /btc-vision.*20\.57/);
      assert.match(label(selectUwsBuild({ abi, glibc: '2.38' })), /btc-vision/);
      assert.match(label(selectUwsBuild({ abi, glibc: undefined })), /btc-vision/, 'musl: try it');
      assert.equal(
        label(selectUwsBuild({ abi, glibc: '2.36' })),
        `error: @btc-vision/uwebsockets.js 20.57 (the build for Node ABI ${abi}) needs glibc >= 2.38; this system has 2.36`,
      );
    }
  });

  it('an ABI no build covers is a reason, not a crash', () => {
    assert.match(
      label(selectUwsBuild({ abi: 999, glibc: '2.40' })),
      /no uWebSockets\.js build for Node ABI 999/,
    );
    assert.ok(UWS_BUILDS.length >= 2);
  });

  it('on this Node: loads what the matrix selects, or says why not', () => {
    const platform = currentPlatform();
    assert.equal(platform.abi, Number(process.versions.modules));
    const selected = selectUwsBuild(platform);
    const loaded = loadUws(platform);
    if ('error' in selected) {
      assert.deepEqual(loaded, selected);
    } else if ('uws' in loaded) {
      assert.equal(loaded.build, selected.build.label);
      assert.match(String(loaded.uws.App), /\[native code\]/);
    } else {
      assert.match(loaded.error, new RegExp(selected.build.label.replace(/[.]/g, '\\.')));
    }
    // What this machine (Debian 12, glibc 2.36) does, so a regression in the matrix shows here.
    if (platform.glibc === '2.36') {
      if (platform.abi === 115) assert.ok('uws' in loaded, JSON.stringify(loaded));
      else assert.match('error' in loaded ? loaded.error : '', /needs glibc >= 2\.38/);
    }
  });

  it('a server with --engine uws logs the build it loaded, or the fallback to ws and why', async () => {
    const node = await startNodeProcess(['--engine', 'uws']);
    try {
      const out = node.output();
      const loaded = loadUws();
      if ('uws' in loaded) {
        assert.match(out, new RegExp(`"build":"${loaded.build}".*uWebSockets\\.js loaded`));
        assert.match(out, /"engine":"uws"/);
      } else {
        assert.equal(
          out.match(/uWebSockets\.js did not load; falling back to the ws engine/g)?.length,
          1,
          out,
        );
        assert.ok(out.includes(JSON.stringify(loaded.error)), out);
        assert.match(out, /"engine":"ws"/);
      }
    } finally {
      await node.stop();
    }
  });
});
