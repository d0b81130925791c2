/**
 * @internal
 * The context size a session gets when neither createSession nor loadModel names one: the
 * model's training context, capped so a 128k-token model does not reserve a 128k KV cache by
 * default. Used by the session and by the load plan's GPU fit, which must agree on it.
 */

/** Cap on the default context size, in tokens. */
export const DEFAULT_CONTEXT_CAP = 4096;

/** The default context size for a model trained on `trainContext` tokens (unknown: the cap). */
export function defaultContextSize(trainContext: number | undefined): number {
  return Math.min(trainContext ?? DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP);
}
