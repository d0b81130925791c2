/**
 * The Hugging Face token, found where the `huggingface_hub` tools look for it.
 * @module
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** HF_TOKEN, else the file HF_TOKEN_PATH, else $HF_HOME/token (HF_HOME defaults to ~/.cache/huggingface). */
export async function hfToken(): Promise<string | undefined> {
  const env = process.env.HF_TOKEN ?? process.env.HUGGING_FACE_HUB_TOKEN;
  if (env?.trim()) return env.trim();
  const home = process.env.HF_HOME || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface');
  const file = process.env.HF_TOKEN_PATH || join(home, 'token');
  try {
    const text = (await readFile(file, 'utf8')).trim();
    return text || undefined;
  } catch {
    return undefined;
  }
}
