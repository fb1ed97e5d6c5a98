// The station console: signed in with the operator key or a moderator's
// token (kept for this browser tab only), it shows the live review queue
// (held, shadowed and reported comments as they arrive) with one-click
// approve, reject and hide. Every action is a call to the public REST API
// with the signed-in token.

import { ApiError, call } from './api.js';

const KEY = 'onair.console.key';
const $ = (id) => document.getElementById(id);
let stream = null;

function element(tag, text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  return node;
}

function status(text) {
  $('status').textContent = text;
}

function row(item) {
  const comment = item.comment;
  const tr = element('tr');
  tr.dataset.commentId = comment.id;
  const why = [comment.status.replace('COMMENT_STATUS_', '').toLowerCase(), comment.reason]
    .filter(Boolean)
    .join(': ');
  const reports = item.reportCount ? ` · ${item.reportCount} reports: ${(item.reportReasons || []).join('; ')}` : '';
  tr.append(
    element('td', comment.channelId),
    element('td', comment.displayName || comment.userId),
    element('td', comment.body),
    element('td', why + reports),
  );
  const actions = element('td');
  for (const [label, verb] of [['Approve', 'approve'], ['Reject', 'reject'], ['Hide', 'hide']]) {
    const button = element('button', label);
    button.type = 'button';
    button.setAttribute('aria-label', `${label} the comment “${comment.body}”`);
    button.addEventListener('click', () => moderate(comment.id, verb));
    actions.append(button, ' ');
  }
  tr.append(actions);
  return tr;
}

async function moderate(commentId, verb) {
  try {
    await call('POST', `/v1/comments/${encodeURIComponent(commentId)}:${verb}`, {
      body: { reason: `${verb} in the console` },
      token: sessionStorage.getItem(KEY),
    });
    status(`Comment ${verb === 'hide' ? 'hidden' : `${verb}d`}.`);
  } catch (error) {
    status(error instanceof ApiError ? error.message : String(error));
  }
}

function show(item) {
  const queue = $('queue');
  const old = queue.querySelector(`[data-comment-id="${CSS.escape(item.comment.id)}"]`);
  if (item.removed) {
    if (old) old.remove();
    return;
  }
  if (old) old.replaceWith(row(item));
  else queue.append(row(item));
}

async function watchQueue(token) {
  if (stream) stream.abort();
  stream = new AbortController();
  $('queue').replaceChildren();
  const response = await fetch('/v1/moderation/queue', {
    headers: { authorization: `Bearer ${token}`, accept: 'application/x-ndjson' },
    signal: stream.signal,
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new ApiError(response.status, body.message || response.statusText);
  }
  status('Signed in. The queue updates as comments arrive.');
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
      if (message.result) show(message.result);
      if (message.error) throw new ApiError(0, message.error.message);
    }
  }
}

async function signIn(token) {
  try {
    await watchQueue(token);
  } catch (error) {
    if (error.name === 'AbortError') return;
    status(error.message);
    if (error.status === 401 || error.status === 403) sessionStorage.removeItem(KEY);
    else setTimeout(() => signIn(token), 2000);
  }
}

$('sign-in').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('key').value.trim();
  sessionStorage.setItem(KEY, token);
  $('key').value = '';
  signIn(token);
});
const saved = sessionStorage.getItem(KEY);
if (saved) signIn(saved);
