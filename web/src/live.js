// A channel's live socket: the JSON events of `/v1/channels/{id}/live`,
// resumed after a drop from the last offset and epoch, so nothing is missed
// that the gateway still keeps.

export class LiveSocket {
  constructor(channelId, token, onEvent) {
    this.channelId = channelId;
    this.token = token;
    this.onEvent = onEvent;
    this.offset = null;
    this.epoch = null;
    this.closed = false;
    this.retryMs = 500;
    this.open();
  }

  url() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const query = new URLSearchParams();
    if (this.token) query.set('access_token', this.token);
    if (this.offset !== null && this.epoch) {
      query.set('after', String(this.offset));
      query.set('epoch', this.epoch);
    }
    return `${scheme}://${location.host}/v1/channels/${encodeURIComponent(this.channelId)}/live?${query}`;
  }

  open() {
    this.socket = new WebSocket(this.url());
    this.socket.onmessage = (message) => {
      let events;
      try {
        events = JSON.parse(message.data);
      } catch {
        return;
      }
      for (const event of Array.isArray(events) ? events : [events]) {
        if (event.type === 'ready') {
          this.epoch = event.epoch || this.epoch;
          this.retryMs = 500;
        }
        if (typeof event.offset === 'number' || typeof event.offset === 'string') {
          const offset = Number(event.offset);
          if (event.type !== 'ready' || this.offset === null) this.offset = offset;
        }
        this.onEvent(event);
      }
    };
    this.socket.onclose = () => {
      if (this.closed) return;
      setTimeout(() => !this.closed && this.open(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 10000);
    };
  }

  close() {
    this.closed = true;
    if (this.socket) this.socket.close();
  }
}
