import type { PositionStore } from './channel.js';
import type { Position } from './frames.js';

interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/**
 * A PositionStore over Web Storage (default `sessionStorage`: per tab, survives reloads, gone
 * with the tab, which is the life of the page's state that the positions belong to). Positions
 * are written through on every delivered message so a reload at any moment resumes exactly after
 * the last message the page saw; an unreadable entry counts as no position.
 */
export function sessionStoragePositions(
  prefix = 'switchboard:position:',
  storage: StorageLike | undefined = (globalThis as { sessionStorage?: StorageLike })
    .sessionStorage,
): PositionStore {
  if (storage === undefined)
    throw new TypeError('recover: true needs sessionStorage; pass a PositionStore instead');
  return {
    get(channel) {
      try {
        const raw = storage.getItem(prefix + channel);
        if (raw === null) return undefined;
        const p = JSON.parse(raw) as Partial<Position>;
        return Number.isSafeInteger(p.offset) && typeof p.epoch === 'string'
          ? { offset: p.offset as number, epoch: p.epoch }
          : undefined;
      } catch {
        return undefined;
      }
    },
    set(channel, position) {
      try {
        if (position === undefined) storage.removeItem(prefix + channel);
        else storage.setItem(prefix + channel, JSON.stringify(position));
      } catch {
        // A full or disabled storage only costs the resume after a reload, never delivery.
      }
    },
  };
}
