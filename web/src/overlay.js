// The comments that fly across the video, Niconico style: each in a lane
// of its own height, right to left over a fixed time, never overlapping the
// one before it in its lane. A comment's display commands say where (`ue`
// held at the top, `shita` at the bottom, for a few seconds), how large and
// in which colour. When every lane is busy the comment is not shown (it is
// still in the list): more than a person can read is thinned.

const FLIGHT_MS = 5000;
const HOLD_MS = 3000;
const LANE_PX = 34;
const POSITIONS = ['ue', 'shita'];
const SIZES = ['big', 'small'];
const COLOURS = ['red', 'pink', 'orange', 'yellow', 'green', 'cyan', 'blue', 'purple', 'black'];

/** The look a comment's commands ask for. */
export function lookOf(commands) {
  const list = commands || [];
  return {
    position: list.find((command) => POSITIONS.includes(command)) || 'naka',
    size: list.find((command) => SIZES.includes(command)) || 'medium',
    colour: list.find((command) => COLOURS.includes(command)) || 'white',
  };
}

export class Overlay {
  constructor(element) {
    this.element = element;
    /** When each lane's last comment has cleared the right edge. */
    this.lanes = [];
    this.held = { ue: [], shita: [] };
    this.flying = new Map();
    this.pending = [];
    this.frame = 0;
  }

  laneCount() {
    return Math.max(1, Math.floor(this.element.clientHeight / LANE_PX));
  }

  setVisible(visible) {
    this.element.classList.toggle('hidden', !visible);
  }

  /**
   * Shows `comment`'s body as its commands ask, if a lane is free when the
   * next frame is drawn. Comments arriving together are laid out together:
   * one layout per frame, however many there are.
   */
  show(comment) {
    if (this.element.classList.contains('hidden')) return;
    this.pending.push(comment);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    const comments = this.pending;
    this.pending = [];
    const now = performance.now();
    const count = this.laneCount();
    if (this.lanes.length !== count) this.lanes = new Array(count).fill(0);
    const flown = [];
    for (const comment of comments) {
      const look = lookOf(comment.commands);
      const node = document.createElement('div');
      node.className = `flying ${look.position} ${look.size} c-${look.colour}`;
      node.textContent = comment.body;
      node.dataset.commentId = comment.id;
      if (look.position !== 'naka') {
        this.hold(comment, node, look.position, now, count);
        continue;
      }
      const lane = this.lanes.findIndex((free) => free <= now);
      if (lane < 0) continue;
      // Taken until its width is known, below.
      this.lanes[lane] = Infinity;
      node.style.top = `${lane * LANE_PX + 4}px`;
      this.element.append(node);
      flown.push({ comment, node, lane });
    }
    if (!flown.length) return;
    // One layout for every comment of this frame.
    const width = this.element.clientWidth;
    const widths = flown.map(({ node }) => node.offsetWidth);
    flown.forEach(({ comment, node, lane }, index) => {
      const travel = width + widths[index];
      // The lane is free again once this comment's tail has entered the
      // screen far enough that the next one, at the same speed, can't touch it.
      this.lanes[lane] = now + (widths[index] / travel) * FLIGHT_MS + 200;
      const flight = node.animate(
        [{ transform: 'translateX(0)' }, { transform: `translateX(${-travel}px)` }],
        { duration: FLIGHT_MS, easing: 'linear' },
      );
      this.flying.set(comment.id, node);
      flight.onfinish = () => {
        node.remove();
        this.flying.delete(comment.id);
      };
    });
  }

  /** Holds a `ue` or `shita` comment still, centred, in the top or bottom lanes. */
  hold(comment, node, position, now, laneCount) {
    const lanes = this.held[position];
    const count = Math.max(1, Math.floor(laneCount / 2));
    while (lanes.length < count) lanes.push(0);
    lanes.length = count;
    const lane = lanes.findIndex((free) => free <= now);
    if (lane < 0) return false;
    lanes[lane] = now + HOLD_MS;
    node.style[position === 'ue' ? 'top' : 'bottom'] = `${lane * LANE_PX + 4}px`;
    this.element.append(node);
    this.flying.set(comment.id, node);
    setTimeout(() => {
      node.remove();
      this.flying.delete(comment.id);
    }, HOLD_MS);
    return true;
  }

  remove(commentId) {
    const node = this.flying.get(commentId);
    if (node) node.remove();
    this.flying.delete(commentId);
  }

  clear() {
    for (const node of this.flying.values()) node.remove();
    this.flying.clear();
    this.lanes = [];
    this.held = { ue: [], shita: [] };
    this.pending = [];
  }
}
