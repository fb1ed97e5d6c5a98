// The station console: signed in with the operator key or a moderator's
// token (kept for this browser tab only), it offers the live review queue
// with moderation of comments and their authors, the schedule of a channel's
// broadcast day (slots made, moved, deleted and imported; programs made),
// the channel's chat settings, polls, stream keys for live slots and the
// playout's assets. Every action is a call to the public REST API with the
// signed-in token; the service's refusals are shown where they happened.

import { $, KEY } from './console/common.js';
import { initAssets, loadAssets } from './console/assets.js';
import { initChat, loadChatSettings } from './console/chat.js';
import { initLive } from './console/live.js';
import { initPolls, loadRememberedPolls } from './console/polls.js';
import { watchQueue } from './console/queue.js';
import { initSchedule, loadPrograms } from './console/schedule.js';

function status(text) {
  $('status').textContent = text;
}

let retry = null;

async function followQueue(token) {
  clearTimeout(retry);
  try {
    await watchQueue(() => status('Signed in. The queue updates as comments arrive.'), status);
  } catch (error) {
    if (error.name === 'AbortError') return;
    status(error.message);
    if (error.status === 401 || error.status === 403) {
      sessionStorage.removeItem(KEY);
      return;
    }
  }
  // The stream ended or broke: follow it again while this token is the one.
  if (sessionStorage.getItem(KEY) === token) retry = setTimeout(() => followQueue(token), 2000);
}

function signIn(token) {
  followQueue(token);
  loadPrograms();
  loadChatSettings();
  loadAssets();
  loadRememberedPolls();
}

$('sign-in').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('key').value.trim();
  sessionStorage.setItem(KEY, token);
  $('key').value = '';
  signIn(token);
});

initChat();
initPolls();
initLive();
initAssets();
const ready = initSchedule();
const saved = sessionStorage.getItem(KEY);
if (saved) ready.then(() => signIn(saved));
