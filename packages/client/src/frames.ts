/**
 * Server frames as the SDK reads them: the decoder lives in @switchboard/protocol (one home for
 * the wire format); this module keeps the SDK's import path.
 */
export { parseFrames, toMessage, toPosition, frameKind } from '@switchboard/protocol';
export type { Frame, FrameKind, Message, Position } from '@switchboard/protocol';
