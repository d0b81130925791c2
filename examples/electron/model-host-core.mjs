// The model side of the app, free of Electron: it takes requests and sends replies through
// the functions it is given, so the same code runs in Electron's utility process (model-host.mjs)
// and under plain Node (the package's test/native/electron-host.test.js).

/**
 * @param {(message: object) => void} send where replies go
 * @param {{ loadModel: typeof import('minigpt-node').loadModel }} lib the minigpt-node module
 * @returns {{ handle(message: object): Promise<void> }}
 */
export function createModelHost(send, { loadModel }) {
  let model;
  let session;
  let controller;

  async function handle(message) {
    try {
      switch (message.type) {
        case 'load':
          await model?.dispose();
          model = await loadModel({
            model: message.model,
            projector: message.projector,
            onProgress: (progress) => send({ type: 'progress', progress }),
          });
          session = model.createSession();
          send({ type: 'loaded', info: model.info });
          break;
        case 'ask': {
          if (!model) throw Object.assign(new Error('load a model first'), { code: 'ERR_INVALID_ARGUMENT' });
          controller = new AbortController();
          const content = message.image ? [await model.encodeImage(new Uint8Array(message.image)), message.prompt] : message.prompt;
          for await (const piece of session.stream(content, { maxTokens: message.maxTokens ?? 256, temperature: message.temperature ?? 0.2, signal: controller.signal })) {
            send({ type: 'piece', text: piece.text });
          }
          send({ type: 'done' });
          break;
        }
        case 'stop':
          controller?.abort();
          break;
        case 'reset':
          await session?.reset();
          break;
        case 'quit':
          await model?.dispose();
          model = undefined;
          send({ type: 'closed' });
          break;
        default:
          throw Object.assign(new Error(`unknown request ${message.type}`), { code: 'ERR_INVALID_ARGUMENT' });
      }
    } catch (err) {
      send({ type: 'error', code: err.code ?? 'ERR_UNKNOWN', message: err.message });
    }
  }

  return { handle };
}
