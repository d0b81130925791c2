// Runs pullModel on a catalog recipe in its own process for recipe.test.js, printing each step
// as a JSON line; with `killAt: '<step>'` it SIGKILLs itself as that step starts (a crash or
// power cut at that point: nothing gets to clean up).
import { pullModel } from '../../dist/index.js';

const { name, options, killAt } = JSON.parse(process.argv[2]);
await pullModel({ model: name }, {
  ...options,
  onStep(e) {
    process.stdout.write(`${JSON.stringify(e)}\n`);
    if (e.step === killAt && e.state === 'start') process.kill(process.pid, 'SIGKILL');
  },
});
process.stdout.write('{"finished":true}\n');
