// The schedule of one channel for one broadcast day, in a chosen time zone:
// its slots with move and delete, a new slot from a program (or a new
// program first), and slots imported from a JSON file row by row. The
// service's refusals (an overlap, a slot on air) are shown beside the form.

import {
  $,
  alertIn,
  api,
  bus,
  button,
  clock,
  durationSeconds,
  element,
  enc,
  fromLocalInput,
  listAll,
  readNdjson,
  reason,
  toLocalInput,
  validZone,
} from './common.js';

export const schedule = {
  channels: [],
  programs: [],
  /** The day's timetable entries ({slot, program}) of the chosen channel. */
  entries: [],
  channelId: '',
  day: '',
};

export function zone() {
  const typed = $('zone').value.trim();
  return typed && validZone(typed) ? typed : Intl.DateTimeFormat().resolvedOptions().timeZone;
}

function programTitle(programId) {
  const program = schedule.programs.find((candidate) => candidate.id === programId);
  return program ? program.title : programId;
}

function fillPrograms(selectId) {
  const select = $('slot-program');
  const chosen = selectId || select.value;
  select.replaceChildren(
    ...schedule.programs.map((program) => {
      const option = element('option', `${program.title} (${program.id})`);
      option.value = program.id;
      return option;
    }),
  );
  if (chosen) select.value = chosen;
}

/**
 * Lists the slots of the day shown that have not ended in `select` (for
 * polls and stream keys), keeping the one chosen if it is still there.
 */
export function fillSlotChoice(select, entries) {
  const chosen = select.value;
  const now = Date.now();
  select.replaceChildren(
    ...entries
      .filter((entry) => Date.parse(entry.slot.endTime) > now)
      .map((entry) => {
        const from = toLocalInput(Date.parse(entry.slot.startTime), zone()).slice(11);
        const title = (entry.program && entry.program.title) || entry.slot.programId;
        const option = element('option', `${from} ${title}${entry.slot.live ? ' (live)' : ''} (${entry.slot.id})`);
        option.value = entry.slot.id;
        return option;
      }),
  );
  if (chosen && [...select.options].some((option) => option.value === chosen)) select.value = chosen;
}

export async function loadPrograms(selectId) {
  try {
    schedule.programs = await listAll('/v1/programs', 'programs');
    fillPrograms(selectId);
    alertIn('program-error', '');
  } catch (error) {
    alertIn('program-error', `the programs did not load: ${reason(error)}`);
  }
}

async function loadChannels() {
  const list = await listAll('/v1/channels', 'channels');
  schedule.channels = list;
  const select = $('channel');
  select.replaceChildren(
    ...list.map((channel) => {
      const option = element('option', `${channel.number} ${channel.name}`);
      option.value = channel.id;
      return option;
    }),
  );
  if (list.length) select.value = list[0].id;
}

/** The broadcast day (in the zone) holding now: today's date there or a neighbour. */
async function dayOnAir(channelId) {
  const now = Date.now();
  const today = toLocalInput(now, zone()).slice(0, 10);
  const shifted = (days) => {
    const [y, m, d] = today.split('-').map(Number);
    return new Date(Date.UTC(y, m - 1, d + days)).toISOString().slice(0, 10);
  };
  for (const day of [today, shifted(-1), shifted(1)]) {
    const timetable = await timetableOf(channelId, day);
    if (Date.parse(timetable.startTime) <= now && now < Date.parse(timetable.endTime)) return day;
  }
  return today;
}

function timetableOf(channelId, day) {
  return api('GET', `/v1/channels/${enc(channelId)}/timetable?broadcastDay=${enc(day)}&timeZone=${enc(zone())}`);
}

function slotLabel(entry) {
  const slot = entry.slot;
  const title = (entry.program && entry.program.title) || programTitle(slot.programId);
  return `${clock(Date.parse(slot.startTime), zone(), schedule.day)}–${clock(Date.parse(slot.endTime), zone(), schedule.day)} ${title}`;
}

