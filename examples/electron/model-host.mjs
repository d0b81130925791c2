// Runs in Electron's utility process (a Node environment apart from the window): a crash or
// a long native call here never freezes the UI.
import * as minigpt from 'minigpt-node';
import { createModelHost } from './model-host-core.mjs';

const host = createModelHost((message) => process.parentPort.postMessage(message), minigpt);
process.parentPort.on('message', (event) => host.handle(event.data));
