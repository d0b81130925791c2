/**
 * @internal
 * Option validation shared by the public API: defaults, then types, then ranges, with
 * messages that name the option, the expectation and what was received. Unknown keys are
 * rejected: a typo such as `top_p` would otherwise silently change the output.
 */
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError } from './errors.js';

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return `"${value.length > 40 ? value.slice(0, 40) + '…' : value}" of type string`;
  if (typeof value === 'object') return `a value of type ${Array.isArray(value) ? 'array' : 'object'}`;
  return `${String(value)} of type ${typeof value}`;
}

export function invalid(expected: string, name: string, value: unknown): InvalidArgumentError {
  return new InvalidArgumentError(`Expected ${expected} for ${name} but received ${describe(value)}`);
}

/** Throws unless `options` is undefined or a plain object whose keys are all in `allowed`. */
export function checkKeys(options: unknown, allowed: readonly string[], where: string): Record<string, unknown> {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw invalid('an object', where, options);
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) {
      const camel = key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
      const hint = camel !== key && allowed.includes(camel) ? `; did you mean "${camel}"?` : `; known options: ${allowed.join(', ')}`;
      throw new InvalidArgumentError(`Unknown option "${key}" in ${where}${hint}`);
    }
  }
  return options as Record<string, unknown>;
}

export function optInteger(o: Record<string, unknown>, key: string, min: number, max: number, fallback: number): number;
export function optInteger(o: Record<string, unknown>, key: string, min: number, max: number, fallback?: undefined): number | undefined;
export function optInteger(o: Record<string, unknown>, key: string, min: number, max: number, fallback?: number): number | undefined {
  const v = o[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw invalid(`integer between ${min} and ${max}`, key, v);
  return v;
}

/**
 * A thread count: an integer from 1 up, capped at the CPUs this process may use. More compute
 * threads than cores only make them wait for each other (and for an abort) in every step.
 */
export function optThreads(o: Record<string, unknown>, key: string, fallback: number): number {
  return Math.min(optInteger(o, key, 1, 1024, fallback), availableParallelism());
}

export function optNumber(o: Record<string, unknown>, key: string, min: number, max: number, fallback: number): number {
  const v = o[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw invalid(`number between ${min} and ${max}`, key, v);
  return v;
}

export function optBoolean(o: Record<string, unknown>, key: string, fallback: boolean): boolean {
  const v = o[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') throw invalid('boolean', key, v);
  return v;
}

export function optString(o: Record<string, unknown>, key: string): string | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalid('string', key, v);
  return v;
}

export function optFunction<F extends (...args: never[]) => unknown>(o: Record<string, unknown>, key: string): F | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'function') throw invalid('function', key, v);
  return v as F;
}

export function optSignal(o: Record<string, unknown>, key = 'signal'): AbortSignal | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (!(v instanceof AbortSignal)) throw invalid('AbortSignal', key, v);
  return v;
}

export function requireString(value: unknown, name: string): string {
  if (typeof value !== 'string' || value.length === 0) throw invalid('non-empty string', name, value);
  return value;
}

/** `file:...` or `scheme://...`: a URL rather than a path (a Windows path such as `C:\x` is not). */
export function isUrlLike(value: string): boolean {
  return /^(file:|[a-z][a-z0-9+.-]*:\/\/)/i.test(value);
}

/**
 * A local file named by a path, a `file:` URL string or a `URL` object. Other URLs are refused
 * here: nothing is fetched from a URL the caller passes.
 */
export function requireFilePath(value: unknown, name: string): string {
  if (typeof value === 'string' && !isUrlLike(value)) return requireString(value, name);
  if (!(value instanceof URL) && typeof value !== 'string') throw invalid('file path or file: URL', name, value);
  let url: URL;
  try {
    url = value instanceof URL ? value : new URL(value);
  } catch (err) {
    throw new InvalidArgumentError(`${name} is not a valid file: URL: ${String(value)}`, { cause: err });
  }
  if (url.protocol !== 'file:') throw new InvalidArgumentError(`${name} must be a file path or a file: URL, not a ${url.protocol} URL`);
  try {
    return fileURLToPath(url);
  } catch (err) {
    throw new InvalidArgumentError(`${name} ${url.href} does not name a local file: ${(err as Error).message}`, { cause: err });
  }
}

/** Strings with lone UTF-16 surrogates cannot be encoded as UTF-8 faithfully. */
export function checkWellFormed(text: string, name: string): void {
  // eslint-disable-next-line no-control-regex
  if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text)) {
    throw new InvalidArgumentError(`${name} contains a lone UTF-16 surrogate, which has no UTF-8 form; pass well-formed text`);
  }
}
