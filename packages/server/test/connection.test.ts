/**
 * The connection conformance suite (test/conformance/connection.ts) on WebSocket, SSE and
 * long-polling, on the engine under test: once on the default engine and again on ws in the
 * `test:engine` tier, so every connection type of both engines passes the same tests.
 */
import { runConnectionSuite } from './conformance/connection.js';

runConnectionSuite();
