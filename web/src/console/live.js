// Live slots: a stream key for a slot, its ingest URL and an ffmpeg command
// line that pushes HLS there.

import { $, alertIn, api, bus, enc, reason } from './common.js';
import { fillSlotChoice } from './schedule.js';


/** The command an operator pastes into a shell: quoted for POSIX shells. */
export function ffmpegCommand(url) {
  return [
    'ffmpeg -re -i input.mp4',
    '-c:v libx264 -preset veryfast -tune zerolatency -g 60 -keyint_min 60 -sc_threshold 0',
    '-c:a aac -b:a 128k -ar 48000',
    `-f hls -hls_time 2 -hls_list_size 6 -method PUT '${url.replace(/'/g, "'\\''")}'`,
  ].join(' ');
}

async function issue(event) {
  event.preventDefault();
  alertIn('live-error', '');
  const slotId = $('live-slot').value;
  if (!slotId) {
    alertIn('live-error', 'choose a slot first (show a day under Schedule)');
    return;
  }
  try {
    const key = await api('POST', `/v1/slots/${enc(slotId)}:issueStreamKey`, {});
    const url = `${location.origin}/ingest/${encodeURIComponent(key.streamKey)}/index.m3u8`;
    $('live-url').value = url;
    $('live-command').value = ffmpegCommand(url);
    $('live-key').hidden = false;
    $('status').textContent = `Issued a stream key for the slot ${slotId}.`;
  } catch (error) {
    alertIn('live-error', reason(error));
  }
}

export function initLive() {
  $('live-form').addEventListener('submit', issue);
  $('live-copy').addEventListener('click', async () => {
    const command = $('live-command');
    try {
      await navigator.clipboard.writeText(command.value);
      $('live-copy').textContent = 'Copied';
    } catch {
      command.focus();
      command.select();
      $('live-copy').textContent = 'Selected: copy with Ctrl+C';
    }
  });
  bus.addEventListener('slots', (event) => fillSlotChoice($('live-slot'), event.detail));
}

