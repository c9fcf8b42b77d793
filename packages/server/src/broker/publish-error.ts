import type { PublishOutcome } from './broker.js';

/** A rejected publish, saying whether the message may have been stored anyway. */
export class PublishError extends Error {
  readonly outcome: PublishOutcome;

  constructor(outcome: PublishOutcome, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'PublishError';
    this.outcome = outcome;
  }
}
