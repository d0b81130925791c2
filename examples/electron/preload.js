// The window's only door to the model: post requests, receive replies.
const { contextBridge, ipcRenderer } = require('electron');

contextBridge.exposeInMainWorld('minigpt', {
  send: (message) => ipcRenderer.send('model', message),
  onMessage: (listener) => ipcRenderer.on('model', (_event, message) => listener(message)),
  pick: (what) => ipcRenderer.invoke('pick-files', what),
});
