/**
 * What the native addon was built from and what it runs on.
 * @module
 */
import { binding, type NativeDevice } from './native/binding.js';

export interface SystemInfo {
  /** The llama.cpp commit the addon was built from. */
  llamaCommit: string;
  /** Node-API version the addon targets. */
  napiVersion: number;
  /** llama.cpp's feature line (SIMD, backends). */
  llamaSystemInfo: string;
  /** Backends' devices and their memory. */
  devices: NativeDevice[];
}

/** Build and runtime facts, e.g. for bug reports. */
export function getSystemInfo(): SystemInfo {
  const b = binding();
  const s = b.systemInfo();
  return { llamaCommit: b.llamaCommit, napiVersion: b.napiVersion, llamaSystemInfo: s.llamaSystemInfo, devices: s.devices };
}

/** The devices ggml's backends offer (CPU always; GPUs when a GPU backend is built in), with their memory. */
export function getDevices(): NativeDevice[] {
  return binding().systemInfo().devices;
}
