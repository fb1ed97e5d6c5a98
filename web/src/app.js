// The viewer's TV: the guide (every channel with what is on now and next,
// and how many watch), the player (HLS with hls.js), the live comments
// (a list, and an overlay flying across the video), the post box with its
// verdict, and share links. Everything goes through the public API.

import Hls from 'hls.js';
import { Account, ApiError, call } from './api.js';
import { language, setLanguage, t } from './i18n.js';
import { LiveSocket } from './live.js';
import { Overlay } from './overlay.js';
import { Replay } from './replay.js';
import { dayOnAir, drawTimetable } from './timetable.js';

const GUIDE_REFRESH_MS = 10000;
const TIMETABLE_REFRESH_MS = 60000;
const MAX_LISTED_COMMENTS = 200;

const account = new Account();

// What this viewer chose not to see, kept on this device only.
const MUTE_KEY = 'onair.muted';
const muted = (() => {
  try {
    const saved = JSON.parse(localStorage.getItem(MUTE_KEY) || '{}');
    return { words: saved.words || [], users: saved.users || [] };
  } catch {
    return { words: [], users: [] };
  }
})();

function saveMuted() {
  localStorage.setItem(MUTE_KEY, JSON.stringify(muted));
  $('muted-count').textContent = String(muted.users.length);
}

function isMuted(comment) {
  if (muted.users.includes(comment.userId)) return true;
  const body = (comment.body || '').toLowerCase();
  return muted.words.some((word) => word && body.includes(word));
}
const $ = (id) => document.getElementById(id);

const state = {
  channels: [],
  nowNext: new Map(),
  counts: new Map(),
  channelId: null,
  live: null,
  replay: null,
  hls: null,
  retry: null,
};

const overlay = new Overlay($('overlay'));