function fillSlotSelect(select) {
  const chosen = select.value;
  select.replaceChildren(
    ...schedule.entries.map((entry) => {
      const option = element('option', slotLabel(entry));
      option.value = entry.slot.id;
      return option;
    }),
  );
  if (chosen && schedule.entries.some((entry) => entry.slot.id === chosen)) select.value = chosen;
}

function editSlot(entry) {
  $('move-slot').value = entry.slot.id;
  $('move-start').value = toLocalInput(Date.parse(entry.slot.startTime), zone());
  $('move-end').value = toLocalInput(Date.parse(entry.slot.endTime), zone());
  alertIn('move-error', '');
  $('move-start').focus();
}

/** The slot whose Delete was pressed once, kept across redraws of the day. */
const armed = { slotId: '', timer: null };

function disarm() {
  clearTimeout(armed.timer);
  armed.slotId = '';
  const node = $('slots').querySelector('button[data-action="delete"].armed');
  if (node) {
    node.textContent = 'Delete';
    node.classList.remove('armed');
  }
}

function deleteButton(entry) {
  const label = slotLabel(entry);
  const node = button('Delete', async () => {
    if (armed.slotId !== entry.slot.id) {
      // A second press confirms; a dialog would take the keyboard away.
      disarm();
      armed.slotId = entry.slot.id;
      armed.timer = setTimeout(disarm, 6000);
      node.textContent = 'Press again to delete';
      node.classList.add('armed');
      return;
    }
    disarm();
    try {
      await api('DELETE', `/v1/slots/${enc(entry.slot.id)}`);
      alertIn('slots-result', '');
      $('status').textContent = `Deleted the slot ${label}.`;
      await loadDay();
    } catch (error) {
      alertIn('slots-result', reason(error));
    }
  }, `Delete the slot ${label}`);
  node.dataset.action = 'delete';
  if (armed.slotId === entry.slot.id) {
    node.textContent = 'Press again to delete';
    node.classList.add('armed');
  }
  return node;
}

/** Which day the slot list was last scrolled to now for. */
let scrolledFor = '';

function drawDay(timetable) {
  const row = (timetable.channels || []).find((candidate) => candidate.channel && candidate.channel.id === schedule.channelId)
    || (timetable.channels || [])[0];
  schedule.entries = (row && row.entries) || [];
  const now = Date.now();
  $('day-range').textContent = `From ${toLocalInput(Date.parse(timetable.startTime), zone()).replace('T', ' ')} to ${toLocalInput(Date.parse(timetable.endTime), zone()).replace('T', ' ')} (${zone()}), ${schedule.entries.length} slots.`;
  const rows = schedule.entries.map((entry) => {
    const slot = entry.slot;
    const from = Date.parse(slot.startTime);
    const to = Date.parse(slot.endTime);
    const tr = element('tr');
    tr.dataset.slotId = slot.id;
    if (from <= now && now < to) tr.className = 'on-air-row';
    const title = (entry.program && entry.program.title) || programTitle(slot.programId);
    const label = slotLabel(entry);
    const kind = [slot.live ? 'live' : '', from <= now && now < to ? 'on air' : to <= now ? 'aired' : ''].filter(Boolean).join(', ');
    const actions = element('td');
    const edit = button('Edit', () => editSlot(entry), `Move the slot ${label}`);
    edit.dataset.action = 'edit';
    actions.append(edit, ' ', deleteButton(entry));
    tr.append(
      element('td', clock(from, zone(), schedule.day)),
      element('td', clock(to, zone(), schedule.day)),
      element('td', title, 'program-title'),
      element('td', kind ? `${slot.id} (${kind})` : slot.id),
      actions,
    );
    return tr;
  });
  // A redraw keeps the keyboard where it was.
  const focused = document.activeElement;
  const focusedRow = focused && $('slots').contains(focused) ? focused.closest('tr') : null;
  const refocus = focusedRow ? `tr[data-slot-id="${CSS.escape(focusedRow.dataset.slotId)}"] button[data-action="${focused.dataset.action}"]` : '';
  $('slots').replaceChildren(...rows);
  if (refocus) {
    const again = $('slots').querySelector(refocus);
    if (again) again.focus();
  }
  $('slots').dataset.channelId = schedule.channelId;
  $('slots').dataset.day = schedule.day;
  // Now (or the day's first slot to come) in view, once a day is shown.
  const shown = `${schedule.channelId} ${schedule.day} ${zone()}`;
  if (scrolledFor !== shown) {
    scrolledFor = shown;
    const upcoming = schedule.entries.findIndex((entry) => Date.parse(entry.slot.endTime) > now);
    const box = $('slots-box');
    box.scrollTop = upcoming > 0 ? Math.max(0, rows[upcoming].offsetTop - box.clientHeight / 3) : 0;
  }
  fillSlotSelect($('move-slot'));
  bus.dispatchEvent(new CustomEvent('slots', { detail: schedule.entries }));
}

