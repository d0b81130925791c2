// readImageUrl: data URLs, and remote fetches against a local server on 127.0.0.1 with the SSRF
// guard (address check, pinned connection, redirects), size and time limits.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { isIP } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_IMAGE_POLICY, isForbiddenAddress, readImageUrl, readImageUrlWith } from '../../dist/server/images.js';

// A few bytes that are not text, with every byte value, so encodings are really exercised.
const image = Buffer.concat([Buffer.from('\x89PNG\r\n\x1a\n', 'latin1'), Buffer.from(Array.from({ length: 256 }, (_, i) => i)), Buffer.from('%,;=+/ end')]);
const open = { ...DEFAULT_IMAGE_POLICY, allowRemote: true, allowPrivate: true };
const guarded = { ...DEFAULT_IMAGE_POLICY, allowRemote: true, allowPrivate: false };

async function rejects(promise, pattern, code = 'ERR_INVALID_ARGUMENT') {
  await assert.rejects(promise, (err) => {
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

describe('isForbiddenAddress', () => {
  const forbidden = [
    '127.0.0.1', '127.255.255.254', '10.0.0.1', '10.255.255.255', '172.16.0.1', '172.31.255.255', '192.168.0.1',
    '169.254.169.254', '100.64.0.1', '100.127.255.255', '0.0.0.0', '0.1.2.3', '224.0.0.1', '239.255.255.250', '255.255.255.255',
    '::', '::1', 'fe80::1', 'fe80::1%eth0', 'febf:ffff::1', 'fc00::1', 'fd12:3456:789a::1', 'ff02::1', 'ff05::1:3',
    '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:10.0.0.1', '::ffff:a9fe:a9fe', '::ffff:192.168.1.1', '::127.0.0.1',
    '64:ff9b::a9fe:a9fe', '64:ff9b::10.0.0.1', '2002:7f00:1::1', '2002:c0a8:101::', '[::1]',
    // Not addresses: fail closed.
    'localhost', '', 'example.com', '1.2.3', '::1::2', '1.2.3.256', 'fe80::1::',
  ];
  const allowed = [
    '8.8.8.8', '1.1.1.1', '93.184.216.34', '172.15.255.255', '172.32.0.1', '192.169.0.1', '100.63.255.255', '100.128.0.1',
    '169.253.255.255', '223.255.255.255', '11.0.0.1', '2606:4700:4700::1111', '2001:4860:4860::8888', '::ffff:8.8.8.8',
    '::ffff:808:808', '64:ff9b::808:808', '2002:808:808::1', '2a00:1450:4001:80b::200e',
  ];
  for (const ip of forbidden) test(`refuses ${JSON.stringify(ip)}`, () => assert.equal(isForbiddenAddress(ip), true));
  for (const ip of allowed) test(`allows ${ip}`, () => assert.equal(isForbiddenAddress(ip), false));

  test('gives the same answer for every way WHATWG URL (not ours) writes an address', () => {
    for (const ip of [...forbidden, ...allowed]) {
      const bare = ip.replace(/^\[|\]$/g, '');
      if (bare.includes('%') || !isIP(bare)) continue;
      let hostname;
      try {
        hostname = new URL(`http://${bare.includes(':') ? `[${bare}]` : bare}/`).hostname;
      } catch {
        continue; // not an address to URL either
      }
      assert.equal(isForbiddenAddress(hostname), isForbiddenAddress(ip), `${ip} written by URL as ${hostname}`);
    }
    // Shorthand IPv4 forms a URL turns into 127.0.0.1.
    for (const host of ['0x7f.0.0.1', '2130706433', '127.1', '0177.0.0.1']) assert.equal(isForbiddenAddress(new URL(`http://${host}/`).hostname), true, host);
  });
});

describe('data URLs', () => {
  test('base64, with and without a media type, padding, whitespace or the URL-safe alphabet', async () => {
    const b64 = image.toString('base64');
    assert.deepEqual(await readImageUrl(`data:image/png;base64,${b64}`, DEFAULT_IMAGE_POLICY), image);
    assert.deepEqual(await readImageUrl(`DATA:image/png;charset=binary;BASE64,${b64}`, DEFAULT_IMAGE_POLICY), image);
    assert.deepEqual(await readImageUrl(`data:;base64,${b64}`, DEFAULT_IMAGE_POLICY), image);
    assert.deepEqual(await readImageUrl(`data:image/png;base64,${b64.replace(/=+$/, '')}`, DEFAULT_IMAGE_POLICY), image);
    assert.deepEqual(await readImageUrl(`data:image/png;base64,${b64.replace(/(.{76})/g, '$1\n')}`, DEFAULT_IMAGE_POLICY), image);
    assert.deepEqual(await readImageUrl(`data:image/png;base64,${image.toString('base64url')}`, DEFAULT_IMAGE_POLICY), image);
    assert.deepEqual(await readImageUrl(`data:image/png;base64,${encodeURIComponent(b64)}`, DEFAULT_IMAGE_POLICY), image);
  });

  test('percent-encoded bytes, byte by byte', async () => {
    const escaped = [...image].map((b) => (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) ? String.fromCharCode(b) : `%${b.toString(16).padStart(2, '0')}`).join('');
    assert.deepEqual(await readImageUrl(`data:image/png,${escaped}`, DEFAULT_IMAGE_POLICY), image);
    assert.deepEqual(await readImageUrl('data:image/svg+xml,<svg/>', DEFAULT_IMAGE_POLICY), Buffer.from('<svg/>'));
  });

  test('malformed ones are a typed error that says what to send', async () => {
    await rejects(readImageUrl('data:image/png;base64', DEFAULT_IMAGE_POLICY), /no comma.*data:<media type>;base64,<data>/);
    await rejects(readImageUrl('data:image/png;base64,', DEFAULT_IMAGE_POLICY), /no image data/);
    await rejects(readImageUrl('data:,', DEFAULT_IMAGE_POLICY), /no image data/);
    await rejects(readImageUrl('data:image/png;base64,iVBO*w0KGgo=', DEFAULT_IMAGE_POLICY), /"\*" at data position 4 is not base64/);
    await rejects(readImageUrl('data:image/png;base64,iVBORw0KGgo=x', DEFAULT_IMAGE_POLICY), /padding/);
    await rejects(readImageUrl('data:image/png;base64,iVBOR', DEFAULT_IMAGE_POLICY), /length/);
    await rejects(readImageUrl('data:image/png;base64,iV=BOR==', DEFAULT_IMAGE_POLICY), /padding/);
    await rejects(readImageUrl('data:image/png,abc%zz', DEFAULT_IMAGE_POLICY), /%XX escape/);
    await rejects(readImageUrl('data:not a type;base64,AAAA', DEFAULT_IMAGE_POLICY), /not a media type/);
    await rejects(readImageUrl('', DEFAULT_IMAGE_POLICY), /non-empty string/);
    await rejects(readImageUrl(42, DEFAULT_IMAGE_POLICY), /non-empty string/);
  });

  test('over maxBytes (decoded) is refused before decoding', async () => {
    const policy = { ...DEFAULT_IMAGE_POLICY, maxBytes: image.length - 1 };
    await rejects(readImageUrl(`data:image/png;base64,${image.toString('base64')}`, policy), /over this server's limit/);
    await rejects(readImageUrl(`data:image/png,${encodeURIComponent(image.toString('latin1'))}`, policy), /over this server's limit/);
    // Exactly the limit is fine: base64's length alone must not trip the check.
    assert.deepEqual(await readImageUrl(`data:image/png;base64,${image.toString('base64')}`, { ...policy, maxBytes: image.length }), image);
  });
});

describe('schemes', () => {
  test('other schemes are refused', async () => {
    for (const url of ['file:///etc/passwd', 'ftp://127.0.0.1/x.png', 'gopher://127.0.0.1/', 'javascript:alert(1)', 'blob:http://x/y']) {
      await rejects(readImageUrl(url, open), /unsupported scheme/);
    }
    await rejects(readImageUrl('not a url at all', open), /not a valid URL/);
  });

  test('http(s) needs allowRemote, and the message says how to turn it on', async () => {
    await rejects(readImageUrl('https://example.com/cat.png?sig=secret', DEFAULT_IMAGE_POLICY), /--allow-remote-images/);
    await rejects(readImageUrl('https://example.com/cat.png?sig=secret', DEFAULT_IMAGE_POLICY), /^(?!.*secret)/);
  });
});

// Bounded: a broken time limit must fail the test, not hang it.
describe('remote images', { timeout: 30_000 }, () => {
  let server;
  let base;
  let port;
  const seen = [];
  const streamed = { written: 0, closedEarly: false };
  const open_ = new Set();

  before(async () => {
    server = createServer((req, res) => {
      seen.push({ url: req.url, headers: req.headers });
      const path = req.url.split('?')[0];
      if (path === '/img.png') {
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': image.length });
        return res.end(image);
      }
      if (path === '/chunked.png') {
        res.writeHead(200, { 'content-type': 'image/png' });
        res.write(image.subarray(0, 10));
        return setTimeout(() => res.end(image.subarray(10)), 20);
      }
      if (path === '/declared-big.png') {
        // Says up front it is too big, then never sends: only the header can end this quickly.
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': 5_000_000 });
        return res.flushHeaders();
      }
      if (path === '/endless.png') {
        // No Content-Length: only counting bytes while reading can stop it.
        res.writeHead(200, { 'content-type': 'image/png' });
        const chunk = Buffer.alloc(64 * 1024, 7);
        res.on('close', () => { streamed.closedEarly = !res.writableFinished; });
        const pump = () => {
          while (streamed.written < 50_000_000 && !res.destroyed) {
            streamed.written += chunk.length;
            if (!res.write(chunk)) return res.once('drain', pump);
          }
          res.end();
        };
        return pump();
      }
      if (path === '/stall.png') {
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': image.length });
        return res.write(image.subarray(0, 10)); // and nothing more
      }
      if (path === '/no-answer.png') return undefined;
      if (path === '/truncated.png') {
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': image.length });
        res.write(image.subarray(0, 10));
        return setTimeout(() => res.destroy(), 20);
      }
      if (path === '/missing.png') {
        res.writeHead(404, { 'content-type': 'text/plain' });
        return res.end('no such image');
      }
      if (path === '/error.png') {
        res.writeHead(503);
        return res.end();
      }
      const hops = /^\/redirect\/(\d+)$/.exec(path);
      if (hops) {
        const n = Number(hops[1]);
        res.writeHead(302, { location: n === 0 ? '/img.png?from=redirect' : `/redirect/${n - 1}`, 'set-cookie': 'session=abc' });
        return res.end();
      }
      if (path === '/to') {
        const target = new URL(req.url, base).searchParams.get('url');
        res.writeHead(307, { location: target });
        return res.end();
      }
      res.writeHead(500);
      res.end();
    });
    server.on('connection', (s) => { open_.add(s); s.on('close', () => open_.delete(s)); });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = server.address().port;
    base = `http://127.0.0.1:${port}`;
  });
  after(async () => {
    for (const s of open_) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  test('fetches an image, sending no cookie or Authorization', async () => {
    assert.deepEqual(await readImageUrl(`${base}/img.png`, open), image);
    assert.deepEqual(await readImageUrl(`${base}/chunked.png`, open), image);
    const last = seen.at(-1).headers;
    assert.equal(last.cookie, undefined);
    assert.equal(last.authorization, undefined);
  });

  test('follows up to 3 redirects, each without cookies, and no more', async () => {
    const before_ = seen.length;
    assert.deepEqual(await readImageUrl(`${base}/redirect/2`, open), image);
    const hops = seen.slice(before_);
    assert.deepEqual(hops.map((h) => h.url), ['/redirect/2', '/redirect/1', '/redirect/0', '/img.png?from=redirect']);
    for (const h of hops) assert.equal(h.headers.cookie, undefined);
    await rejects(readImageUrl(`${base}/redirect/3`, open), /more than 3 redirects/);
  });

  test('URLs with credentials are refused before any request', async () => {
    const before_ = seen.length;
    await rejects(readImageUrl(`http://user:pass@127.0.0.1:${port}/img.png`, open), /user name or password/);
    assert.equal(seen.length, before_);
  });

  test('the default policy refuses loopback, however it is written, before connecting', async () => {
    const before_ = seen.length;
    for (const host of ['127.0.0.1', '127.1', '0x7f.0.0.1', '2130706433', '[::1]', '[::ffff:127.0.0.1]', 'localhost', '0.0.0.0']) {
      await rejects(readImageUrl(`http://${host}:${port}/img.png?key=secret`, guarded), /internal address, which this server does not fetch from/);
    }
    await rejects(readImageUrl(`http://127.0.0.1:${port}/img.png?key=secret`, guarded), /^(?!.*secret).*http:\/\/127\.0\.0\.1:\d+\/img\.png/);
    assert.equal(seen.length, before_, 'the server must not have been asked');
  });

  // The local server stands in for a public host: the check below treats 127.0.0.1 (only) as
  // public and everything else as isForbiddenAddress decides.
  const publicLoopback = { lookup: (host) => import('node:dns/promises').then((d) => d.lookup(host, { all: true, verbatim: true })), isForbidden: (ip) => ip !== '127.0.0.1' && isForbiddenAddress(ip) };

  test('a redirect from an allowed host to an internal address is refused', async () => {
    const before_ = seen.length;
    assert.deepEqual(await readImageUrlWith(`${base}/img.png`, guarded, undefined, publicLoopback), image);
    // If the redirect target were not checked, this would reach 127.0.0.2 and fail with a
    // connection error (nothing listens there) instead.
    const to = (url) => `${base}/to?url=${encodeURIComponent(url)}`;
    await rejects(
      readImageUrlWith(to(`http://127.0.0.2:${port}/img.png`), guarded, undefined, publicLoopback),
      /at http:\/\/127\.0\.0\.1:\d+\/to \(redirected to http:\/\/127\.0\.0\.2:\d+\/img\.png\): 127\.0\.0\.2 is a loopback, private/,
    );
    await rejects(readImageUrlWith(to(`http://[::1]:${port}/img.png`), guarded, undefined, publicLoopback), /::1 is a loopback/);
    await rejects(readImageUrlWith(to('file:///etc/passwd'), guarded, undefined, publicLoopback), /scheme file: is not allowed/);
    assert.equal(seen.length, before_ + 4);
  });

  test('connects to the address it checked, with no second lookup', async () => {
    const asked = [];
    const net = { lookup: async (host) => { asked.push(host); return [{ address: '127.0.0.1', family: 4 }]; }, isForbidden: () => false };
    assert.deepEqual(await readImageUrlWith(`http://images.invalid:${port}/img.png`, guarded, undefined, net), image);
    assert.deepEqual(asked, ['images.invalid']); // .invalid never resolves in real DNS: the pinned address was used
    assert.equal(seen.at(-1).headers.host, `images.invalid:${port}`);
  });

  test('a host that resolves to any internal address is refused, even alongside a public one', async () => {
    const before_ = seen.length;
    const net = { lookup: async () => [{ address: '93.184.216.34', family: 4 }, { address: '127.0.0.1', family: 4 }], isForbidden: isForbiddenAddress };
    await rejects(readImageUrlWith(`http://rebind.invalid:${port}/img.png`, guarded, undefined, net), /127\.0\.0\.1 is a loopback/);
    const none = { lookup: async () => [], isForbidden: isForbiddenAddress };
    await rejects(readImageUrlWith(`http://empty.invalid:${port}/img.png`, guarded, undefined, none), /has no addresses/);
    const missing = { lookup: async () => { throw Object.assign(new Error('nope'), { code: 'ENOTFOUND' }); }, isForbidden: isForbiddenAddress };
    await rejects(readImageUrlWith(`http://missing.invalid/img.png`, guarded, undefined, missing), /does not resolve \(ENOTFOUND\)/);
    assert.equal(seen.length, before_);
  });

  test('too big by Content-Length fails at once, without waiting for the body', async () => {
    const t0 = performance.now();
    await rejects(readImageUrl(`${base}/declared-big.png`, { ...open, maxBytes: 1_000_000, timeoutMs: 5000 }), /4\.8 MiB, over this server's limit of 1\.0 MiB/);
    assert.ok(performance.now() - t0 < 2000, `took ${performance.now() - t0} ms`);
  });

  test('too big while streaming stops reading and drops the connection', async () => {
    streamed.written = 0;
    const t0 = performance.now();
    await rejects(readImageUrl(`${base}/endless.png`, { ...open, maxBytes: 200_000, timeoutMs: 5000 }), /over this server's limit of 0\.2 MiB/);
    assert.ok(performance.now() - t0 < 2000, `took ${performance.now() - t0} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.ok(streamed.closedEarly, 'the connection was closed before the server finished');
    assert.ok(streamed.written < 20_000_000, `the server wrote ${streamed.written} bytes`);
  });

  test('a stalled server runs into the time limit', { timeout: 5000 }, async () => {
    for (const path of ['/stall.png', '/no-answer.png']) {
      const t0 = performance.now();
      await rejects(readImageUrl(`${base}${path}?t=secret`, { ...open, timeoutMs: 300 }), /^(?!.*secret).*no complete answer within 300 ms/);
      const took = performance.now() - t0;
      assert.ok(took >= 250 && took < 2000, `took ${took} ms`);
    }
  });

  test('the time limit covers the whole fetch, DNS included', { timeout: 5000 }, async () => {
    const slow = { lookup: () => new Promise(() => {}), isForbidden: isForbiddenAddress };
    await rejects(readImageUrlWith('http://slow.invalid/img.png', { ...guarded, timeoutMs: 200 }, undefined, slow), /within 200 ms/);
  });

  test('the signal aborts a fetch', async () => {
    const ac = new AbortController();
    const t0 = performance.now();
    setTimeout(() => ac.abort(new Error('client went away')), 100);
    await rejects(readImageUrl(`${base}/stall.png`, { ...open, timeoutMs: 5000 }, ac.signal), /aborted/, 'ERR_ABORTED');
    assert.ok(performance.now() - t0 < 2000);
    await rejects(readImageUrl(`${base}/img.png`, open, AbortSignal.abort()), /aborted/, 'ERR_ABORTED');
  });

  test('non-2xx answers, cut-off bodies and refused connections name the URL without its query', async () => {
    await rejects(readImageUrl(`${base}/missing.png?token=secret`, open), /^(?!.*secret)Could not fetch the image at http:\/\/127\.0\.0\.1:\d+\/missing\.png: the server answered HTTP 404/);
    await rejects(readImageUrl(`${base}/error.png`, open), /HTTP 503/);
    await rejects(readImageUrl(`${base}/truncated.png`, open), /closed before the whole image arrived|download broke off/);
    const closed = createServer();
    await new Promise((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadPort = closed.address().port;
    await new Promise((resolve) => closed.close(resolve));
    await rejects(readImageUrl(`http://127.0.0.1:${deadPort}/img.png`, open), /connection failed \(ECONNREFUSED\)/);
  });
});
