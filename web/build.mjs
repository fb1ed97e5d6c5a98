// Builds onair's web app into dist/: the viewer app (index.html) and the
// station console (console.html), each with its script and style bundled by
// esbuild and named by a hash of its content, so the server can let
// browsers keep them for good while the HTML is always asked for again.
// The onair binary embeds dist/ (crates/onair-web).

import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');

const pages = [
  { html: 'index.html', script: 'src/app.js', style: 'src/app.css' },
  { html: 'console.html', script: 'src/console.js', style: 'src/app.css' },
];

function hashed(name, bytes) {
  const hash = createHash('sha256').update(bytes).digest('hex').slice(0, 12);
  const dot = name.lastIndexOf('.');
  return `${name.slice(0, dot)}-${hash}${name.slice(dot)}`;
}

async function bundle(entry) {
  const result = await esbuild.build({
    entryPoints: [join(root, entry)],
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['es2020'],
    write: false,
    legalComments: 'none',
  });
  return result.outputFiles[0].contents;
}

await rm(dist, { recursive: true, force: true });
await mkdir(join(dist, 'assets'), { recursive: true });
const written = new Map();
async function asset(entry) {
  if (written.has(entry)) return written.get(entry);
  const name = entry.split('/').pop();
  const bytes = await bundle(entry);
  const file = hashed(name, bytes);
  await writeFile(join(dist, 'assets', file), bytes);
  written.set(entry, file);
  return file;
}

const files = [];
for (const page of pages) {
  const script = await asset(page.script);
  const style = await asset(page.style);
  const template = await readFile(join(root, 'src', page.html), 'utf8');
  const html = template
    .replace('{{script}}', `/assets/${script}`)
    .replace('{{style}}', `/assets/${style}`);
  await writeFile(join(dist, page.html), html);
  files.push(page.html);
}
files.push(...[...new Set(written.values())].map((file) => `assets/${file}`));
await writeFile(join(dist, 'manifest.json'), JSON.stringify({ files }, null, 2) + '\n');
const scripts = [...new Set(written.values())].filter((file) => file.endsWith('.js'));
let gzipped = 0;
for (const file of scripts) gzipped += gzipSync(await readFile(join(dist, 'assets', file))).length;
console.log(`built ${files.length} files into ${dist}; the scripts are ${(gzipped / 1024).toFixed(1)} KiB gzipped`);
