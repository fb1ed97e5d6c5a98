// The playout's assets with their state, and the transcode progress of
// those still queued or transcoding (followed with the job's watch stream;
// the list is read again when a job ends, and every few seconds meanwhile).

import { $, alertIn, element, enc, formatDuration, listAll, reason, readNdjson } from './common.js';

const REFRESH_MS = 5000;
/**
 * At most this many job streams at once: the browser keeps few connections
 * to one station, and the queue and the schedule hold two already. The
 * other pending assets show their state from the list's refreshes.
 */
const MAX_WATCHES = 2;
const watching = new Map();
/** The last percent each job said, kept across redraws of the list. */
const percents = new Map();
let timer = null;

function state(asset) {
  return String(asset.state || 'STATE_UNSPECIFIED').replace('STATE_', '').toLowerCase();
}

function pending(asset) {
  return asset.state === 'QUEUED' || asset.state === 'TRANSCODING';
}

function progressCell(asset) {
  const cell = element('td');
  cell.className = 'progress-cell';
  if (state(asset) === 'ready') {
    cell.textContent = '100%';
  } else if (asset.state === 'FAILED') {
    cell.textContent = asset.error || 'failed';
  } else {
    const bar = element('progress');
    bar.max = 100;
    const known = percents.get(asset.id);
    bar.value = known || 0;
    bar.setAttribute('aria-label', `Transcode of ${asset.id}`);
    cell.append(bar, ' ', element('span', known === undefined ? 'waiting' : `${known}%`, 'percent'));
  }
  return cell;
}

function watch(asset) {
  if (watching.has(asset.id) || watching.size >= MAX_WATCHES) return;
  const controller = new AbortController();
  watching.set(asset.id, controller);
  readNdjson(
    `/v1/assets/${enc(asset.id)}/job:watch`,
    (job) => {
      const row = $('assets').querySelector(`[data-asset-id="${CSS.escape(asset.id)}"]`);
      if (!row) return;
      const percent = Math.round(Number(job.percent || 0));
      percents.set(asset.id, percent);
      const bar = row.querySelector('progress');
      if (bar) bar.value = percent;
      const text = row.querySelector('.percent');
      if (text) text.textContent = `${percent}%${job.attempt > 1 ? ` (attempt ${job.attempt})` : ''}`;
      const stateCell = row.querySelector('.state');
      if (stateCell && job.state) stateCell.textContent = String(job.state).replace('STATE_', '').toLowerCase();
    },
    controller.signal,
  )
    .catch(() => {})
    .finally(() => {
      watching.delete(asset.id);
      if (!controller.signal.aborted) loadAssets();
    });
}

export async function loadAssets() {
  try {
    const assets = await listAll('/v1/assets', 'assets');
    alertIn('assets-error', '');
    const rows = assets.map((asset) => {
      const tr = element('tr');
      tr.dataset.assetId = asset.id;
      const renditions = (asset.renditions || []).map((rendition) => rendition.name).join(', ');
      tr.append(
        element('td', asset.id),
        element('td', state(asset), 'state'),
        progressCell(asset),
        element('td', asset.duration ? formatDuration(asset.duration) : ''),
        element('td', renditions),
        element('td', asset.sourcePath || '', 'source'),
      );
      return tr;
    });
    $('assets').replaceChildren(...rows);
    for (const [id, controller] of watching) {
      if (!assets.some((asset) => asset.id === id && pending(asset))) controller.abort();
    }
    for (const asset of assets.filter(pending)) watch(asset);
    clearTimeout(timer);
    if (assets.some(pending)) timer = setTimeout(loadAssets, REFRESH_MS);
  } catch (error) {
    alertIn('assets-error', reason(error));
  }
}

export function initAssets() {
  $('assets-reload').addEventListener('click', loadAssets);
}
