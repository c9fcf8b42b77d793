/**
 * The Presence store contract: who is in a channel right now. Beside the Broker, not inside it
 * (centrifuge's PresenceManager), so any broker pairs with any store. This file holds only types.
 *
 * A member is one connection subscribed to a channel of a presence-enabled namespace. Entries
 * expire unless refreshed: the node holding a member refreshes it periodically, so a member whose
 * node died without removing it disappears at most `ttlMs` after the node's last refresh.
 */

export interface PresenceStore {
  readonly name: string;
  /**
   * Adds the member, or refreshes it: it is listed until `ttlMs` from now unless added again.
   * `info` is the member's JSON object as sent to clients, stored and returned verbatim.
   */
  add(channel: string, clientId: string, info: string, ttlMs: number): Promise<void>;
  /** Removes the member at once. */
  remove(channel: string, clientId: string): Promise<void>;
  /** The channel's current members (JSON objects as given to add), expired ones left out. */
  get(channel: string): Promise<string[]>;
  /** Releases connections; entries of a Redis store stay until they expire or are removed. */
  close(): Promise<void>;
}