function translate() {
  document.documentElement.lang = language();
  for (const node of document.querySelectorAll('[data-t]')) node.textContent = t(node.dataset.t);
  $('body').placeholder = t('commentPlaceholder');
  $('language').value = language();
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function countOf(value) {
  return Number(value || 0);
}

// The guide.

async function loadGuide() {
  try {
    const [channels, now, counts] = await Promise.all([
      call('GET', '/v1/channels?pageSize=1000'),
      call('GET', '/v1/now'),
      call('GET', '/v1/viewers:batchGet'),
    ]);
    state.channels = (channels && channels.channels) || [];
    state.nowNext = new Map(((now && now.nowNext) || []).map((entry) => [entry.channelId, entry]));
    state.counts = new Map(
      ((counts && counts.counts) || []).map((entry) => [entry.channelId, countOf(entry.count)]),
    );
    renderGuide();
    renderOnAir();
  } catch (error) {
    console.warn('the guide did not load', error);
  }
}

function programTitle(entry) {
  return entry && entry.program ? entry.program.title : '';
}

function renderGuide() {
  const list = $('channels');
  const focused = document.activeElement && document.activeElement.dataset.channelId;
  list.replaceChildren(
    ...state.channels.map((channel) => {
      const item = element('li');
      const button = element('button', 'channel');
      button.type = 'button';
      button.dataset.channelId = channel.id;
      button.setAttribute('aria-current', String(channel.id === state.channelId));
      const entry = state.nowNext.get(channel.id);
      const title = element('span', 'title', `${channel.number || ''} ${channel.name}`.trim());
      const now = element('span', 'line now', `${t('now')}: ${programTitle(entry && entry.now) || t('offAir')}`);
      const next = element('span', 'line next', `${t('next')}: ${programTitle(entry && entry.next) || '—'}`);
      const count = element('span', 'line viewers', t('viewers', state.counts.get(channel.id) || 0));
      button.append(title, now, next, count);
      button.addEventListener('click', () => tune(channel.id));
      button.addEventListener('keydown', (event) => zapByKey(event, channel.id));
      item.append(button);
      return item;
    }),
  );
  if (focused) {
    const again = list.querySelector(`[data-channel-id="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

function zapByKey(event, channelId) {
  const index = state.channels.findIndex((channel) => channel.id === channelId);
  let next = null;
  if (event.key === 'ArrowDown') next = state.channels[(index + 1) % state.channels.length];
  if (event.key === 'ArrowUp') next = state.channels[(index - 1 + state.channels.length) % state.channels.length];
  if (!next) return;
  event.preventDefault();
  tune(next.id);
  const button = $('channels').querySelector(`[data-channel-id="${CSS.escape(next.id)}"]`);
  if (button) button.focus();
}

function renderOnAir() {
  // A replay says so itself (see `replay`).
  if (state.replay) return;
  const entry = state.nowNext.get(state.channelId);
  $('now-title').textContent = state.channelId ? programTitle(entry && entry.now) || t('offAir') : '';
  $('count').textContent = state.channelId ? t('viewers', state.counts.get(state.channelId) || 0) : '';
}

// The player.

function tune(channelId) {
  if (channelId === state.channelId && !state.replay) return;
  stopReplay();
  state.channelId = channelId;
  history.replaceState(null, '', `?channel=${encodeURIComponent(channelId)}`);
  for (const button of document.querySelectorAll('.channel')) {
    button.setAttribute('aria-current', String(button.dataset.channelId === channelId));
  }
  $('share-links').hidden = true;
  $('poll').hidden = true;
  poll.current = null;
  poll.myOption = '';
  $('comments').replaceChildren();
  unlisted = [];
  overlay.clear();
  renderOnAir();
  play(`/hls/${encodeURIComponent(channelId)}/master.m3u8`);
  watchLive(channelId);
}

function say(message) {
  $('message').textContent = message;
}

function play(url, startSeconds = -1, onDetails = null) {
  clearTimeout(state.retry);
  const video = $('video');
  say('');
  if (!Hls.isSupported()) {
    video.src = url;
    video.play().catch(() => {});
    return;
  }
  if (state.hls) state.hls.destroy();
  const hls = new Hls({ lowLatencyMode: false, backBufferLength: 30, startPosition: startSeconds });
  state.hls = hls;
  hls.on(Hls.Events.MANIFEST_PARSED, () => {
    say('');
    renderLevels(hls);
    video.play().catch(() => {});
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, () => renderLevels(hls));
  if (onDetails) hls.on(Hls.Events.LEVEL_LOADED, (_event, data) => onDetails(data.details));
  hls.on(Hls.Events.ERROR, (_event, data) => {
    if (!data.fatal) return;
    console.warn('the player stopped', data.type, data.details, data.response && data.response.code);
    const missing = data.response && data.response.code === 404;
    say(missing ? t('offAirMessage') : t('networkMessage'));
    hls.destroy();
    if (state.hls === hls) state.hls = null;
    state.retry = setTimeout(() => play(url, startSeconds, onDetails), missing ? 5000 : 2000);
  });
  hls.loadSource(url);
  hls.attachMedia(video);
}

function renderLevels(hls) {
  const select = $('quality');
  const options = [element('option', '', t('auto'))];
  options[0].value = '-1';
  hls.levels.forEach((level, index) => {
    const option = element('option', '', level.height ? `${level.height}p` : `${Math.round(level.bitrate / 1000)} kbit/s`);
    option.value = String(index);
    options.push(option);
  });
  select.replaceChildren(...options);
  select.value = String(hls.autoLevelEnabled ? -1 : hls.currentLevel);
  const playing = hls.levels[hls.currentLevel];
  select.title = playing && playing.height ? `${playing.height}p` : '';
}

// Replay and the timetable.

function stopReplay() {
  if (state.replay) state.replay.close();
  state.replay = null;
}

/** Plays aired slot `slotId` of `channelId` from `vposMs`, with its comments. */
function replay(slotId, channelId, title, vposMs = 0, slotStartMs = null) {
  stopReplay();
  if (state.live) state.live.close();
  state.live = null;
  state.channelId = channelId;
  for (const button of document.querySelectorAll('.channel')) {
    button.setAttribute('aria-current', String(button.dataset.channelId === channelId));
  }
  history.replaceState(null, '', `?channel=${encodeURIComponent(channelId)}&slot=${encodeURIComponent(slotId)}&vposMs=${vposMs}`);
  $('comments').replaceChildren();
  unlisted = [];
  overlay.clear();
  $('now-title').textContent = `${t('replaying')}: ${title}`;
  $('count').textContent = '';
  const session = new Replay(slotId, $('video'), addComment);
  state.replay = session;
  let placed = false;
  play(`/vod/${encodeURIComponent(slotId)}/master.m3u8`, vposMs / 1000, (details) => {
    const first = details.fragments && details.fragments[0];
    if (slotStartMs === null || !first || !first.programDateTime) return;
    session.offsetMs = Math.max(0, first.programDateTime - slotStartMs);
    // The moment asked for, on the video's own timeline.
    if (!placed && session.offsetMs > 0) $('video').currentTime = Math.max(0, (vposMs - session.offsetMs) / 1000);
    placed = true;
  });
}

async function loadTimetable() {
  try {
    const timetable = await dayOnAir();
    drawTimetable($('timetable'), timetable, Date.now(), choose);
  } catch (error) {
    console.warn('the timetable did not load', error);
  }
}

function choose(entry, channel, when) {
  const program = entry.program || {};
  const slot = entry.slot;
  const details = $('details');
  const heading = element('h3', '', program.title || '');
  const from = new Date(Date.parse(slot.startTime)).toLocaleString();
  const to = new Date(Date.parse(slot.endTime)).toLocaleTimeString();
  const parts = [heading, element('p', '', `${channel.name} · ${from}–${to}`)];
  if (program.description) parts.push(element('p', '', program.description));
  const action = element('button');
  action.type = 'button';
  if (when === 'aired') {
    action.textContent = t('replay');
    action.addEventListener('click', () => replay(slot.id, channel.id, program.title || '', 0, Date.parse(slot.startTime)));
    parts.push(action);
  } else if (when === 'on-air') {
    action.textContent = t('watchLive');
    action.addEventListener('click', () => tune(channel.id));
    parts.push(action);
  } else {
    parts.push(element('p', 'mode', t('comingUp')));
  }
  details.replaceChildren(...parts);
}

// Polls.

const poll = { current: null, myOption: '' };

function showPoll(data) {
  if (!data || !data.id) return;
  if (poll.current && poll.current.id !== data.id) poll.myOption = '';
  poll.current = data;
  if (data.votedOptionId) poll.myOption = data.votedOptionId;
  const box = $('poll');
  box.hidden = false;
  $('poll-question').textContent = data.question;
  const total = Math.max(1, ...(data.options || []).map((option) => countOf(option.votes)));
  const open = data.state === 'POLL_STATE_OPEN';
  $('poll-options').replaceChildren(
    ...(data.options || []).map((option) => {
      const item = element('li', 'poll-option');
      item.dataset.optionId = option.id;
      item.setAttribute('aria-current', String(option.id === poll.myOption));
      const button = element('button', '', option.text);
      button.type = 'button';
      button.disabled = !open || (Boolean(poll.myOption) && !data.allowChange);
      button.addEventListener('click', () => vote(data.id, option.id));
      const bar = element('div', 'poll-bar');
      bar.style.width = `${(countOf(option.votes) / total) * 100}%`;
      const votes = element('span', 'poll-votes', t('votes', countOf(option.votes)));
      item.append(button, bar, votes);
      return item;
    }),
  );
  $('poll-status').textContent =
    data.state === 'POLL_STATE_CLOSED'
      ? t('pollClosed')
      : data.state === 'POLL_STATE_SCHEDULED'
        ? t('pollScheduled')
        : poll.myOption
          ? t('voted')
          : '';
}

async function vote(pollId, optionId) {
  try {
    const answered = await account.call('POST', `/v1/polls/${encodeURIComponent(pollId)}/votes`, { optionId });
    poll.myOption = optionId;
    showPoll(answered);
  } catch (error) {
    $('poll-status').textContent = error.message;
  }
}

// Live comments and counts.

function watchLive(channelId) {
  if (state.live) state.live.close();
  state.live = new LiveSocket(channelId, account.token, (event) => {
    if (state.channelId !== channelId) return;
    const data = event.data || {};
    if (event.type === 'comment' && data.comment) addComment(data.comment);
    if (event.type === 'moderation' && data.removedCommentId) removeComment(data.removedCommentId);
    if (event.type === 'viewers') {
      state.counts.set(channelId, countOf(data.count));
      renderOnAir();
    }
    if (event.type === 'poll') showPoll(data);
    if (event.type === 'program') {
      state.nowNext.set(channelId, data);
      renderGuide();
      renderOnAir();
    }
    if (event.type === 'schedule') loadGuide();
  });
}

/** Comments waiting for the next frame, listed together. */
let unlisted = [];

function addComment(comment) {
  if (isMuted(comment)) return;
  if (unlisted.some((waiting) => waiting.id === comment.id)) return;
  if ($('comments').querySelector(`[data-comment-id="${CSS.escape(comment.id)}"]`)) return;
  unlisted.push(comment);
  if (unlisted.length === 1) requestAnimationFrame(listComments);
  overlay.show(comment);
}

function listComments() {
  const list = $('comments');
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  const items = document.createDocumentFragment();
  for (const comment of unlisted) items.append(commentItem(comment));
  unlisted = [];
  list.append(items);
  while (list.children.length > MAX_LISTED_COMMENTS) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function commentItem(comment) {
  const item = element('li');
  item.dataset.commentId = comment.id;
  item.dataset.userId = comment.userId || '';
  item.append(element('span', 'author', comment.displayName || ''), element('span', 'text', comment.body));
  if (account.user && comment.userId !== account.user.id) {
    const report = element('button', '', t('report'));
    report.type = 'button';
    report.addEventListener('click', async () => {
      try {
        await account.call('POST', `/v1/comments/${encodeURIComponent(comment.id)}:report`, { reason: 'reported by a viewer' });
        report.textContent = t('reported');
        report.disabled = true;
      } catch (error) {
        report.title = error.message;
      }
    });
    const mute = element('button', '', t('mute'));
    mute.type = 'button';
    mute.addEventListener('click', () => {
      if (!muted.users.includes(comment.userId)) muted.users.push(comment.userId);
      saveMuted();
      for (const node of [...$('comments').children]) {
        if (node.dataset.userId === comment.userId) node.remove();
      }
    });
    item.append(report, mute);
  }
  return item;
}

function removeComment(commentId) {
  const item = $('comments').querySelector(`[data-comment-id="${CSS.escape(commentId)}"]`);
  if (item) item.remove();
  overlay.remove(commentId);
}

// Posting.

let countdown = null;

async function post(event) {
  event.preventDefault();
  if (!state.channelId) {
    $('verdict').textContent = t('chooseChannel');
    return;
  }
  const input = $('body');
  const body = input.value.trim();
  if (!body) return;
  clearInterval(countdown);
  try {
    const commands = ['position', 'size', 'colour'].map((id) => $(id).value);
    const comment = await account.call('POST', `/v1/channels/${encodeURIComponent(state.channelId)}/comments`, {
      body,
      commands,
    });
    input.value = '';
    if (comment.status === 'COMMENT_STATUS_PUBLISHED') {
      $('verdict').textContent = t('published');
      addComment(comment);
    } else {
      $('verdict').textContent = t('held', comment.reason || '');
    }
  } catch (error) {
    const reason = error instanceof ApiError ? error.message : String(error);
    if (error.retryAfterSeconds) {
      let left = Math.ceil(error.retryAfterSeconds);
      const show = () => {
        $('verdict').textContent = `${t('refused', reason)} — ${t('retryIn', left)}`;
      };
      show();
      countdown = setInterval(() => {
        left -= 1;
        if (left <= 0) {
          clearInterval(countdown);
          $('verdict').textContent = '';
        } else {
          show();
        }
      }, 1000);
    } else {
      $('verdict').textContent = t('refused', reason);
    }
  }
}

// Sharing.

async function share() {
  if (!state.channelId) return;
  const box = $('share-links');
  try {
    const link = await account.call('POST', '/v1/shares', { channelId: state.channelId });
    const links = [
      ['X', link.intents.x],
      ['LINE', link.intents.line],
      ['Facebook', link.intents.facebook],
    ].map(([name, href]) => {
      const anchor = element('a', 'intent', name);
      anchor.href = href;
      anchor.target = '_blank';
      anchor.rel = 'noopener noreferrer';
      return anchor;
    });
    const copy = element('button', '', t('copyLink'));
    copy.type = 'button';
    copy.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(link.url);
        copy.textContent = t('copied');
      } catch {
        copy.title = link.url;
      }
    });
    const url = element('code', 'share-url', link.url);
    box.replaceChildren(...links, copy, url);
    box.hidden = false;
  } catch (error) {
    box.replaceChildren(element('span', '', error.message));
    box.hidden = false;
  }
}

// Start.

async function start() {
  translate();
  $('language').addEventListener('change', (event) => {
    setLanguage(event.target.value);
    translate();
    renderGuide();
    renderOnAir();
  });
  $('post').addEventListener('submit', post);
  $('muted-words').value = muted.words.join(', ');
  $('muted-count').textContent = String(muted.users.length);
  $('mute-form').addEventListener('submit', (event) => {
    event.preventDefault();
    muted.words = $('muted-words').value.split(',').map((word) => word.trim().toLowerCase()).filter(Boolean);
    saveMuted();
  });
  $('unmute').addEventListener('click', () => {
    muted.users = [];
    saveMuted();
  });
  $('share').addEventListener('click', share);
  $('show-overlay').addEventListener('change', (event) => overlay.setVisible(event.target.checked));
  $('fullscreen').addEventListener('click', () => $('screen').requestFullscreen && $('screen').requestFullscreen());
  if (!document.pictureInPictureEnabled) $('pip').hidden = true;
  $('pip').addEventListener('click', () => $('video').requestPictureInPicture().catch(() => {}));
  $('quality').addEventListener('change', (event) => {
    if (state.hls) state.hls.currentLevel = Number(event.target.value);
  });
  $('name-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      await account.rename($('name').value.trim());
    } catch (error) {
      $('name').title = error.message;
    }
  });
  try {
    await account.ensure();
    $('name').value = (account.user && account.user.displayName) || '';
  } catch (error) {
    say(error.message);
  }
  await loadGuide();
  setInterval(loadGuide, GUIDE_REFRESH_MS);
  loadTimetable();
  setInterval(loadTimetable, TIMETABLE_REFRESH_MS);
  const query = new URLSearchParams(location.search);
  const asked = query.get('channel');
  const first = state.channels.find((channel) => channel.id === asked) || state.channels[0];
  const slotId = query.get('slot');
  if (slotId) {
    // A share link of a slot: its replay once it has aired, else its channel.
    try {
      const slot = await call('GET', `/v1/slots/${encodeURIComponent(slotId)}`);
      if (Date.parse(slot.endTime) <= Date.now()) {
        const program = await call('GET', `/v1/programs/${encodeURIComponent(slot.programId)}`).catch(() => ({}));
        replay(slot.id, slot.channelId, program.title || '', Number(query.get('vposMs') || 0), Date.parse(slot.startTime));
        return;
      }
      tune(slot.channelId);
      return;
    } catch (error) {
      console.warn('the shared slot did not load', error);
    }
  }
  if (first) tune(first.id);
}

start();
