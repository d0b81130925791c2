/**
 * @internal
 * Argument parsing shared by the `minigpt` commands: node:util parseArgs in strict mode, with
 * its errors turned into {@link UsageError}s that name the flag and what it expects, so the
 * user sees one line and a pointer to `--help` instead of a stack trace.
 */
import { parseArgs } from 'node:util';

/**
 * The command line itself is wrong (an unknown option, a missing value or argument, a value
 * out of range): reported as one line with a pointer to `--help`, exit code 2. `command` is
 * '' for the top level (`minigpt <command>`).
 */
export class UsageError extends Error {
  constructor(readonly command: string, message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** The one line printed for a usage error. */
export function usageLine(err: UsageError): string {
  const who = err.command ? `minigpt ${err.command}` : 'minigpt';
  // Library messages may span lines; a usage error is one.
  const problem = err.message.replace(/\s*\n\s*/g, ' ').replace(/\.$/, '');
  return `${who}: ${problem}. See '${who} --help'.\n`;
}

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  /** A string option that may be given as '' (free text such as a prompt). */
  allowEmpty?: boolean;
}

export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
  help: boolean;
}

/**
 * Parses `argv` for `command` against `options` (plus `-h, --help`). Throws a UsageError for
 * an unknown option, an option without its value, a value given to a flag, or a positional
 * argument when `positionals` is false.
 */
export function parseCommand(command: string, argv: string[], options: Record<string, OptionSpec>, positionals = true): Parsed {
  const spec: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, o] of Object.entries(options)) spec[name] = o.short ? { type: o.type, short: o.short } : { type: o.type };
  // Whoever asks for --help wants the usage, whatever else is wrong on the line.
  const end = argv.indexOf('--');
  if ((end < 0 ? argv : argv.slice(0, end)).some((a) => a === '--help' || a === '-h')) return { values: {}, positionals: [], help: true };
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: spec, allowPositionals: positionals, strict: true });
  } catch (err) {
    throw new UsageError(command, explain(err as Error & { code?: string }, argv, options));
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values.help) return { values, positionals: parsed.positionals, help: true };
  for (const [name, o] of Object.entries(options)) {
    if (o.type === 'string' && values[name] === '' && !o.allowEmpty) throw new UsageError(command, `option '--${name}' needs a value`);
  }
  return { values, positionals: parsed.positionals, help: false };
}

// parseArgs's messages are written for developers ("To specify a positional argument starting
// with a '-', place it at the end..."); say the same for the person at the terminal.
function explain(err: Error & { code?: string }, argv: string[], options: Record<string, OptionSpec>): string {
  const message = err.message ?? String(err);
  const quoted = /'(-[^' ,=]+)/.exec(message)?.[1];
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': {
      if (!quoted) break;
      const guess = closest(quoted.replace(/^-+/, ''), Object.keys(options));
      return `unknown option '${quoted}'${guess ? ` (did you mean '--${guess}'?)` : ''}`;
    }
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      // Messages name the option as '-m, --model <value>', '--model' or '-m'; report the long name.
      if (!quoted) break;
      const name = quoted.startsWith('--') ? quoted.slice(2) : Object.keys(options).find((n) => `-${options[n].short}` === quoted);
      if (name === undefined) break;
      const long = `--${name}`;
      if (/does not take an argument/.test(message)) return `option '${long}' takes no value`;
      if (/ambiguous/.test(message)) {
        const short = options[name]?.short;
        const at = argv.findIndex((a) => a === long || (short !== undefined && a === `-${short}`));
        const next = at >= 0 ? argv[at + 1] : undefined;
        if (next !== undefined) return `option '${long}' needs a value but is followed by '${next}' (write ${long}=${next} if that is the value)`;
      }
      return `option '${long}' needs a value`;
    }
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL': {
      const arg = /Unexpected argument '([^']*)'/.exec(message)?.[1];
      if (arg !== undefined) return `unexpected argument '${arg}': this command takes options only`;
      break;
    }
  }
  return message.split('\n')[0];
}

/** The option whose name contains, or nearly equals, what was typed. */
function closest(typed: string, names: string[]): string | undefined {
  if (typed.length < 2) return undefined;
  const lower = typed.toLowerCase().replace(/_/g, '-');
  return (
    names.find((n) => n === lower) ??
    names.find((n) => n.includes(lower) || lower.includes(n)) ??
    names.find((n) => distance(n, lower) <= (n.length > 5 ? 2 : 1))
  );
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

/**
 * The value of a numeric flag, or undefined when it was not given. Accepts plain decimal
 * notation only (not '', ' 8', '0x10' or 'Infinity', which Number() would take).
 */
export function numberFlag(
  command: string,
  flag: string,
  value: string | boolean | undefined,
  { integer, min, max }: { integer: boolean; min: number; max: number },
): number | undefined {
  if (value === undefined || typeof value === 'boolean') return undefined;
  const syntax = integer ? /^[0-9]+$/ : /^([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?$/i;
  const n = Number(value);
  if (!syntax.test(value) || !Number.isFinite(n) || n < min || n > max) {
    const what = integer ? 'a whole number' : 'a number';
    const range = max === Number.MAX_SAFE_INTEGER || max === Infinity ? `of at least ${min}` : `from ${min} to ${max}`;
    throw new UsageError(command, `--${flag} expects ${what} ${range}, got '${value}'`);
  }
  return n;
}

/** The value of a flag that takes one of a few words, or undefined when it was not given. */
export function choiceFlag<T extends string>(command: string, flag: string, value: string | boolean | undefined, choices: readonly T[]): T | undefined {
  if (value === undefined || typeof value === 'boolean') return undefined;
  if (!(choices as readonly string[]).includes(value)) {
    throw new UsageError(command, `--${flag} expects ${listOf(choices.map((c) => `'${c}'`), 'or')}, got '${value}'`);
  }
  return value as T;
}

/** "a, b and c" */
export function listOf(items: string[], conjunction = 'and'): string {
  return items.length <= 1 ? items.join('') : `${items.slice(0, -1).join(', ')} ${conjunction} ${items[items.length - 1]}`;
}
