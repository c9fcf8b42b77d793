import { createRequire } from 'node:module';

export type UwsModule = typeof import('uWebSockets.js');

/**
 * Loads the native uWebSockets.js module, if something provides that module name and its binary
 * fits this Node and libc. The npm mirror we ship (@trufflesuite/uws-js-unofficial) quietly swaps
 * in a JavaScript emulation when its binary does not load; that is slower than the ws engine, so
 * it counts as "not loaded" here and its console warning becomes our reason.
 */
export function loadUws(): { readonly uws: UwsModule } | { readonly error: string } {
  const require = createRequire(import.meta.url);
  const warnings: string[] = [];
  // The mirror reports a missing binary (or UWS_USE_FALLBACK) on the console; capture it as the
  // reason we log once.
  /* eslint-disable no-console */
  const { warn, log } = console;
  console.warn = console.log = (...args: unknown[]) => warnings.push(args.map(String).join(' '));
  try {
    const uws = require('uWebSockets.js') as UwsModule;
    if (!String(uws.App).includes('[native code]')) {
      const why = warnings.join(' ').replace(/\s+/g, ' ').trim();
      return { error: `no native binary for this platform (${why || 'JavaScript fallback'})` };
    }
    return { uws };
  } catch (err) {
    return { error: (err as Error).message.split('\n', 1)[0] ?? 'cannot load' };
  } finally {
    console.warn = warn;
    console.log = log;
  }
  /* eslint-enable no-console */
}
