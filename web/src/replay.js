// Replay of an aired slot: its comments appear at their moment in the
// program (`vposMs`) as the video plays, read a minute at a time from
// `GET /v1/slots/{slotId}/comments`, and a seek starts again from the new
// moment. The video's time 0 is the first aired segment, which is the
// slot's start unless the station began airing in the middle of it:
// `offsetMs` (the first segment's program date-time less the slot's start)
// turns one into the other.

import { call } from './api.js';

const WINDOW_MS = 60000;

export class Replay {
  constructor(slotId, video, show) {
    this.slotId = slotId;
    this.video = video;
    this.show = show;
    this.loaded = new Map();
    this.loading = new Set();
    this.shownUpTo = null;
    this.offsetMs = 0;
    this.onTime = () => this.tick();
    this.onSeek = () => {
      this.shownUpTo = null;
    };
    video.addEventListener('timeupdate', this.onTime);
    video.addEventListener('seeking', this.onSeek);
  }

  async window(index) {
    if (this.loaded.has(index) || this.loading.has(index)) return;
    this.loading.add(index);
    const comments = [];
    let token = '';
    try {
      do {
        const query = new URLSearchParams({
          fromVposMs: String(index * WINDOW_MS),
          toVposMs: String((index + 1) * WINDOW_MS),
          pageSize: '500',
        });
        if (token) query.set('pageToken', token);
        const page = await call('GET', `/v1/slots/${encodeURIComponent(this.slotId)}/comments?${query}`);
        comments.push(...((page && page.comments) || []));
        token = (page && page.nextPageToken) || '';
      } while (token);
      this.loaded.set(index, comments);
    } finally {
      this.loading.delete(index);
    }
  }

  tick() {
    const nowMs = Math.floor(this.video.currentTime * 1000) + this.offsetMs;
    const index = Math.floor(nowMs / WINDOW_MS);
    this.window(index);
    this.window(index + 1);
    const from = this.shownUpTo === null ? nowMs - 1000 : this.shownUpTo;
    if (nowMs <= from) {
      this.shownUpTo = nowMs;
      return;
    }
    for (const window of [index - 1, index]) {
      for (const comment of this.loaded.get(window) || []) {
        const at = Number(comment.vposMs || 0);
        if (at > from && at <= nowMs) this.show(comment);
      }
    }
    this.shownUpTo = nowMs;
  }

  close() {
    this.video.removeEventListener('timeupdate', this.onTime);
    this.video.removeEventListener('seeking', this.onSeek);
  }
}
