// Runs inside a worker_thread: loads the model it is told to, streams, posts each piece back.
import { parentPort, workerData } from 'node:worker_threads';
import { loadModel } from '../../dist/index.js';

const { model: modelPath, projector, image, prompt, maxTokens } = workerData;
const model = await loadModel({ model: modelPath, projector, threads: 1 });
const session = model.createSession();
const content = image ? [await model.encodeImage(image), prompt] : prompt;
const tokens = [];
for await (const piece of session.stream(content, { temperature: 0, maxTokens })) {
  tokens.push(piece.token);
  parentPort.postMessage({ type: 'piece', token: piece.token });
}
await model.dispose();
parentPort.postMessage({ type: 'done', tokens });
