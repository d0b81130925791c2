/**
 * Image inputs: file paths, encoded bytes (anything sharp reads: JPEG, PNG, WebP, GIF, AVIF,
 * TIFF, ...), raw pixels or a sharp instance, all decoded the same way into upright 8-bit sRGB
 * RGB pixels, so the same picture gives the same embedding whatever form it arrives in.
 * @module
 */
import { stat } from 'node:fs/promises';
import sharp from 'sharp';
import type { Sharp } from 'sharp';
import { ImageError, InvalidArgumentError } from './errors.js';
import { invalid, isUrlLike, requireFilePath } from './validate.js';

/** Raw pixels, row-major, `channels` bytes per pixel (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA). */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 1 | 2 | 3 | 4;
}

/** Every form `encodeImage` and `stream` accept for a picture. */
export type ImageInput = string | URL | Uint8Array | RawImage | Sharp;

/** Decoded pixels handed to the projector. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

export interface DecodeOptions {
  /**
   * Refuse images with more pixels (width x height, read from the file's header) than this,
   * before decoding them, so a small file claiming a huge picture cannot exhaust memory.
   * A positive integer, or `Infinity` for no limit. Defaults to 100 megapixels.
   */
  maxPixels?: number;
  /** Colour that transparent pixels are composed onto, each channel 0 to 255. Defaults to white. */
  background?: { r: number; g: number; b: number };
  /**
   * Squash to exactly this size (aspect ratio not kept) with antialiased bicubic resampling,
   * as BLIP-2's eval preprocessing does. Defaults to no resize.
   */
  resize?: { width: number; height: number };
}

/**
 * A sharp instance, ours or one made by another copy of sharp: sharp ships separate ESM and
 * CommonJS builds, so an instance from `require('sharp')` (or another sharp version) is not
 * `instanceof` the sharp this package imports, yet works the same.
 */
function isSharp(value: unknown): value is Sharp {
  if (value instanceof sharp) return true;
  if (value === null || typeof value !== 'object') return false;
  const s = value as Record<string, unknown>;
  return ['clone', 'metadata', 'rotate', 'flatten', 'toColourspace', 'removeAlpha', 'raw', 'toBuffer'].every((m) => typeof s[m] === 'function');
}

/** True for values `decodeImage` accepts (used to tell images from text in prompts). */
export function isImageInput(value: unknown): value is Exclude<ImageInput, string> {
  if (value instanceof Uint8Array || value instanceof URL) return true;
  if (isSharp(value)) return true;
  if (value !== null && typeof value === 'object') {
    const raw = value as Partial<RawImage>;
    return raw.data instanceof Uint8Array && typeof raw.width === 'number' && typeof raw.height === 'number';
  }
  return false;
}

function sourceFor(input: ImageInput, limitInputPixels: number): Sharp {
  const options = { limitInputPixels, failOn: 'error' as const };
  if (typeof input === 'string') return sharp(input, options);
  if (input instanceof Uint8Array) {
    if (input.length === 0) throw new ImageError('ERR_IMAGE_DECODE', 'The image buffer is empty (0 bytes)');
    return sharp(input, options);
  }
  if (isSharp(input)) return input.clone();
  if (!isImageInput(input))
    throw new InvalidArgumentError('Expected an image: a file path, a Buffer or Uint8Array of encoded bytes, raw pixels { data, width, height, channels } or a sharp instance');
  const raw = input as RawImage;
  const { width, height, channels } = raw;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1)
    throw new InvalidArgumentError(`Expected positive integer width and height for raw pixels but received ${width}x${height}`);
  if (![1, 2, 3, 4].includes(channels))
    throw new InvalidArgumentError(`Expected channels 1, 2, 3 or 4 for raw pixels but received ${String(channels)}`);
  if (raw.data.length !== width * height * channels)
    throw new InvalidArgumentError(
      `Raw pixel buffer holds ${raw.data.length} bytes but ${width}x${height}x${channels} needs ${width * height * channels}`,
    );
  return sharp(raw.data, { raw: { width, height, channels }, limitInputPixels });
}

const DEFAULT_MAX_PIXELS = 100_000_000;

