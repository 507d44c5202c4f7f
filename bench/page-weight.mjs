// Bytes on the wire for a first and a repeat view of the export page, as Chromium counts them
// (the encoded, i.e. compressed, size of every response, headers included), through the
// DevTools protocol. The live WebSocket's frames are not counted.
//
//   (cd end2end && node ../bench/page-weight.mjs http://127.0.0.1:3000/)
import { createRequire } from 'node:module';

// Playwright lives in end2end/node_modules: resolved from the working directory.
const { chromium } = createRequire(`${process.cwd()}/`)('@playwright/test');

const url = process.argv[2] ?? 'http://127.0.0.1:3000/';
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const context = await browser.newContext();
const page = await context.newPage();
const cdp = await context.newCDPSession(page);
await cdp.send('Network.enable');
let responses = new Map();
cdp.on('Network.responseReceived', (e) => {
  responses.set(e.requestId, { url: e.response.url, status: e.response.status, bytes: 0 });
});
cdp.on('Network.loadingFinished', (e) => {
  const r = responses.get(e.requestId);
  if (r) r.bytes = e.encodedDataLength;
});

async function view(label) {
  responses = new Map();
  await page.goto(url, { waitUntil: 'networkidle' });
  await page.locator('[data-hydrated="true"]').waitFor();
  await page.waitForTimeout(500);
  const list = [...responses.values()];
  const total = list.reduce((n, r) => n + r.bytes, 0);
  console.log(`${label}: ${total} bytes in ${list.length} responses`);
  for (const r of list.sort((a, b) => b.bytes - a.bytes)) {
    console.log(`  ${String(r.bytes).padStart(9)}  ${r.status}  ${r.url.replace(/^https?:\/\/[^/]+/, '')}`);
  }
  return total;
}

const first = await view('first view');
const repeat = await view('repeat view');
console.log(JSON.stringify({ first, repeat }));
await browser.close();
