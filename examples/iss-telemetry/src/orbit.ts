/**
 * Where the station is, computed offline: SGP4 (satellite.js) from a two-line element set. The
 * bundled set (data/iss.tle) is the one satellite.js documents, epoch 2019-06-05; SGP4's error
 * grows with the distance from the epoch, so for the real station today pass a fresh set with
 * `--tle FILE`. Positions are always consistent with SGP4 for the set in use.
 */
import { readFileSync } from 'node:fs';
import {
  degreesLat,
  degreesLong,
  eciToGeodetic,
  gstime,
  propagate,
  twoline2satrec,
  type SatRec,
} from 'satellite.js';

export const BUNDLED_TLE = new URL('../data/iss.tle', import.meta.url);

/** One position report: what the publisher posts to `iss.telemetry`. */
export interface Telemetry {
  /** Milliseconds since the Unix epoch the position is for. */
  readonly timestamp: number;
  readonly latitude: number;
  readonly longitude: number;
  /** Height above the WGS-84 ellipsoid, km (from the model: open-notify does not report it). */
  readonly altitudeKm: number;
  /** Speed relative to the Earth's centre, km/h (from the model). */
  readonly speedKmh: number;
  /** Where latitude and longitude came from. */
  readonly source: 'open-notify' | 'sgp4';
}

export interface Orbit {
  /** The TLE's first line (names the set in use). */
  readonly line1: string;
  at(date: Date): Omit<Telemetry, 'source'>;
}

/** Reads a TLE file: an optional name line, then lines 1 and 2. */
export function loadOrbit(file: URL | string = BUNDLED_TLE): Orbit {
  const lines = readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  const line1 = lines.find((l) => l.startsWith('1 '));
  const line2 = lines.find((l) => l.startsWith('2 '));
  if (line1 === undefined || line2 === undefined)
    throw new Error(`${String(file)}: no TLE lines 1 and 2`);
  const rec = twoline2satrec(line1, line2);
  return { line1, at: (date) => positionAt(rec, date) };
}

function positionAt(rec: SatRec, date: Date): Omit<Telemetry, 'source'> {
  const pv = propagate(rec, date);
  if (pv === null) throw new Error(`SGP4 failed for ${date.toISOString()} (error ${rec.error})`);
  const g = eciToGeodetic(pv.position, gstime(date));
  const v = pv.velocity;
  return {
    timestamp: date.getTime(),
    latitude: round(degreesLat(g.latitude)),
    longitude: round(degreesLong(g.longitude)),
    altitudeKm: Math.round(g.height * 10) / 10,
    speedKmh: Math.round(Math.hypot(v.x, v.y, v.z) * 3600),
  };
}

function round(deg: number): number {
  return Math.round(deg * 1e5) / 1e5;
}

/** Great-circle distance in km between two points given in degrees (mean Earth radius). */
export function distanceKm(
  a: { latitude: number; longitude: number },
  b: { latitude: number; longitude: number },
): number {
  const rad = Math.PI / 180;
  const dLat = (b.latitude - a.latitude) * rad;
  const dLon = (b.longitude - a.longitude) * rad;
  const h =
    Math.sin(dLat / 2) ** 2 +
    Math.cos(a.latitude * rad) * Math.cos(b.latitude * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371.0088 * Math.asin(Math.min(1, Math.sqrt(h)));
}
