// Electron main process: one window, one utility process that owns the model.
const { app, BrowserWindow, ipcMain, utilityProcess, dialog } = require('electron');
const path = require('node:path');

let win;
let host;

function startHost() {
  host = utilityProcess.fork(path.join(__dirname, 'model-host.mjs'), [], { serviceName: 'minigpt-model-host' });
  host.on('message', (message) => win?.webContents.send('model', message));
  host.on('exit', (code) => win?.webContents.send('model', { type: 'error', code: 'ERR_HOST_EXIT', message: `model process exited (${code})` }));
}

app.whenReady().then(() => {
  win = new BrowserWindow({
    width: 900,
    height: 700,
    webPreferences: { preload: path.join(__dirname, 'preload.js'), contextIsolation: true, sandbox: true },
  });
  win.loadFile(path.join(__dirname, 'index.html'));
  startHost();

  ipcMain.handle('pick-files', async (_event, what) => {
    const filters = what === 'image' ? [{ name: 'Images', extensions: ['jpg', 'jpeg', 'png', 'webp', 'gif', 'avif', 'tif', 'tiff'] }] : [{ name: 'GGUF', extensions: ['gguf'] }];
    const result = await dialog.showOpenDialog(win, { properties: ['openFile'], filters });
    return result.canceled ? null : result.filePaths[0];
  });
  ipcMain.on('model', (_event, message) => host.postMessage(message));
});

app.on('window-all-closed', () => {
  host?.postMessage({ type: 'quit' });
  app.quit();
});
