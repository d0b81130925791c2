#!/usr/bin/env node
/**
 * @internal
 * The `minigpt` command line:
 *   minigpt describe <image>... [--model m.gguf|name|uri] [--projector p.gguf] [--yes] [--prompt ...]
 *   minigpt pull <name|uri>... [--projector <uri>] [--offline]
 *   minigpt models
 *   minigpt rm <name|uri>...
 *   minigpt convert -o out.gguf <inputs...>          (a BLIP-2 projector)
 *   minigpt convert --llama -o out.gguf <folder|.bin>  (a LLaMA / Vicuna language model)
 *   minigpt quantize in.gguf out.gguf Q4_K_M
 *   minigpt serve --model m.gguf [--projector p.gguf] [--port 8080] [--parallel N] ...
 *   minigpt rpc-server [--host 127.0.0.1] [--port 50052] [--threads N] [--cache DIR] [--device NAME,...]
 *   minigpt build [--gpu cuda|vulkan|metal]
 * Exit codes: 0 done, 1 the work failed (one line `minigpt: <message> [<code>]`), 2 the command
 * line is wrong (one line naming the problem and pointing to --help), 130 a pull stopped by
 * Ctrl-C (its partial file kept for the next pull to resume).
 */
import { MinigptError } from '../errors.js';
import { listOf, UsageError, usageLine } from './args.js';
import { build, buildUsage } from './build.js';
import { convert, convertUsage } from './convert.js';
import { convertLlamaCommand, convertLlamaUsage } from './convert-llama.js';
import { quantizeCommand, quantizeUsage } from './quantize.js';
import { describe, describeUsage } from './describe.js';
import { models, modelsUsage } from './models.js';
import { pull, pullUsage } from './pull.js';
import { rm, rmUsage } from './rm.js';
import { rpcServer, rpcServerUsage } from './rpc-server.js';
import { serve, serveUsage } from './serve.js';

const commands: Record<string, { run: (argv: string[]) => number | Promise<number>; usage: string }> = {
  describe: { run: describe, usage: describeUsage },
  pull: { run: pull, usage: pullUsage },
  models: { run: models, usage: modelsUsage },
  rm: { run: rm, usage: rmUsage },
  convert: { run: (argv) => (argv.includes('--llama') ? convertLlamaCommand(argv) : convert(argv)), usage: `${convertUsage}${convertLlamaUsage}` },
  quantize: { run: quantizeCommand, usage: quantizeUsage },
  serve: { run: serve, usage: serveUsage },
  'rpc-server': { run: rpcServer, usage: rpcServerUsage },
  build: { run: build, usage: buildUsage },
};

const usage = `Usage:
${describeUsage}${pullUsage}${modelsUsage}${rmUsage}${convertUsage}${convertLlamaUsage}${quantizeUsage}${serveUsage}${rpcServerUsage}${buildUsage}  minigpt help [<command>]   this text, or one command's (also: minigpt <command> --help)
`;

const unknownCommand = (name: string) =>
  new UsageError('', `unknown command '${name}'; the commands are ${listOf([...Object.keys(commands), 'help'])}`);

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined) throw new UsageError('', `missing the command (${listOf([...Object.keys(commands), 'help'], 'or')})`);
  if (command === '--help' || command === '-h' || command === 'help') {
    const topic = command === 'help' ? rest[0] : undefined;
    if (topic !== undefined && !(topic in commands)) throw unknownCommand(topic);
    process.stdout.write(topic === undefined ? usage : `Usage:\n${commands[topic].usage}`);
    return 0;
  }
  if (!Object.hasOwn(commands, command)) {
    if (command.startsWith('-')) throw new UsageError('', `expected a command before the option '${command}'`);
    throw unknownCommand(command);
  }
  return commands[command].run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(usageLine(err));
      process.exitCode = 2;
      return;
    }
    // An error of ours is the work failing (a missing file, a bad model): one line, its code.
    // Anything else is a bug in this package, and its stack is what a report needs.
    if (err instanceof MinigptError) process.stderr.write(`minigpt: ${err.message} [${err.code}]\n`);
    else process.stderr.write(`minigpt: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
