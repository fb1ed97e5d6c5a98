// The comments that fly across the video, Niconico style: each in a lane
// of its own height, right to left over a fixed time, never overlapping the
// one before it in its lane. When every lane is busy the comment is not
// flown (it is still in the list): more than a person can read is thinned.

const FLIGHT_MS = 5000;
const LANE_PX = 34;

export class Overlay {
  constructor(element) {
    this.element = element;
    /** When each lane's last comment has cleared the right edge. */
    this.lanes = [];
    this.flying = new Map();
  }

  laneCount() {
    return Math.max(1, Math.floor(this.element.clientHeight / LANE_PX));
  }

  setVisible(visible) {
    this.element.classList.toggle('hidden', !visible);
  }

  /** Flies `comment`'s body, if a lane is free. */
  show(comment) {
    if (this.element.classList.contains('hidden')) return false;
    const now = performance.now();
    const count = this.laneCount();
    if (this.lanes.length !== count) this.lanes = new Array(count).fill(0);
    const lane = this.lanes.findIndex((free) => free <= now);
    if (lane < 0) return false;
    const node = document.createElement('div');
    node.className = 'flying';
    node.textContent = comment.body;
    node.dataset.commentId = comment.id;
    node.style.top = `${lane * LANE_PX + 4}px`;
    this.element.append(node);
    const width = this.element.clientWidth;
    const travel = width + node.offsetWidth;
    // The lane is free again once this comment's tail has entered the screen
    // far enough that the next one, moving at the same speed, can't touch it.
    this.lanes[lane] = now + (node.offsetWidth / travel) * FLIGHT_MS + 200;
    const flight = node.animate(
      [{ transform: 'translateX(0)' }, { transform: `translateX(${-travel}px)` }],
      { duration: FLIGHT_MS, easing: 'linear' },
    );
    this.flying.set(comment.id, node);
    flight.onfinish = () => {
      node.remove();
      this.flying.delete(comment.id);
    };
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
  }
}
