/**
 * What the native addon was built from and what it runs on.
 * @module
 */
import { backendErrors, binding, setBindingConfig, type NativeCpuBackend, type NativeDevice } from './native/binding.js';
import { InvalidArgumentError } from './errors.js';

export interface SystemInfo {
  /** The llama.cpp commit the addon was built from. */
  llamaCommit: string;
  /** Node-API version the addon targets. */
  napiVersion: number;
  /** The minigpt.node file in use. */
  binaryPath: string;
  /** llama.cpp's feature line (SIMD, backends). */
  llamaSystemInfo: string;
  /**
   * The CPU backend in use. A prebuild carries one library per instruction-set level and
   * loads the best this CPU runs (`variant`: `'haswell'`, `'skylakex'`, `'zen4'`, ...); a local
   * build has it compiled in for the build machine (`'built-in'`).
   */
  cpuBackend: NativeCpuBackend;
  /** Backends' devices and their memory. */
  devices: NativeDevice[];
  /** GPU backend libraries that were found but could not be loaded, with the reason. */
  backendErrors: string[];
}

/** Build and runtime facts, e.g. for bug reports. */
export function getSystemInfo(): SystemInfo {
  const b = binding();
  const s = b.systemInfo();
  return {
    llamaCommit: b.llamaCommit,
    napiVersion: b.napiVersion,
    binaryPath: s.addonPath,
    llamaSystemInfo: s.llamaSystemInfo,
    cpuBackend: s.cpuBackend,
    devices: s.devices,
    backendErrors: [...backendErrors],
  };
}

/** The devices ggml's backends offer (CPU always; GPUs when a GPU backend is present), with their memory. */
export function getDevices(): NativeDevice[] {
  return binding().systemInfo().devices;
}

/** Where minigpt-node's native code comes from; see {@link configure}. */
export interface ConfigureOptions {
  /** A minigpt.node to use instead of the search (local build, then `prebuilds/`); trusted as it is. */
  binaryPath?: string;
  /** Extra ggml backend libraries to register, e.g. `/opt/minigpt/libggml-cuda.so` (prebuilds only). */
  backends?: string[];
}

/**
 * Chooses the native binary and extra backends. Call it before anything loads the addon (the
 * first `loadModel`, `getSystemInfo` or `getDevices`); later calls throw `ERR_INVALID_ARGUMENT`.
 * The environment variables `MINIGPT_NODE_BINARY` and `MINIGPT_BACKENDS` (a path list) do the same.
 */
export function configure(options: ConfigureOptions): void {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('configure expects an options object');
  for (const key of Object.keys(options)) {
    if (key !== 'binaryPath' && key !== 'backends') throw new InvalidArgumentError(`Unknown configure option "${key}"; expected binaryPath or backends`);
  }
  if (options.binaryPath !== undefined && (typeof options.binaryPath !== 'string' || options.binaryPath === '')) {
    throw new InvalidArgumentError('configure: binaryPath must be a non-empty string');
  }
  if (options.backends !== undefined && (!Array.isArray(options.backends) || options.backends.some((b) => typeof b !== 'string'))) {
    throw new InvalidArgumentError('configure: backends must be an array of library paths');
  }
  setBindingConfig({
    ...(options.binaryPath !== undefined ? { binaryPath: options.binaryPath } : {}),
    ...(options.backends !== undefined ? { backends: [...options.backends] } : {}),
  });
}
