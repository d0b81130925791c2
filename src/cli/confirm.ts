/**
 * @internal
 * A yes/no question on the terminal. Only asked when both stdin and stderr are terminals: a
 * script or a pipe gets a usage error that names the flag instead of a prompt nobody answers.
 */
import { createInterface } from 'node:readline/promises';

/** Whether a person is there to answer. */
export function canAsk(): boolean {
  return Boolean(process.stdin.isTTY && process.stderr.isTTY);
}

/** Asks `question` with a "[y/N]" suffix on stderr; resolves true only for y or yes. */
export async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return await new Promise<boolean>((resolve) => {
      // Ctrl-C or Ctrl-D at the prompt is a no (readline turns them into these events).
      rl.once('SIGINT', () => resolve(false));
      rl.once('close', () => resolve(false));
      rl.question(`${question} [y/N] `).then(
        (answer) => resolve(/^\s*y(es)?\s*$/i.test(answer)),
        () => resolve(false),
      );
    });
  } finally {
    rl.close();
  }
}
