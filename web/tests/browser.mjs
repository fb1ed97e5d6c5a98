// The web app in headless Chromium against a running `onair demo`:
//
//     node tests/browser.mjs http://127.0.0.1:PORT OPERATOR_KEY_FILE [SCREENSHOT_DIR]
//
// Exits 0 when every check passed; otherwise prints what failed and exits 1.
// crates/onair/tests/browser.rs starts the demo and runs this.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, keyFile, screenshots] = process.argv.slice(2);
if (!base || !keyFile) {
  console.error('usage: node tests/browser.mjs BASE_URL OPERATOR_KEY_FILE [SCREENSHOT_DIR]');
  process.exit(2);
}
const operatorKey = (await readFile(keyFile, 'utf8')).trim();
const HOSTILE = '<img src=x onerror=alert(1)>';
const WAIT = { timeout: 30000 };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
const failures = [];
const dialogs = [];

async function open(path) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 }, locale: 'en-US' });
  const page = await context.newPage();
  page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    dialog.dismiss();
  });
  page.on('pageerror', (error) => failures.push(`a script error on ${path}: ${error.message}`));
  await page.goto(base + path);
  return page;
}

async function check(name, body) {
  const started = Date.now();
  try {
    await body();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failures.push(`${name}: ${error.message}`);
    console.log(`FAIL ${name}: ${error.message}`);
  }
}

async function api(method, path, body, token) {
  const response = await fetch(base + path, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json().catch(() => null);
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${json && json.message}`);
  return json;
}

const currentTime = (page) => page.evaluate(() => document.getElementById('video').currentTime);

/** Waits until the page's video has played `seconds` more. */
async function playsOn(page, seconds) {
  const from = await currentTime(page);
  await page.waitForFunction(
    ([start, more]) => document.getElementById('video').currentTime >= start + more,
    [from, seconds],
    WAIT,
  );
}

/** Posts `body` from `page` until the station takes it (a gap refuses comments). */
async function postUntilTaken(page, body, verdict) {
  const deadline = Date.now() + 60000;
  for (let attempt = 1; Date.now() < deadline; attempt += 1) {
    await page.evaluate(() => { document.getElementById('verdict').textContent = ''; });
    await page.fill('#body', `${body} #${attempt}`);
    await page.click('#post button[type=submit]');
    await page.waitForFunction(() => document.getElementById('verdict').textContent !== '', null, WAIT);
    const said = await page.textContent('#verdict');
    if (said.startsWith(verdict)) return `${body} #${attempt}`;
    await page.waitForTimeout(2000);
  }
  throw new Error(`"${body}" was never taken`);
}

const viewer = await open('/');

await check('the guide lists the demo channels with their programs and viewer counts', async () => {
  await viewer.waitForSelector('.channel', WAIT);
  await viewer.waitForFunction(() => document.querySelectorAll('.channel').length >= 3, null, WAIT);
  const text = await viewer.textContent('#channels');
  for (const name of ['onair News', 'onair Anime', 'onair Sports']) {
    if (!text.includes(name)) throw new Error(`${name} is not in the guide: ${text}`);
  }
  if (!/Next: \S/.test(text)) throw new Error(`no program is named: ${text}`);
  if (!/\d+ watching/.test(text)) throw new Error(`no viewer count: ${text}`);
});

// The channel whose program ends soonest, to watch across the boundary.
const now = await api('GET', '/v1/now');
const onAir = now.nowNext
  .filter((entry) => entry.now && entry.now.slot)
  .sort((a, b) => Date.parse(a.now.slot.endTime) - Date.parse(b.now.slot.endTime));
const channelId = onAir.length ? onAir[0].channelId : now.nowNext[0].channelId;

await check('the video plays across a program boundary', async () => {
  await viewer.click(`.channel[data-channel-id="${channelId}"]`);
  await playsOn(viewer, 2);
  const boundary = onAir.length ? Date.parse(onAir[0].now.slot.endTime) : Date.now();
  while (Date.now() < boundary + 4000) await playsOn(viewer, 1);
  await playsOn(viewer, 2);
  const message = await viewer.textContent('#message');
  if (message) throw new Error(`the player says: ${message}`);
});

if (screenshots) await viewer.screenshot({ path: join(screenshots, 'guide-and-player.png') });

