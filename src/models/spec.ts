/**
 * What a model spec names, from its text alone: a local file, a file of a Hugging Face repo, a
 * quant of a repo, an http(s) URL or (decided by the caller, who has the catalog) a name.
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import { isUrlLike, requireFilePath } from '../validate.js';

/** `hf:owner/repo/path/in/repo.gguf#revision`. */
export interface HfFileSpec { kind: 'hf-file'; repo: string; file: string; revision: string }
/** `hf:owner/repo[:quant][#revision]`: the files are picked from the repo's listing. */
export interface HfQuantSpec { kind: 'hf-quant'; repo: string; quant?: string; revision: string }
/** `https://...` (or `http://` to a loopback host); `#sha256=<hex>` pins the content. */
export interface UrlSpec { kind: 'url'; url: URL; sha256?: string }
export interface LocalSpec { kind: 'local'; path: string }
/** A bare word that may be a catalog name (or a file in the working directory). */
export interface NameSpec { kind: 'name'; name: string }
export type Spec = HfFileSpec | HfQuantSpec | UrlSpec | LocalSpec | NameSpec;

export const DEFAULT_REVISION = 'main';
// The hub's rules for repo ids: letters, digits, '-', '_', '.'; no '--' or '..'; at most 96 characters.
const repoPart = /^(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;
const revisionRe = /^(?!.*\.\.)[A-Za-z0-9._][A-Za-z0-9._/-]{0,255}$/;
const quantRe = /^[A-Za-z0-9_]{1,32}$/;
const sha256Re = /^[0-9a-f]{64}$/;

/** True for a 40-hex git commit, which names content that never changes. */
export function isCommit(revision: string): boolean {
  return /^[0-9a-f]{40}$/.test(revision);
}

function bad(spec: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError(
    `Invalid hf: URI ${JSON.stringify(spec)}: ${why}. Expected hf:<owner>/<repo>/<path/in/repo.gguf>[#<revision>] or hf:<owner>/<repo>[:<quant>][#<revision>], e.g. hf:ggml-org/SmolVLM-500M-Instruct-GGUF:Q8_0`,
  );
}

/** Parses `hf:` URIs; `ERR_INVALID_ARGUMENT` for anything malformed (never a request). */
export function parseHf(text: string): HfFileSpec | HfQuantSpec {
  let rest = text.slice(3).replace(/^\/\//, '');
  let revision = DEFAULT_REVISION;
  const hash = rest.indexOf('#');
  if (hash >= 0) {
    revision = decodeURIComponent(rest.slice(hash + 1));
    rest = rest.slice(0, hash);
    if (!revisionRe.test(revision)) throw bad(text, `revision ${JSON.stringify(revision)} is not a branch, tag or commit`);
  }
  const parts = rest.split('/');
  if (parts.length < 2) throw bad(text, 'it needs an owner and a repo');
  const [owner, repoAndQuant, ...fileParts] = parts as [string, string, ...string[]];
  if (!repoPart.test(owner)) throw bad(text, `owner ${JSON.stringify(owner)} is not a valid name`);
  if (fileParts.length === 0) {
    const colon = repoAndQuant.indexOf(':');
    const name = colon >= 0 ? repoAndQuant.slice(0, colon) : repoAndQuant;
    const quant = colon >= 0 ? repoAndQuant.slice(colon + 1) : undefined;
    if (!repoPart.test(name)) throw bad(text, `repo ${JSON.stringify(name)} is not a valid name`);
    if (quant !== undefined && !quantRe.test(quant)) throw bad(text, `quant ${JSON.stringify(quant)} is not a quantization name such as Q4_K_M`);
    return { kind: 'hf-quant', repo: `${owner}/${name}`, quant: quant?.toUpperCase(), revision };
  }
  if (!repoPart.test(repoAndQuant)) throw bad(text, `repo ${JSON.stringify(repoAndQuant)} is not a valid name`);
  // The path becomes a path under the cache: nothing that climbs out of it.
  for (const p of fileParts) {
    if (p === '' || p === '.' || p === '..' || /[\\\0:]/.test(p)) throw bad(text, `file path ${JSON.stringify(fileParts.join('/'))} is not a plain path inside the repo`);
  }
  return { kind: 'hf-file', repo: `${owner}/${repoAndQuant}`, file: fileParts.join('/'), revision };
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '[::1]' || /^127(\.\d{1,3}){3}$/.test(host);
}

/** http: is refused except to this machine: a download without TLS could be altered on the way. */
export function checkTransport(url: URL, what: string): void {
  if (url.protocol === 'https:') return;
  if (url.protocol === 'http:' && isLoopback(url.hostname)) return;
  throw new InvalidArgumentError(`${what} ${url.protocol}//${url.host}: only https: URLs are fetched (http: only from this machine, 127.0.0.1 or localhost)`);
}

function parseUrl(url: URL, name: string): UrlSpec {
  checkTransport(url, name);
  let sha256: string | undefined;
  const m = /^#sha256=([0-9a-fA-F]{64})$/.exec(url.hash);
  if (m) sha256 = m[1]!.toLowerCase();
  else if (url.hash) throw new InvalidArgumentError(`${name} URL fragment ${url.hash} is not #sha256=<64 hex digits>`);
  const clean = new URL(url.href);
  clean.hash = '';
  if (clean.username || clean.password) throw new InvalidArgumentError(`${name} URL must not carry a user name or password; use HF_TOKEN for the hub`);
  return { kind: 'url', url: clean, sha256 };
}

/** What `value` names, from its text alone. */
export function parseSpec(value: unknown, name: string): Spec {
  if (value instanceof URL) {
    if (value.protocol === 'http:' || value.protocol === 'https:') return parseUrl(value, name);
    return { kind: 'local', path: requireFilePath(value, name) };
  }
  if (typeof value !== 'string' || value.length === 0) {
    throw new InvalidArgumentError(`Expected a path, file: URL, hf: URI, https URL or catalog name for ${name} but received ${value === '' ? 'an empty string' : typeof value}`);
  }
  if (/^hf:/i.test(value)) return parseHf(value);
  if (/^https?:\/\//i.test(value)) {
    let url: URL;
    try {
      url = new URL(value);
    } catch (err) {
      throw new InvalidArgumentError(`${name} is not a valid URL: ${value}`, { cause: err });
    }
    return parseUrl(url, name);
  }
  if (isUrlLike(value)) return { kind: 'local', path: requireFilePath(value, name) };
  if (/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(value) && !/\.gguf$/i.test(value)) return { kind: 'name', name: value };
  return { kind: 'local', path: value };
}

export { sha256Re };
