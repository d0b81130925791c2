// The `minigpt` command line: `describe` streams the same answer the API gives, every image
// it is given goes into the prompt, and every mistake on the command line is one line that
// names it and points to --help, exit code 2, never a stack trace.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadModel } from '../../dist/index.js';
import { writeTinyLlama } from '../../tools/fixtures/models.js';
import { makeFixtures, root } from '../helpers.js';

const cliPath = join(root, 'dist', 'cli', 'index.js');
let fx;
before(async () => {
  fx = await makeFixtures();
});
after(async () => {
  await fx?.cleanup();
});

/** Runs the CLI; resolves { status, stdout, stderr } whatever the exit code. */
function cli(...args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** A usage error: exit 2, nothing on stdout, one line on stderr naming the problem and --help. */
async function usageError(args, problem) {
  const r = await cli(...args);
  const where = `minigpt ${args.join(' ')}\n${r.stderr}`;
  assert.equal(r.status, 2, where);
  assert.equal(r.stdout, '', where);
  assert.doesNotMatch(r.stderr, /^\s+at /m, where);
  assert.match(r.stderr, /^[^\n]+\n$/, `one line: ${where}`);
  const command = ['describe', 'convert', 'build'].includes(args[0]) ? ` ${args[0]}` : '';
  assert.ok(r.stderr.startsWith(`minigpt${command}: `), where);
  assert.ok(r.stderr.endsWith(`. See 'minigpt${command} --help'.\n`), where);
  assert.match(r.stderr, problem, where);
  return r.stderr;
}

/** A runtime failure: exit 1, one line `minigpt: <message> [<code>]`. */
async function runtimeError(args, code, message) {
  const r = await cli(...args);
  const where = `minigpt ${args.join(' ')}\n${r.stderr}`;
  assert.equal(r.status, 1, where);
  assert.doesNotMatch(r.stderr, /^\s+at /m, where);
  assert.match(r.stderr, new RegExp(`^minigpt: [^\\n]*\\[${code}\\]\\n$`), where);
  assert.match(r.stderr, message, where);
}

const models = () => ['--model', fx.model, '--projector', fx.projector];

test('describe prints the greedy answer to stdout', async () => {
  const r = await cli(
    'describe', fx.images.png, ...models(), '--prompt', 'What is this?', '--temperature', '0', '--max-tokens', '12', '--threads', '2',
  );
  assert.equal(r.status, 0, r.stderr);
  const model = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
  const image = await model.encodeImage(fx.images.png);
  const expected = await model.createSession().ask([image, 'What is this?'], { temperature: 0, maxTokens: 12 });
  await model.dispose();
  assert.ok(expected.length > 0);
  assert.equal(r.stdout, expected + '\n');
  assert.equal(r.stderr, '', 'nothing on stderr without a terminal or --verbose');
});

test('describe with two images puts both in the prompt, in order', async () => {
  const greedy = ['--prompt', 'Compare them.', '--temperature', '0', '--max-tokens', '10', '--threads', '2', '--verbose'];
  const one = await cli('describe', fx.images.png, ...models(), ...greedy);
  const two = await cli('describe', fx.images.png, fx.images.pngOther, ...models(), ...greedy);
  assert.equal(one.status, 0, one.stderr);
  assert.equal(two.status, 0, two.stderr);

  const model = await loadModel({ model: fx.model, projector: fx.projector, threads: 2 });
  const first = await model.encodeImage(fx.images.png);
  const second = await model.encodeImage(fx.images.pngOther);
  const ask = (parts) => model.createSession().ask(parts, { temperature: 0, maxTokens: 10 });
  const expected = await ask([first, second, 'Compare them.']);
  const swapped = await ask([second, first, 'Compare them.']);
  const nTokens = second.nTokens;
  await model.dispose();

  assert.equal(two.stdout, expected + '\n');
  // The verbose line counts the prompt's positions: the second image adds exactly its own.
  const stats = (s) => /^minigpt: (\d+) images? \(([\d +]+) tokens\), prompt (\d+) tokens, generated (\d+) tokens/m.exec(s);
  const s1 = stats(one.stderr);
  const s2 = stats(two.stderr);
  assert.ok(s1 && s2, `verbose lines:\n${one.stderr}\n${two.stderr}`);
  assert.equal(s1[1], '1');
  assert.equal(s2[1], '2');
  assert.equal(s2[2], `${nTokens} + ${nTokens}`);
  assert.equal(Number(s2[3]) - Number(s1[3]), nTokens);
  assert.match(two.stderr, /generated 10 tokens, finished: length\n$/);
  // The order given on the command line is the order in the prompt (when it shows in the answer).
  if (swapped !== expected) {
    const reversed = await cli('describe', fx.images.pngOther, fx.images.png, ...models(), ...greedy);
    assert.equal(reversed.stdout, swapped + '\n');
  }
});

describe('help', () => {
  test('minigpt --help, -h and help print every command to stdout, exit 0', async () => {
    for (const args of [['--help'], ['-h'], ['help']]) {
      const r = await cli(...args);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '');
      for (const command of ['describe <image>', 'convert -o <out.gguf>', 'build [options]', 'help']) assert.match(r.stdout, new RegExp(`minigpt ${command}`.replace(/[[\]]/g, '\\$&')));
    }
  });

  test("minigpt <command> --help and help <command> print that command's usage to stdout, exit 0", async () => {
    for (const command of ['describe', 'convert', 'build']) {
      for (const args of [[command, '--help'], [command, '-h'], ['help', command], [command, '--no-such-flag', '--help']]) {
        const r = await cli(...args);
        assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
        assert.equal(r.stderr, '');
        assert.match(r.stdout, new RegExp(`^Usage:\\n  minigpt ${command} `));
        for (const other of ['describe', 'convert', 'build'].filter((c) => c !== command)) assert.doesNotMatch(r.stdout, new RegExp(`minigpt ${other} `));
      }
    }
    assert.match((await cli('describe', '--help')).stdout, /several images all go into the prompt, in the order given/);
  });
});

