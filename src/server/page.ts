/**
 * @internal
 * The page at `/`: one static HTML file (assets/chat.html, no build step, nothing from a CDN),
 * read once.
 */
import { readFile } from 'node:fs/promises';

const pageUrl = new URL('../../assets/chat.html', import.meta.url);
let page: Promise<Buffer> | undefined;

export function chatPage(): Promise<Buffer> {
  page ??= readFile(pageUrl);
  return page;
}
