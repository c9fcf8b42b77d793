import { createRequire } from 'node:module';

export type UwsModule = typeof import('uWebSockets.js');

/** One uWebSockets.js build we ship (as an optional dependency) and what it needs. */
export interface UwsBuild {
  /** The module name to require. */
  readonly module: string;
  /** What it is, for the log line. */
  readonly label: string;
  /** Node ABIs (`process.versions.modules`) it has native binaries for. */
  readonly abis: readonly number[];
  /** The glibc it was linked against (Linux); older glibc cannot load it. */
  readonly minGlibc?: string;
}

/**
 * The matrix (README "Node versions and engines"): uWebSockets.js builds are per Node ABI, and no
 * single npm package covers Node 20 to 24 on the glibc of Debian 12 / Ubuntu 22.04.
 */
export const UWS_BUILDS: readonly UwsBuild[] = [
  {
    module: 'uWebSockets.js',
    label: '@trufflesuite/uws-js-unofficial 20.30',
    abis: [108, 111, 115],
  },
  {
    module: '@btc-vision/uwebsockets.js',
    label: '@btc-vision/uwebsockets.js 20.57',
    abis: [115, 127, 137, 141],
    minGlibc: '2.38',
  },
];

export interface Platform {
  /** `process.versions.modules`. */
  readonly abi: number;
  /** glibc version at run time, undefined off glibc (musl, macOS, Windows). */
  readonly glibc: string | undefined;
}

export function currentPlatform(): Platform {
  const header = (
    process.report.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
  )?.header;
  return { abi: Number(process.versions.modules), glibc: header?.glibcVersionRuntime };
}

/**
 * The build to try on `platform`, or why none fits. Pure, so the whole matrix is testable on one
 * machine. Node 20 prefers the 20.30 build: it is the one the uws suites have run against longest.
 */
export function selectUwsBuild(
  platform: Platform,
  builds: readonly UwsBuild[] = UWS_BUILDS,
): { readonly build: UwsBuild } | { readonly error: string } {
  const forAbi = builds.filter((b) => b.abis.includes(platform.abi));
  if (forAbi.length === 0)
    return { error: `no uWebSockets.js build for Node ABI ${platform.abi} (${process.version})` };
  const fits = forAbi.find(
    (b) =>
      b.minGlibc === undefined ||
      platform.glibc === undefined ||
      compareVersions(platform.glibc, b.minGlibc) >= 0,
  );
  if (fits !== undefined) return { build: fits };
  const b = forAbi[0] as UwsBuild;
  return {
    error: `${b.label} (the build for Node ABI ${platform.abi}) needs glibc >= ${b.minGlibc ?? '?'}; this system has ${platform.glibc ?? '?'}`,
  };
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * Loads the native uWebSockets.js build for this Node and libc, if one is installed and fits. The
 * 20.30 mirror quietly swaps in a JavaScript emulation when its binary does not load; that is
 * slower than the ws engine, so it counts as "not loaded" here and its console warning becomes
 * our reason.
 */
export function loadUws(
  platform: Platform = currentPlatform(),
): { readonly uws: UwsModule; readonly build: string } | { readonly error: string } {
  const selected = selectUwsBuild(platform);
  if ('error' in selected) return selected;
  const { build } = selected;
  const require = createRequire(import.meta.url);
  const warnings: string[] = [];
  // The mirror reports a missing binary (or UWS_USE_FALLBACK) on the console; capture it as the
  // reason we log once.
  /* eslint-disable no-console */
  const { warn, log } = console;
  console.warn = console.log = (...args: unknown[]) => warnings.push(args.map(String).join(' '));
  try {
    const uws = require(build.module) as UwsModule;
    if (!String(uws.App).includes('[native code]')) {
      const why = warnings.join(' ').replace(/\s+/g, ' ').trim();
      return {
        error: `${build.label}: no native binary for this platform (${why || 'JavaScript fallback'})`,
      };
    }
    return { uws, build: build.label };
  } catch (err) {
    return {
      error: `${build.label}: ${(err as Error).message.split('\n', 1)[0] ?? 'cannot load'}`,
    };
  } finally {
    console.warn = warn;
    console.log = log;
  }
  /* eslint-enable no-console */
}