describe('usage errors: exit 2, one line naming the problem and --help', () => {
  test('unknown command, or none', async () => {
    await usageError(['frobnicate'], /unknown command 'frobnicate'; the commands are describe, pull, models, rm, convert, quantize, serve, rpc-server, build and help/);
    await usageError(['help', 'frobnicate'], /unknown command 'frobnicate'/);
    await usageError([], /missing the command \(describe, pull, models, rm, convert, quantize, serve, rpc-server, build or help\)/);
    await usageError(['--model', 'x'], /expected a command before the option '--model'/);
  });

  test('unknown option', async () => {
    await usageError(['describe', fx.images.png, ...models(), '--tokens', '5'], /unknown option '--tokens' \(did you mean '--max-tokens'\?\)/);
    await usageError(['describe', fx.images.png, ...models(), '-x'], /unknown option '-x'/);
    await usageError(['describe', fx.images.png, ...models(), '--max_tokens=5'], /unknown option '--max_tokens' \(did you mean '--max-tokens'\?\)/);
    await usageError(['convert', '-o', 'out.gguf', 'in.pth', '--bogus'], /unknown option '--bogus'/);
    await usageError(['convert', '-o', 'out.gguf', 'in.pth', '--vison-heads', '4'], /unknown option '--vison-heads' \(did you mean '--vision-heads'\?\)/);
    await usageError(['build', '--cuda'], /unknown option '--cuda'/);
  });

  test('option missing its value', async () => {
    await usageError(['describe', fx.images.png, '--projector', fx.projector, '--model'], /option '--model' needs a value/);
    await usageError(['describe', fx.images.png, '--projector', fx.projector, '-m'], /option '--model' needs a value/);
    await usageError(['describe', fx.images.png, ...models(), '--model='], /option '--model' needs a value/);
    await usageError(['describe', fx.images.png, ...models(), '--template', ''], /option '--template' needs a value/);
    await usageError(
      ['describe', fx.images.png, ...models(), '--temperature', '-1'],
      /option '--temperature' needs a value but is followed by '-1' \(write --temperature=-1 if that is the value\)/,
    );
    await usageError(['describe', fx.images.png, '--model', '--projector', fx.projector], /option '--model' needs a value but is followed by '--projector'/);
    await usageError(['describe', fx.images.png, ...models(), '--verbose=yes'], /option '--verbose' takes no value/);
    await usageError(['convert', 'in.pth', '-o'], /option '--output' needs a value/);
    await usageError(['build', '--jobs'], /option '--jobs' needs a value/);
  });

  test('a numeric option that is not a number or out of range names the flag and the range', async () => {
    const d = (...more) => ['describe', fx.images.png, ...models(), ...more];
    await usageError(d('--max-tokens', 'ten'), /--max-tokens expects a whole number from 1 to 1000000, got 'ten'/);
    await usageError(d('--max-tokens', '0'), /--max-tokens expects a whole number from 1 to 1000000, got '0'/);
    await usageError(d('--max-tokens', '2.5'), /--max-tokens expects a whole number/);
    await usageError(d('--max-tokens', '0x10'), /--max-tokens expects a whole number/);
    await usageError(d('--temperature', 'hot'), /--temperature expects a number from 0 to 100, got 'hot'/);
    await usageError(d('--temperature=-0.5'), /--temperature expects a number from 0 to 100, got '-0.5'/);
    await usageError(d('--temperature', '101'), /--temperature expects a number from 0 to 100, got '101'/);
    await usageError(d('--temperature', 'Infinity'), /--temperature expects a number/);
    await usageError(d('--context-size', '8'), /--context-size expects a whole number from 16 to 16777216, got '8'/);
    await usageError(d('--context-size', '4k'), /--context-size expects a whole number/);
    await usageError(d('--threads', '0'), /--threads expects a whole number from 1 to 1024, got '0'/);
    await usageError(d('--threads', ' 2'), /--threads expects a whole number/);
    await usageError(['convert', '-o', 'o.gguf', 'in.pth', '--vision-heads', 'four'], /--vision-heads expects a whole number from 1 to 1000000, got 'four'/);
    await usageError(['convert', '-o', 'o.gguf', 'in.pth', '--vision-blocks', '0'], /--vision-blocks expects a whole number/);
    await usageError(['convert', '-o', 'o.gguf', 'in.pth', '--ln-vision-eps', 'small'], /--ln-vision-eps expects a number from 0 to 1, got 'small'/);
    await usageError(['build', '--jobs', 'many'], /--jobs expects a whole number/);
  });

  test('a value not among the choices names them', async () => {
    await usageError(['convert', '-o', 'o.gguf', 'in.pth', '--type', 'q3'], /--type expects 'f32', 'f16', 'q8_0', 'q5_0', 'q5_1', 'q4_0' or 'q4_1', got 'q3'/);
    await usageError(['convert', '-o', 'o.gguf', 'in.pth', '--template', 'vicuna'], /--template expects 'minigpt4-v0', 'minigpt4-llama2' or 'none', got 'vicuna'/);
    await usageError(['convert', '-o', 'o.gguf', 'in.pth', '--variant', 'q'], /--variant expects 'qformer' or 'patch_group', got 'q'/);
    await usageError(['build', '--gpu', 'rocm'], /--gpu expects 'cuda', 'vulkan' or 'metal', got 'rocm'/);
  });

  test('a missing image, model or projector is named', async () => {
    await usageError(['describe', ...models()], /: missing the image to describe\./);
    await usageError(['describe', fx.images.png, '--projector', fx.projector], /: missing --model <llm\.gguf>\./);
    await usageError(['describe', fx.images.png, '--model', fx.model], /: missing --projector <mmproj\.gguf>\./);
    await usageError(['describe'], /: missing the image to describe\./);
    await usageError(['describe', '--projector', fx.projector], /: missing the image to describe and --model <llm\.gguf>\./);
    await usageError(['convert', 'in.pth'], /: missing -o <out\.gguf>\./);
    await usageError(['convert', '-o', 'o.gguf'], /: missing the inputs/);
    await usageError(['convert'], /: missing -o <out\.gguf> and the inputs/);
    await usageError(['build', 'now'], /unexpected argument 'now'/);
  });
});