/** Counts the day's loads, so that only the latest one is drawn. */
let loads = 0;

export async function loadDay() {
  schedule.channelId = $('channel').value;
  schedule.day = $('day').value;
  if (!schedule.channelId || !schedule.day) return;
  loads += 1;
  const load = loads;
  try {
    const timetable = await timetableOf(schedule.channelId, schedule.day);
    if (load !== loads) return;
    drawDay(timetable);
    alertIn('slots-result', '');
  } catch (error) {
    alertIn('slots-result', reason(error));
  }
}

function suggestEnd() {
  const program = schedule.programs.find((candidate) => candidate.id === $('slot-program').value);
  const start = fromLocalInput($('slot-start').value, zone());
  if (!program || Number.isNaN(start)) return;
  const seconds = durationSeconds(program.duration);
  if (seconds > 0) $('slot-end').value = toLocalInput(start + seconds * 1000, zone());
}

function instant(id) {
  const ms = fromLocalInput($(id).value, zone());
  if (Number.isNaN(ms)) throw new Error(`${$(id).labels[0].textContent}: give a date and time`);
  return new Date(ms).toISOString();
}

async function createSlot(event) {
  event.preventDefault();
  alertIn('slot-error', '');
  try {
    const body = {
      programId: $('slot-program').value,
      startTime: instant('slot-start'),
      endTime: instant('slot-end'),
    };
    if ($('slot-live').checked) body.live = true;
    if ($('slot-cut').checked) body.cut = true;
    const slot = await api('POST', `/v1/channels/${enc($('channel').value)}/slots`, body);
    $('status').textContent = `Created the slot ${slot.id} (${programTitle(slot.programId)}).`;
    await loadDay();
  } catch (error) {
    alertIn('slot-error', reason(error));
  }
}

async function moveSlot(event) {
  event.preventDefault();
  alertIn('move-error', '');
  const slotId = $('move-slot').value;
  if (!slotId) {
    alertIn('move-error', 'choose a slot first');
    return;
  }
  try {
    const force = $('move-force').checked ? '?force=true' : '';
    // Only the fields present are changed (the service's implicit mask).
    const slot = await api('PATCH', `/v1/slots/${enc(slotId)}${force}`, {
      startTime: instant('move-start'),
      endTime: instant('move-end'),
    });
    $('status').textContent = `Moved the slot ${slot.id}.`;
    await loadDay();
  } catch (error) {
    alertIn('move-error', reason(error));
  }
}

async function createProgram(event) {
  event.preventDefault();
  alertIn('program-error', '');
  try {
    const minutes = Number($('program-minutes').value);
    const assetId = $('program-asset').value.trim();
    const body = {
      title: $('program-title').value,
      description: $('program-description').value,
      duration: `${Math.round(minutes * 60)}s`,
    };
    if (assetId) body.assetId = assetId;
    else body.live = true;
    const program = await api('POST', '/v1/programs', body);
    await loadPrograms(program.id);
    suggestEnd();
    $('status').textContent = `Created the program ${program.id}.`;
  } catch (error) {
    alertIn('program-error', reason(error));
  }
}

