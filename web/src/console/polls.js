// Polls on a slot: made here with 2 to 8 options, open and close times and
// whether a vote may change; then closed early and their tallies read. The
// polls made in this tab are remembered for it.

import { $, alertIn, api, bus, button, element, enc, fromLocalInput, reason, toLocalInput } from './common.js';
import { fillSlotChoice, zone } from './schedule.js';

const MIN_OPTIONS = 2;
const MAX_OPTIONS = 8;
const REMEMBERED = 'onair.console.polls';
const polls = new Map();

function optionInputs() {
  return [...$('poll-options').querySelectorAll('input')];
}

function renumber() {
  const items = [...$('poll-options').children];
  items.forEach((item, index) => {
    const input = item.querySelector('input');
    const label = item.querySelector('label');
    input.id = `poll-option-${index + 1}`;
    label.htmlFor = input.id;
    label.textContent = `Option ${index + 1}`;
    const remove = item.querySelector('button');
    remove.hidden = items.length <= MIN_OPTIONS;
    remove.setAttribute('aria-label', `Remove option ${index + 1}`);
  });
  $('poll-add-option').disabled = items.length >= MAX_OPTIONS;
}

function addOption(text = '') {
  if (optionInputs().length >= MAX_OPTIONS) return;
  const item = element('li');
  const label = element('label');
  const input = element('input');
  input.maxLength = 80;
  input.autocomplete = 'off';
  input.value = text;
  const remove = button('Remove', () => {
    item.remove();
    renumber();
  });
  item.append(label, ' ', input, ' ', remove);
  $('poll-options').append(item);
  renumber();
}


function state(poll) {
  return String(poll.state || '').replace('POLL_STATE_', '').toLowerCase() || 'unknown';
}

function draw() {
  const items = [...polls.values()].map((poll) => {
    const item = element('li', undefined, 'poll');
    item.dataset.pollId = poll.id;
    item.append(element('h4', poll.question));
    const closes = poll.closeTime ? `, closes ${toLocalInput(Date.parse(poll.closeTime), zone()).replace('T', ' ')}` : '';
    item.append(element('p', `${state(poll)} · slot ${poll.slotId} · ${poll.totalVotes || 0} votes${closes}${poll.allowChange ? ' · votes may change' : ''}`, 'muted poll-state'));
    const options = element('ul', undefined, 'poll-results');
    for (const option of poll.options || []) {
      const votes = Number(option.votes || 0);
      options.append(element('li', `${option.text}: ${votes} ${votes === 1 ? 'vote' : 'votes'}`));
    }
    item.append(options);
    item.append(
      button('Show the results', () => refresh(poll.id), `Show the results of “${poll.question}”`),
      ' ',
      button('Close the poll', () => close(poll.id), `Close “${poll.question}”`),
    );
    return item;
  });
  $('polls').replaceChildren(...items);
}

function remember() {
  sessionStorage.setItem(REMEMBERED, JSON.stringify([...polls.keys()]));
}

async function refresh(pollId) {
  try {
    polls.set(pollId, await api('GET', `/v1/polls/${enc(pollId)}`));
    alertIn('poll-error', '');
    draw();
  } catch (error) {
    alertIn('poll-error', reason(error));
  }
}

async function close(pollId) {
  try {
    polls.set(pollId, await api('POST', `/v1/polls/${enc(pollId)}:close`, {}));
    alertIn('poll-error', '');
    draw();
  } catch (error) {
    alertIn('poll-error', reason(error));
  }
}

async function create(event) {
  event.preventDefault();
  alertIn('poll-error', '');
  const slotId = $('poll-slot').value;
  if (!slotId) {
    alertIn('poll-error', 'choose a slot first (show a day under Schedule)');
    return;
  }
  const body = {
    question: $('poll-question').value,
    options: optionInputs().map((input) => ({ text: input.value })),
    allowChange: $('poll-change').checked,
  };
  const open = fromLocalInput($('poll-open').value, zone());
  const closeAt = fromLocalInput($('poll-close').value, zone());
  if (!Number.isNaN(open)) body.openTime = new Date(open).toISOString();
  if (!Number.isNaN(closeAt)) body.closeTime = new Date(closeAt).toISOString();
  try {
    const poll = await api('POST', `/v1/slots/${enc(slotId)}/polls`, body);
    polls.set(poll.id, poll);
    remember();
    draw();
    $('status').textContent = `Created the poll ${poll.id}.`;
  } catch (error) {
    alertIn('poll-error', reason(error));
  }
}

export function initPolls() {
  addOption();
  addOption();
  $('poll-add-option').addEventListener('click', () => {
    addOption();
    const inputs = optionInputs();
    inputs[inputs.length - 1].focus();
  });
  $('poll-close').value = toLocalInput(Date.now() + 15 * 60000, zone());
  $('poll-form').addEventListener('submit', create);
  bus.addEventListener('slots', (event) => fillSlotChoice($('poll-slot'), event.detail));
}

/** The polls this tab made before a reload, read afresh once signed in. */
export async function loadRememberedPolls() {
  let ids = [];
  try {
    ids = JSON.parse(sessionStorage.getItem(REMEMBERED) || '[]');
  } catch {
    ids = [];
  }
  for (const id of ids) if (typeof id === 'string') await refresh(id);
}
