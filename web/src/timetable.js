// The timetable of the broadcast day on air: a row per channel, a block per
// slot, as wide as it is long, in the station's time zone and day start (the
// media service resolves the day). A block of an aired slot offers its
// replay; the one on air, its channel; every block shows its program.

import { call } from './api.js';

/** The broadcast day holding `now`: today's UTC date, else its neighbours. */
export async function dayOnAir(now = Date.now()) {
  const day = (offset) => new Date(now + offset * 86400000).toISOString().slice(0, 10);
  for (const offset of [0, -1, 1]) {
    const timetable = await call('GET', `/v1/timetable?broadcastDay=${day(offset)}`);
    const start = Date.parse(timetable.startTime);
    const end = Date.parse(timetable.endTime);
    if (start <= now && now < end) return timetable;
  }
  return call('GET', `/v1/timetable?broadcastDay=${day(0)}`);
}

const PX_PER_MINUTE = 6;

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/**
 * Draws `timetable` into `element`; `choose(entry, channel, state)` is called
 * with the slot's entry, its channel and whether it is `aired`, `on-air` or
 * `coming` when its block is chosen.
 */
export function drawTimetable(element, timetable, now, choose) {
  const start = Date.parse(timetable.startTime);
  const rows = (timetable.channels || []).map((row) => {
    const line = document.createElement('li');
    line.className = 'tt-row';
    const name = document.createElement('span');
    name.className = 'tt-channel';
    name.textContent = row.channel.name;
    const strip = document.createElement('div');
    strip.className = 'tt-strip';
    for (const entry of row.entries || []) {
      const slot = entry.slot;
      const from = Date.parse(slot.startTime);
      const to = Date.parse(slot.endTime);
      const state = to <= now ? 'aired' : from <= now ? 'on-air' : 'coming';
      const block = document.createElement('button');
      block.type = 'button';
      block.className = `tt-slot ${state}`;
      block.dataset.slotId = slot.id;
      block.style.left = `${((from - start) / 60000) * PX_PER_MINUTE}px`;
      block.style.width = `${Math.max(((to - from) / 60000) * PX_PER_MINUTE - 2, 4)}px`;
      const title = (entry.program && entry.program.title) || '';
      block.textContent = `${clock(from)} ${title}`;
      block.setAttribute('aria-label', `${row.channel.name}, ${clock(from)}–${clock(to)}: ${title} (${state})`);
      block.addEventListener('click', () => choose(entry, row.channel, state));
      strip.append(block);
    }
    const end = Date.parse(timetable.endTime);
    strip.style.width = `${((end - start) / 60000) * PX_PER_MINUTE}px`;
    const marker = document.createElement('div');
    marker.className = 'tt-now';
    marker.style.left = `${((now - start) / 60000) * PX_PER_MINUTE}px`;
    strip.append(marker);
    line.append(name, strip);
    return line;
  });
  element.replaceChildren(...rows);
  // Now in view.
  const scroller = element.closest('.tt-scroll');
  if (scroller) scroller.scrollLeft = Math.max(0, ((now - start) / 60000) * PX_PER_MINUTE - 120);
}
