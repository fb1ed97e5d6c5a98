// A channel's chat settings: read with GET, replaced whole with PUT (the
// service wants every field), its validation errors shown beside the form.

import { $, alertIn, api, bus, enc, reason } from './common.js';

const NUMBERS = [
  ['chat-slow', 'slowModeSeconds'],
  ['chat-hold', 'holdBelowTrustScore'],
  ['chat-shadow', 'shadowBelowTrustScore'],
  ['chat-rate', 'displayRatePerSecond'],
  ['chat-duplicate', 'duplicateWindowSeconds'],
  ['chat-per-minute', 'maxCommentsPerMinute'],
  ['chat-reports', 'reportThreshold'],
];

let channelId = '';

function channelName(id) {
  const select = $('channel');
  const option = [...select.options].find((candidate) => candidate.value === id);
  return option ? option.textContent : id;
}

function fill(settings) {
  $('chat-enabled').checked = Boolean(settings.commentsEnabled);
  $('chat-links').checked = Boolean(settings.linksAllowed);
  $('chat-terms').value = (settings.blockedTerms || []).join('\n');
  for (const [id, field] of NUMBERS) $(id).value = String(settings[field] ?? 0);
}

export async function loadChatSettings() {
  if (!channelId) return;
  const asked = channelId;
  $('chat-saved').textContent = '';
  try {
    const settings = await api('GET', `/v1/channels/${enc(asked)}/chatSettings`);
    if (asked !== channelId) return;
    fill(settings);
    $('chat-channel').textContent = channelName(asked);
    $('chat-form').dataset.channelId = asked;
    alertIn('chat-error', '');
  } catch (error) {
    alertIn('chat-error', reason(error));
  }
}

async function save(event) {
  event.preventDefault();
  alertIn('chat-error', '');
  $('chat-saved').textContent = '';
  const settings = {
    channelId,
    commentsEnabled: $('chat-enabled').checked,
    linksAllowed: $('chat-links').checked,
    blockedTerms: $('chat-terms').value.split('\n').map((term) => term.trim()).filter(Boolean),
  };
  for (const [id, field] of NUMBERS) {
    // Sent as typed, so the service's own range checks answer.
    const value = Number($(id).value);
    settings[field] = Number.isFinite(value) ? Math.trunc(value) : 0;
  }
  try {
    fill(await api('PUT', `/v1/channels/${enc(channelId)}/chatSettings`, settings));
    $('chat-saved').textContent = `Saved the chat settings of ${channelName(channelId)}.`;
  } catch (error) {
    alertIn('chat-error', reason(error));
  }
}

export function initChat() {
  $('chat-form').addEventListener('submit', save);
  $('chat-reload').addEventListener('click', loadChatSettings);
  bus.addEventListener('channel', (event) => {
    channelId = event.detail;
    $('chat-channel').textContent = channelName(channelId);
    delete $('chat-form').dataset.channelId;
    loadChatSettings();
  });
}
