// The live review queue (held, shadowed and reported comments as they
// arrive) with approve, reject and hide for the comment, and ban, timeout,
// unban and a look at the author (role, trust score, ban) for its author.

import { $, alertIn, api, button, element, enc, reason, readNdjson } from './common.js';

let stream = null;

function row(item, onStatus) {
  const comment = item.comment;
  const tr = element('tr');
  tr.dataset.commentId = comment.id;
  tr.dataset.userId = comment.userId || '';
  const why = [String(comment.status || '').replace('COMMENT_STATUS_', '').toLowerCase(), comment.reason]
    .filter(Boolean)
    .join(': ');
  const reports = item.reportCount ? ` · ${item.reportCount} reports: ${(item.reportReasons || []).join('; ')}` : '';
  const author = comment.displayName || comment.userId;
  tr.append(element('td', comment.channelId), element('td', author), element('td', comment.body), element('td', why + reports));
  const actions = element('td');
  for (const [label, verb] of [['Approve', 'approve'], ['Reject', 'reject'], ['Hide', 'hide']]) {
    actions.append(button(label, () => moderate(comment.id, verb, onStatus), `${label} the comment “${comment.body}”`), ' ');
  }
  tr.append(actions);
  const people = element('td');
  if (comment.userId) {
    const who = `${author}`;
    people.append(
      button('Ban', () => ban(comment.userId, who, 0), `Ban ${who} for good`),
      ' ',
      button('Timeout', () => ban(comment.userId, who, Number($('timeout-seconds').value)), `Time ${who} out`),
      ' ',
      button('Unban', () => unban(comment.userId, who), `Unban ${who}`),
      ' ',
      button('Author', () => showAuthor(comment.userId), `About ${who}`),
    );
  }
  tr.append(people);
  return tr;
}

async function moderate(commentId, verb, onStatus) {
  try {
    await api('POST', `/v1/comments/${enc(commentId)}:${verb}`, { reason: `${verb} in the console` });
    alertIn('queue-result', '');
    onStatus(`Comment ${verb === 'hide' ? 'hidden' : `${verb}d`}.`);
  } catch (error) {
    alertIn('queue-result', reason(error));
  }
}

function describeBan(user) {
  if (!user.ban) return 'not banned';
  if (!user.ban.expireTime) return 'banned for good';
  return `banned until ${new Date(Date.parse(user.ban.expireTime)).toLocaleString()}`;
}

async function ban(userId, who, durationSeconds) {
  try {
    const user = await api('POST', `/v1/users/${enc(userId)}:ban`, {
      durationSeconds: String(durationSeconds),
      reason: durationSeconds ? 'timed out in the console' : 'banned in the console',
    });
    $('queue-result').textContent = `${user.displayName || who}: ${describeBan(user)}.`;
  } catch (error) {
    alertIn('queue-result', reason(error));
  }
}

async function unban(userId, who) {
  try {
    const user = await api('POST', `/v1/users/${enc(userId)}:unban`, {});
    $('queue-result').textContent = `${user.displayName || who}: ${describeBan(user)}.`;
  } catch (error) {
    alertIn('queue-result', reason(error));
  }
}

async function showAuthor(userId) {
  const card = $('author');
  try {
    const user = await api('GET', `/v1/users/${enc(userId)}`);
    const list = element('dl', undefined, 'facts');
    const facts = [
      ['Name', user.displayName],
      ['Id', user.id],
      ['Role', String(user.role || '').toLowerCase()],
      ['Trust score', String(user.trustScore ?? '')],
      ['Since', user.createTime ? new Date(Date.parse(user.createTime)).toLocaleString() : ''],
      ['Ban', describeBan(user)],
    ];
    for (const [term, value] of facts) list.append(element('dt', term), element('dd', value));
    card.replaceChildren(element('h3', `Author: ${user.displayName || user.id}`), list);
  } catch (error) {
    card.replaceChildren(element('p', reason(error)));
  }
}

function show(item, onStatus) {
  const queue = $('queue');
  const old = queue.querySelector(`[data-comment-id="${CSS.escape(item.comment.id)}"]`);
  if (item.removed) {
    if (old) old.remove();
    return;
  }
  if (old) old.replaceWith(row(item, onStatus));
  else queue.append(row(item, onStatus));
}

/** Follows the queue until it fails (the caller decides whether to retry). */
export async function watchQueue(onOpen, onStatus) {
  if (stream) stream.abort();
  stream = new AbortController();
  $('queue').replaceChildren();
  await readNdjson('/v1/moderation/queue', (item) => show(item, onStatus), stream.signal, onOpen);
}