async function importFile(event) {
  event.preventDefault();
  alertIn('import-error', '');
  const list = $('import-results');
  list.replaceChildren();
  const file = $('import-file').files[0];
  if (!file) {
    alertIn('import-error', 'choose a file first');
    return;
  }
  let rows;
  try {
    rows = JSON.parse(await file.text());
  } catch (error) {
    alertIn('import-error', `the file is not JSON: ${error.message}`);
    return;
  }
  if (!Array.isArray(rows)) {
    alertIn('import-error', 'the file must be a JSON array of {programId, startTime, endTime}');
    return;
  }
  const channelId = $('channel').value;
  let created = 0;
  for (const [index, item] of rows.entries()) {
    const line = element('li');
    list.append(line);
    if (!item || typeof item !== 'object') {
      line.textContent = `Row ${index + 1}: not an object`;
      line.className = 'failed';
      continue;
    }
    const body = { programId: item.programId, startTime: item.startTime, endTime: item.endTime };
    if (item.live) body.live = true;
    if (item.cut) body.cut = true;
    try {
      const slot = await api('POST', `/v1/channels/${enc(channelId)}/slots`, body);
      created += 1;
      line.textContent = `Row ${index + 1}: created slot ${slot.id} (${programTitle(slot.programId)}, ${slot.startTime}–${slot.endTime})`;
      line.className = 'done';
    } catch (error) {
      line.textContent = `Row ${index + 1}: ${reason(error)}`;
      line.className = 'failed';
    }
  }
  $('status').textContent = `Imported ${created} of ${rows.length} slots.`;
  await loadDay();
}

/** Follows the station's schedule changes, redrawing the day when the shown channel changes. */
async function watchSchedule() {
  let pending = null;
  for (;;) {
    try {
      await readNdjson('/v1/schedule:watch', (event) => {
        if (event.channelId && event.channelId !== schedule.channelId) return;
        clearTimeout(pending);
        pending = setTimeout(loadDay, 300);
      });
    } catch (error) {
      console.warn('the schedule watch broke', reason(error));
    }
    await new Promise((resolve) => setTimeout(resolve, 5000));
  }
}

export async function initSchedule() {
  $('zone').value = Intl.DateTimeFormat().resolvedOptions().timeZone;
  $('day-form').addEventListener('submit', (event) => {
    event.preventDefault();
    loadDay();
  });
  $('channel').addEventListener('change', () => {
    bus.dispatchEvent(new CustomEvent('channel', { detail: $('channel').value }));
    loadDay();
  });
  $('slot-form').addEventListener('submit', createSlot);
  $('move-form').addEventListener('submit', moveSlot);
  $('program-form').addEventListener('submit', createProgram);
  $('import-form').addEventListener('submit', importFile);
  $('slot-program').addEventListener('change', suggestEnd);
  $('slot-start').addEventListener('change', suggestEnd);
  $('move-slot').addEventListener('change', () => {
    const entry = schedule.entries.find((candidate) => candidate.slot.id === $('move-slot').value);
    if (entry) {
      $('move-start').value = toLocalInput(Date.parse(entry.slot.startTime), zone());
      $('move-end').value = toLocalInput(Date.parse(entry.slot.endTime), zone());
    }
  });
  try {
    await Promise.all([loadChannels(), loadPrograms()]);
    bus.dispatchEvent(new CustomEvent('channel', { detail: $('channel').value }));
    if ($('channel').value) $('day').value = await dayOnAir($('channel').value);
    await loadDay();
  } catch (error) {
    alertIn('slots-result', reason(error));
  }
  watchSchedule();
}