describe('runtime errors: exit 1, one line with the error code', () => {
  test('a missing model file', async () => {
    await runtimeError(['describe', fx.images.png, '--model', join(fx.dir, 'missing.gguf'), '--projector', fx.projector], 'ERR_MODEL_LOAD', /not found/);
  });

  test('a missing or unreadable image, the second of two', async () => {
    await runtimeError(['describe', fx.images.png, join(fx.dir, 'missing.png'), ...models()], 'ERR_IMAGE_DECODE', /missing\.png/);
    await runtimeError(['describe', fx.images.png, fx.model, ...models()], 'ERR_IMAGE_DECODE', /tiny-llama\.gguf|decode/i);
  });

  test("advice that names an API option names the flag instead (no chat template, too small a context)", async () => {
    const bare = join(fx.dir, 'no-template.gguf');
    await writeTinyLlama(bare, { overrides: { 'tokenizer.chat_template': null } });
    const args = ['describe', fx.images.png, '--model', bare, '--projector', fx.projector, '--max-tokens', '4', '--temperature', '0'];
    await runtimeError(args, 'ERR_TEMPLATE', /no chat template; pass --template none to send prompts as written/);
    const r = await cli(...args, '--template', 'none');
    assert.equal(r.status, 0, r.stderr);
    const long = 'a picture of a cat on a mat, '.repeat(100);
    await runtimeError([...args, '--context-size', '256', '--template', 'none', '--prompt', long], 'ERR_CONTEXT_OVERFLOW', /--context-size/);
  });

  test('convert of an input that does not exist', async () => {
    await runtimeError(['convert', '-o', join(fx.dir, 'o.gguf'), join(fx.dir, 'missing.pth')], 'ERR_[A-Z_]+', /missing\.pth/);
  });
});
