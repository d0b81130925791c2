/**
 * @internal
 * `minigpt serve`: the OpenAI-compatible server (src/server/) on a port, until SIGINT/SIGTERM.
 */
import { numberFlag, parseCommand, UsageError, type OptionSpec } from './args.js';

export const serveUsage = `  minigpt serve --model <name|uri|llm.gguf> [--projector <mmproj.gguf|uri>] [options]
      an OpenAI-compatible server: POST /v1/chat/completions (text and images), GET /v1/models,
      GET /health, GET /metrics, and a page to try it at /
      -m, --model <m>          the language model: a GGUF file, a catalog name, an hf: URI or an https URL
      -p, --projector <p>      the image projector GGUF (optional: without one the server takes text only)
      --host <addr>            address to bind (default: 127.0.0.1; anything else warns unless --api-key is set)
      --port <n>               port, 0 for any free one (default: 8080)
      --parallel <n>           requests answered at once, each on its own session (default: 1)
      --queue <n>              requests that may wait for a session; more get 503 (default: 64)
      --context-size <n>       context of each session in tokens (default: the model's, at most 4096)
      --threads <n>            CPU threads (default: at most 8)
      --api-key <key>          require "Authorization: Bearer <key>" (also: MINIGPT_API_KEY)
      --max-body <bytes>       largest request body, images included (default: 20971520)
      --allow-remote-images    fetch http(s) image URLs (off: only data: URLs), with size and time limits
      --allow-private-images   with --allow-remote-images, also from loopback and private addresses
      --no-ui                  do not serve the page at /
      --shutdown-timeout <s>   on SIGINT/SIGTERM, how long running answers may take to finish (default: 10)
`;

const options: Record<string, OptionSpec> = {
  model: { type: 'string', short: 'm' },
  projector: { type: 'string', short: 'p' },
  host: { type: 'string' },
  port: { type: 'string' },
  parallel: { type: 'string' },
  queue: { type: 'string' },
  'context-size': { type: 'string' },
  threads: { type: 'string' },
  'api-key': { type: 'string' },
  'max-body': { type: 'string' },
  'allow-remote-images': { type: 'boolean' },
  'allow-private-images': { type: 'boolean' },
  'no-ui': { type: 'boolean' },
  'shutdown-timeout': { type: 'string' },
};

const NUMBERS = {
  port: { integer: true, min: 0, max: 65535 },
  parallel: { integer: true, min: 1, max: 256 },
  queue: { integer: true, min: 0, max: 100_000 },
  'context-size': { integer: true, min: 16, max: 1 << 24 },
  threads: { integer: true, min: 1, max: 1024 },
  'max-body': { integer: true, min: 1024, max: 2 ** 31 },
  'shutdown-timeout': { integer: false, min: 0, max: 3600 },
} as const;

export async function serve(argv: string[]): Promise<number> {
  const { values, help } = parseCommand('serve', argv, options, false);
  if (help) {
    process.stdout.write(`Usage:\n${serveUsage}`);
    return 0;
  }
  if (values.model === undefined) throw new UsageError('serve', 'missing --model <llm.gguf|name|uri>');
  const n = Object.fromEntries((Object.keys(NUMBERS) as Array<keyof typeof NUMBERS>).map((flag) => [flag, numberFlag('serve', flag, values[flag], NUMBERS[flag])])) as Record<
    keyof typeof NUMBERS,
    number | undefined
  >;
  const apiKey = (values['api-key'] as string | undefined) ?? (process.env.MINIGPT_API_KEY || undefined);
  const host = (values.host as string | undefined) ?? '127.0.0.1';
  const parallel = n.parallel ?? 1;

  // Loaded only now: the native addon and sharp take a while, and help or a usage error need neither.
  const [{ loadModel }, { createServer }] = await Promise.all([import('../model.js'), import('../server/index.js')]);
  const loading = new AbortController();
  const loaded = loadModel({
    model: values.model as string,
    projector: values.projector as string | undefined,
    threads: n.threads,
    contextSize: n['context-size'],
    parallelSessions: parallel,
    signal: loading.signal,
  });
  loaded.catch(() => {});
  const server = createServer(loaded, {
    parallel,
    queue: n.queue,
    apiKey,
    maxBody: n['max-body'],
    allowRemoteImages: values['allow-remote-images'] === true,
    allowPrivateImages: values['allow-private-images'] === true,
    ui: values['no-ui'] !== true,
  });
  // Listening before the model is loaded: /health says 503 until it is, as load balancers expect.
  const address = await server.listen(n.port ?? 8080, host);
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  process.stderr.write(`minigpt serve: listening on http://${shown}:${address.port}\n`);

  let stopping: Promise<void> | undefined;
  let signalled!: () => void;
  const stopRequested = new Promise<void>((resolve) => (signalled = resolve));
  const stop = (signal: string) => {
    if (stopping) {
      process.stderr.write(`minigpt serve: ${signal} again, exiting now\n`);
      process.exit(130);
    }
    process.stderr.write(`minigpt serve: ${signal}: finishing running answers (at most ${n['shutdown-timeout'] ?? 10} s), then exiting\n`);
    loading.abort();
    stopping = server.close({ timeoutMs: Math.round((n['shutdown-timeout'] ?? 10) * 1000) });
    signalled();
  };
  const onInt = () => stop('SIGINT');
  const onTerm = () => stop('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  try {
    try {
      await server.ready();
    } catch (err) {
      if (stopping) {
        await stopping;
        return 0;
      }
      await server.close({ timeoutMs: 0 });
      throw err;
    }
    const model = await loaded;
    process.stderr.write(`minigpt serve: ready: ${model.info.description}${model.info.hasVision ? `, images through ${model.info.projectorType}` : ', text only'}; ${parallel} parallel\n`);
    await stopRequested;
    await stopping;
    await model.dispose();
    process.stderr.write('minigpt serve: stopped\n');
    return 0;
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  }
}