await check('the channel switches from the keyboard', async () => {
  const first = await viewer.getAttribute('.channel[aria-current="true"]', 'data-channel-id');
  await viewer.focus(`.channel[data-channel-id="${first}"]`);
  await viewer.keyboard.press('ArrowDown');
  await viewer.waitForFunction(
    (was) => {
      const current = document.querySelector('.channel[aria-current="true"]');
      return current && current.dataset.channelId !== was && document.activeElement === current;
    },
    first,
    WAIT,
  );
  const switched = await viewer.getAttribute('.channel[aria-current="true"]', 'data-channel-id');
  await viewer.waitForFunction(
    (id) => performance.getEntriesByType('resource').some((entry) => entry.name.includes(`/hls/${id}/`)),
    switched,
    WAIT,
  );
  await playsOn(viewer, 2);
  await viewer.click(`.channel[data-channel-id="${channelId}"]`);
  await playsOn(viewer, 1);
});

const second = await open(`/?channel=${encodeURIComponent(channelId)}`);

await check('a comment posted in one page shows in another, as text, in its list and overlay, with its display commands', async () => {
  await second.waitForSelector(`.channel[aria-current="true"][data-channel-id="${channelId}"]`, WAIT);
  await playsOn(second, 1);
  await viewer.selectOption('#position', 'ue');
  await viewer.selectOption('#colour', 'red');
  const body = await postUntilTaken(viewer, `${HOSTILE} hello from the test`, 'Posted');
  await viewer.selectOption('#position', 'naka');
  await viewer.selectOption('#colour', 'white');
  const listed = second.locator('#comments .text', { hasText: body });
  await listed.waitFor(WAIT);
  const shown = await second.evaluate(
    (text) => [...document.querySelectorAll('#overlay .flying')].find((node) => node.textContent === text)?.className,
    body,
  );
  if (!shown) throw new Error('the comment was not shown over the video');
  if (!shown.includes('ue') || !shown.includes('c-red')) {
    throw new Error(`the overlay ignored the display commands (ue red): ${shown}`);
  }
  const images = await second.evaluate(() => document.querySelectorAll('#comments img, #overlay img').length);
  if (images) throw new Error('a comment body became markup');
  if (screenshots) await second.screenshot({ path: join(screenshots, 'player-with-comments.png') });
});

await check('share links open each network with the link to the channel', async () => {
  await viewer.click('#share');
  await viewer.waitForSelector('#share-links a.intent', WAIT);
  const x = await viewer.getAttribute('#share-links a.intent:text("X")', 'href');
  const url = new URL(x);
  if (url.origin + url.pathname !== 'https://twitter.com/intent/tweet') throw new Error(`not an X intent: ${x}`);
  const link = url.searchParams.get('url');
  if (!link || !link.startsWith(`${base}/s/`)) throw new Error(`the intent does not carry the link: ${x}`);
  const page = await fetch(link).then((response) => response.text());
  if (!page.includes('og:image')) throw new Error('the link has no card');
});

await check('a held comment is approved in the console, then shows for viewers', async () => {
  const console = await open('/console');
  await console.fill('#key', operatorKey);
  await console.click('#sign-in button[type=submit]');
  await console.waitForFunction(() => document.getElementById('status').textContent.startsWith('Signed in'), null, WAIT);
  const body = await postUntilTaken(viewer, 'see https://example.com/offer', 'Waiting for a moderator');
  const row = console.locator('#queue tr', { hasText: body });
  await row.waitFor(WAIT);
  if (screenshots) await console.screenshot({ path: join(screenshots, 'console-queue.png') });
  await row.locator('button', { hasText: 'Approve' }).click();
  await row.waitFor({ state: 'detached', timeout: 30000 });
  await second.locator('#comments .text', { hasText: body }).waitFor(WAIT);
  await console.close();
});

await check('no markup in the station\'s data ran as script', async () => {
  if (dialogs.length) throw new Error(`dialogs opened: ${dialogs.join(', ')}`);
});

await browser.close();
if (failures.length) {
  console.error(`\n${failures.length} browser check(s) failed:\n- ${failures.join('\n- ')}`);
  process.exit(1);
}
console.log('every browser check passed');
