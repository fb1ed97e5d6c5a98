// What the console's sections share: the signed-in token, element helpers
// (text only, never markup), the station's time in a chosen zone, and
// reading an NDJSON stream of a server-streaming call.

import { ApiError, call } from '../api.js';

export const KEY = 'onair.console.key';
export const $ = (id) => document.getElementById(id);

export function token() {
  return sessionStorage.getItem(KEY);
}

/** Calls the REST API with the signed-in token. */
export function api(method, path, body) {
  return call(method, path, { body, token: token() });
}

export function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

export function button(label, onClick, ariaLabel) {
  const node = element('button', label);
  node.type = 'button';
  if (ariaLabel) node.setAttribute('aria-label', ariaLabel);
  node.addEventListener('click', onClick);
  return node;
}

/** The message of an error, as the service wrote it. */
export function reason(error) {
  return error instanceof ApiError ? error.message : String((error && error.message) || error);
}

/** Shows `text` in the alert element `id` (empty clears it). */
export function alertIn(id, text) {
  $(id).textContent = text || '';
}

export const enc = encodeURIComponent;

// Times: shown and typed in a time zone (the console's zone field), sent as
// RFC 3339 UTC.

function parts(ms, zone) {
  const format = new Intl.DateTimeFormat('en-US', {
    timeZone: zone,
    hourCycle: 'h23',
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  });
  const out = {};
  for (const part of format.formatToParts(new Date(ms))) out[part.type] = part.value;
  return out;
}

function offsetMs(ms, zone) {
  const p = parts(ms, zone);
  const asUtc = Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour) % 24, Number(p.minute), Number(p.second));
  return asUtc - Math.floor(ms / 1000) * 1000;
}

/** `YYYY-MM-DDTHH:MM:SS` in `zone` for the instant `ms`. */
export function toLocalInput(ms, zone) {
  const p = parts(ms, zone);
  return `${p.year}-${p.month}-${p.day}T${String(Number(p.hour) % 24).padStart(2, '0')}:${p.minute}:${p.second}`;
}

/** The instant of a `datetime-local` value read in `zone`; NaN when empty. */
export function fromLocalInput(value, zone) {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?/.exec(value || '');
  if (!match) return NaN;
  const [, y, mo, d, h, mi, s] = match;
  const guess = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s || 0));
  const first = guess - offsetMs(guess, zone);
  return guess - offsetMs(first, zone);
}

/** A short `HH:MM:SS` (with the date when it is not `dayOf`'s) in `zone`. */
export function clock(ms, zone, dayOf) {
  const text = toLocalInput(ms, zone);
  const time = text.slice(11);
  if (dayOf && text.slice(0, 10) !== dayOf) return `${text.slice(0, 10)} ${time}`;
  return time;
}

export function validZone(zone) {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** Reads `{result}` lines of an NDJSON response into `onResult` until it ends. */
export async function readNdjson(path, onResult, signal, onOpen) {
  const headers = { accept: 'application/x-ndjson' };
  if (token()) headers.authorization = `Bearer ${token()}`;
  const response = await fetch(path, { headers, signal });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new ApiError(response.status, body.message || response.statusText);
  }
  if (onOpen) onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += value;
    let newline;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (!line) continue;
      const message = JSON.parse(line);
      if (message.result) onResult(message.result);
      if (message.error) throw new ApiError(0, message.error.message);
    }
  }
}

/** Lists every item of a paged list call (`field` of each page), to a bound. */
export async function listAll(path, field, limit = 1000) {
  const items = [];
  let pageToken = '';
  do {
    const separator = path.includes('?') ? '&' : '?';
    const page = await api('GET', `${path}${separator}pageSize=100${pageToken ? `&pageToken=${enc(pageToken)}` : ''}`);
    items.push(...((page && page[field]) || []));
    pageToken = (page && page.nextPageToken) || '';
  } while (pageToken && items.length < limit);
  return items;
}

/** Seconds of a `google.protobuf.Duration` JSON string ("1800s"). */
export function durationSeconds(duration) {
  const seconds = parseFloat(String(duration || '0').replace(/s$/, ''));
  return Number.isFinite(seconds) ? seconds : 0;
}

export function formatDuration(duration) {
  const total = Math.round(durationSeconds(duration));
  const minutes = Math.floor(total / 60);
  const seconds = total % 60;
  return minutes ? `${minutes} min ${seconds} s` : `${seconds} s`;
}

/** A tiny shared store: sections announce changes to each other. */
export const bus = new EventTarget();
