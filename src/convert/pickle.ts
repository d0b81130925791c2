/**
 * @internal
 * A data-only unpickler for the subset of the pickle format (protocols 2 to 5) that
 * `torch.save` writes for state dicts. It never imports or runs anything: every GLOBAL is
 * passed to the caller's `resolveGlobal`, which returns a plain-JS stand-in or throws, and
 * persistent ids go to `persistentLoad`.
 *
 * Values: None -> null, bool, int -> number (bigint beyond 2^53), float -> number,
 * str -> string, bytes -> Uint8Array, list and tuple -> array, dict -> Map.
 */

/** A callable stand-in for a Python global, applied by REDUCE and NEWOBJ. */
export interface PickleCallable {
  readonly qualifiedName: string;
  call(args: unknown[]): unknown;
}

/** What {@link unpickle} needs from its caller. */
export interface UnpickleHooks {
  /** Stand-in for `module.name`; throw to refuse it. */
  resolveGlobal(module: string, name: string): unknown;
  /** Value for a persistent id (BINPERSID). */
  persistentLoad(pid: unknown): unknown;
}

/** Raised for malformed or unsupported pickles; the message says which opcode and where. */
export class PickleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PickleError';
  }
}

const MARK = Symbol('mark');
const text = new TextDecoder('utf-8', { fatal: true });
const latin1 = new TextDecoder('latin1');