function checkDecodeOptions(options: DecodeOptions): { maxPixels: number; background: { r: number; g: number; b: number } } {
  if (options === null || typeof options !== 'object') throw invalid('an object', 'image options', options);
  const maxPixels = options.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (maxPixels !== Infinity && !(Number.isSafeInteger(maxPixels) && maxPixels > 0)) throw invalid('positive integer or Infinity', 'maxPixels', maxPixels);
  const background = options.background ?? { r: 255, g: 255, b: 255 };
  const channel = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= 255;
  if (background === null || typeof background !== 'object' || !channel(background.r) || !channel(background.g) || !channel(background.b)) {
    throw invalid('{ r, g, b } with each channel a number from 0 to 255', 'background', background);
  }
  return { maxPixels, background };
}

/**
 * Decodes any {@link ImageInput} into upright RGB: EXIF orientation applied, alpha composed
 * onto `background`, colour converted to sRGB, 8 bits per channel. Animated images give
 * their first frame. Runs on libuv's pool, never blocking the JS thread.
 * @throws ImageError `ERR_IMAGE_DECODE` when the input is not a readable image.
 */
export async function decodeImage(image: ImageInput, options: DecodeOptions = {}): Promise<RgbImage> {
  const { maxPixels, background } = checkDecodeOptions(options);
  const input = image instanceof URL || (typeof image === 'string' && isUrlLike(image)) ? requireFilePath(image, 'image') : image;
  if (typeof input === 'string') {
    const info = await stat(input).catch((err: NodeJS.ErrnoException) => {
      throw new ImageError('ERR_IMAGE_DECODE', err.code === 'ENOENT' ? `Image file not found: ${input}` : `Cannot read image file ${input}: ${err.message}`, { cause: err });
    });
    if (!info.isFile()) throw new ImageError('ERR_IMAGE_DECODE', `Image path is not a file: ${input}`);
    if (info.size === 0) throw new ImageError('ERR_IMAGE_DECODE', `Image file is empty (0 bytes): ${input}`);
  }
  // sharp takes 0 to mean "no limit".
  const limit = maxPixels === Infinity ? 0 : maxPixels;
  if (isSharp(input) && maxPixels !== Infinity) {
    // A sharp instance comes with its own input options: check its header against maxPixels here.
    const { width, height } = await input.metadata().catch((err: Error) => {
      throw new ImageError('ERR_IMAGE_DECODE', `Could not decode the image: ${err.message}`, { cause: err });
    });
    if (width !== undefined && height !== undefined && width * height > maxPixels) throw tooManyPixels(width, height, maxPixels);
  }
  try {
    // sharp orients before it resizes, whatever the call order, so one pass does it all.
    let pipeline = sourceFor(input, limit).rotate().flatten({ background });
    if (options.resize) pipeline = pipeline.resize(options.resize.width, options.resize.height, { fit: 'fill', kernel: 'cubic' });
    const { data, info } = await pipeline
      .toColourspace('srgb')
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels === 3) return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
    const rgb = new Uint8Array(info.width * info.height * 3);
    for (let i = 0, j = 0; i < rgb.length; i += 3, j += info.channels) rgb[i] = rgb[i + 1] = rgb[i + 2] = data[j];
    return { data: rgb, width: info.width, height: info.height };
  } catch (err) {
    if (err instanceof ImageError || err instanceof InvalidArgumentError) throw err;
    const message = (err as Error).message;
    if (/pixel limit/i.test(message)) {
      // Name the size the header claims (read without the limit: the header alone, nothing decoded).
      const claimed =
        typeof input === 'string' || input instanceof Uint8Array
          ? await sharp(input, { limitInputPixels: false }).metadata().catch(() => undefined)
          : isSharp(input)
            ? undefined
            : { width: (input as RawImage).width, height: (input as RawImage).height };
      throw tooManyPixels(claimed?.width, claimed?.height, maxPixels, err);
    }
    throw new ImageError('ERR_IMAGE_DECODE', `Could not decode the image: ${message}`, { cause: err });
  }
}

function tooManyPixels(width: number | undefined, height: number | undefined, maxPixels: number, cause?: unknown): ImageError {
  const size = width !== undefined && height !== undefined ? `${width}x${height} (${width * height} pixels)` : `larger than ${maxPixels} pixels`;
  return new ImageError(
    'ERR_IMAGE_DECODE',
    `The image is ${size}, over the limit of maxPixels = ${maxPixels}; it was refused before decoding. Pass a larger maxPixels (or Infinity) to encodeImage to accept it`,
    { cause },
  );
}