/** Runs the pickle in `data` and returns the object it builds. */
export function unpickle(data: Uint8Array, hooks: UnpickleHooks): unknown {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let pos = 0;
  let stack: unknown[] = [];
  const metastack: unknown[][] = [];
  const memo = new Map<number, unknown>();

  const fail = (why: string): never => { throw new PickleError(`pickle byte ${pos}: ${why}`); };
  const need = (n: number): number => {
    if (pos + n > data.length) fail('unexpected end of data');
    const at = pos;
    pos += n;
    return at;
  };
  const u8 = () => data[need(1)];
  const u16 = () => view.getUint16(need(2), true);
  const u32 = () => view.getUint32(need(4), true);
  const u64 = () => {
    const big = view.getBigUint64(need(8), true);
    if (big > BigInt(Number.MAX_SAFE_INTEGER)) fail('length too large');
    return Number(big);
  };
  const bytes = (n: number) => data.subarray(need(n), pos);
  const line = () => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) fail('unterminated line');
    const s = latin1.decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const utf8 = (n: number) => {
    const b = bytes(n);
    try {
      return text.decode(b);
    } catch {
      return fail('invalid UTF-8 in a string');
    }
  };
  const pop = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const prev = metastack.pop();
    if (!prev) fail('no MARK on the stack');
    stack = prev!;
    return items;
  };
  const asMap = (v: unknown): Map<unknown, unknown> => (v instanceof Map ? v : fail(`cannot set items on ${describe(v)}`));
  const asList = (v: unknown): unknown[] => (Array.isArray(v) ? v : fail(`cannot append to ${describe(v)}`));
  const apply = (fn: unknown, args: unknown): unknown => {
    if (!isCallable(fn)) return fail(`cannot call ${describe(fn)}`);
    if (!Array.isArray(args)) return fail(`arguments for ${fn.qualifiedName} are not a tuple`);
    return fn.call(args);
  };
  const key = (k: unknown): unknown => (Array.isArray(k) ? JSON.stringify(k) : k); // tuples as map keys

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: u8(); break; // PROTO n
      case 0x95: u64(); break; // FRAME n: framing only, the bytes follow inline
      case 0x2e: return pop(); // STOP
      case 0x28: metastack.push(stack); stack = []; break; // MARK
      case 0x7d: stack.push(new Map()); break; // EMPTY_DICT
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x29: stack.push([]); break; // EMPTY_TUPLE
      case 0x8f: stack.push(new Set()); break; // EMPTY_SET
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x4a: stack.push(view.getInt32(need(4), true)); break; // BININT
      case 0x8a: stack.push(readLong(bytes(u8()))); break; // LONG1
      case 0x8b: stack.push(readLong(bytes(u32()))); break; // LONG4
      case 0x47: stack.push(view.getFloat64(need(8), false)); break; // BINFLOAT (big-endian)
      case 0x58: stack.push(utf8(u32())); break; // BINUNICODE
      case 0x8c: stack.push(utf8(u8())); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(utf8(u64())); break; // BINUNICODE8
      case 0x54: stack.push(latin1.decode(bytes(view.getInt32(need(4), true)))); break; // BINSTRING (Python 2 str)
      case 0x55: stack.push(latin1.decode(bytes(u8()))); break; // SHORT_BINSTRING
      case 0x42: stack.push(bytes(u32()).slice()); break; // BINBYTES
      case 0x43: stack.push(bytes(u8()).slice()); break; // SHORT_BINBYTES
      case 0x8e: stack.push(bytes(u64()).slice()); break; // BINBYTES8
      case 0x71: memo.set(u8(), top()); break; // BINPUT
      case 0x72: memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const i = op === 0x68 ? u8() : u32();
        if (!memo.has(i)) fail(`memo entry ${i} is missing`);
        stack.push(memo.get(i));
        break;
      }
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      case 0x74: { const items = popMark(); stack.push(items); break; } // TUPLE
      case 0x85: stack.push([pop()]); break; // TUPLE1
      case 0x86: { const b = pop(); const a = pop(); stack.push([a, b]); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); stack.push([a, b, c]); break; } // TUPLE3
      case 0x6c: { const items = popMark(); stack.push(items); break; } // LIST
      case 0x64: { // DICT
        const items = popMark();
        const m = new Map();
        for (let i = 0; i + 1 < items.length; i += 2) m.set(key(items[i]), items[i + 1]);
        stack.push(m);
        break;
      }
      case 0x73: { const v = pop(); const k = pop(); asMap(top()).set(key(k), v); break; } // SETITEM
      case 0x75: { // SETITEMS
        const items = popMark();
        const m = asMap(top());
        for (let i = 0; i + 1 < items.length; i += 2) m.set(key(items[i]), items[i + 1]);
        break;
      }
      case 0x61: { const v = pop(); asList(top()).push(v); break; } // APPEND
      case 0x65: { const items = popMark(); asList(top()).push(...items); break; } // APPENDS
      case 0x90: { // ADDITEMS
        const items = popMark();
        const s = top();
        if (!(s instanceof Set)) fail(`cannot add items to ${describe(s)}`);
        for (const it of items) (s as Set<unknown>).add(it);
        break;
      }
      case 0x91: stack.push(new Set(popMark())); break; // FROZENSET
      case 0x63: { const module = line(); const name = line(); stack.push(hooks.resolveGlobal(module, name)); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(hooks.resolveGlobal(module as string, name as string));
        break;
      }
      case 0x52: { const args = pop(); const fn = pop(); stack.push(apply(fn, args)); break; } // REDUCE
      case 0x81: { const args = pop(); const cls = pop(); stack.push(apply(cls, args)); break; } // NEWOBJ
      case 0x92: { pop(); const args = pop(); const cls = pop(); stack.push(apply(cls, args)); break; } // NEWOBJ_EX (kwargs dropped)
      case 0x62: pop(); break; // BUILD: state (e.g. an OrderedDict's _metadata) is not needed
      case 0x51: stack.push(hooks.persistentLoad(pop())); break; // BINPERSID
      default:
        fail(`unsupported opcode 0x${op.toString(16).padStart(2, '0')}${op >= 0x20 && op < 0x7f ? ` ('${String.fromCharCode(op)}')` : ''}`);
    }
  }
}

function isCallable(v: unknown): v is PickleCallable {
  return typeof v === 'object' && v !== null && typeof (v as PickleCallable).call === 'function' && typeof (v as PickleCallable).qualifiedName === 'string';
}

function describe(v: unknown): string {
  if (v === null) return 'None';
  if (isCallable(v)) return v.qualifiedName;
  if (v instanceof Map) return 'a dict';
  if (Array.isArray(v)) return 'a list or tuple';
  return `a ${typeof v}`;
}

// Little-endian two's complement, as LONG1/LONG4 store Python ints.
function readLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}
