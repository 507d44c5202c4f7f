import { test, expect, type Page, type Locator } from '@playwright/test';
import { readFile } from 'node:fs/promises';

// The whole journey of a person exporting data, against the real server and its demo
// catalogue (1,000,000 orders in SQLite).

async function openHydrated(page: Page) {
  await page.goto('/');
  await expect(page.locator('[data-hydrated="true"]')).toBeVisible();
  await expect(page.getByTestId('ws-status')).toHaveAttribute('data-state', 'connected');
}

function newestJob(page: Page): Locator {
  return page.getByTestId('jobs').locator('li').first();
}

test('choose, filter, preview, export, watch it finish and download the file', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await openHydrated(page);
  await expect(page.getByTestId('jobs-empty')).toBeVisible();

  await page.getByTestId('dataset-orders').click();
  await page.getByTestId('param-status').selectOption('paid');
  await page.getByTestId('param-from').fill('2025-01-01');
  await page.getByTestId('param-min_total').fill('500');
  // Leave the free-text note out of the file.
  await page.getByTestId('column-note').locator('input').uncheck();
  await page.getByTestId('format-csv').click();

  await page.getByTestId('preview-button').click();
  const preview = page.getByTestId('preview');
  await expect(preview.locator('tbody tr')).toHaveCount(20);
  await expect(preview.locator('thead th')).toHaveText(['id', 'customer', 'status', 'total', 'currency', 'paid', 'created_at', 'shipped_on']);
  const countText = await page.getByTestId('preview-count').textContent();
  const expectedRows = Number(countText!.match(/About ([\d,]+) rows/)![1].replace(/,/g, ''));
  expect(expectedRows).toBeGreaterThan(1000);
  for (const cell of await preview.locator('tbody tr td:nth-child(3)').allTextContents()) {
    expect(cell).toBe('paid');
  }

  await page.getByTestId('export-button').click();
  const job = newestJob(page);
  await expect(job).toBeVisible();
  await expect(job).toHaveAttribute('data-status', 'succeeded', { timeout: 60_000 });
  await expect(job.getByTestId('job-detail')).toContainText(`${expectedRows.toLocaleString('en-US')} rows`);

  const downloading = page.waitForEvent('download');
  await job.getByTestId('job-download').click();
  const download = await downloading;
  expect(download.suggestedFilename()).toMatch(/^orders-\d{4}-\d{2}-\d{2}\.csv$/);
  const text = await readFile(await download.path(), 'utf8');
  const lines = text.split('\r\n').filter((l) => l.length > 0);
  expect(lines[0]).toBe('id,customer,status,total,currency,paid,created_at,shipped_on');
  // Customer names contain no line breaks in this filter? Count records, not lines: every
  // record starts with a numeric id.
  const records = lines.slice(1).filter((l) => /^\d+,/.test(l));
  expect(records.length).toBe(expectedRows);
  expect(errors).toEqual([]);
});

test('progress moves live and a reload mid-export keeps the job, which then finishes', async ({ page }) => {
  // A million rows through a debug build (and through Azurite in the second run) takes about a minute.
  test.setTimeout(240_000);
  await openHydrated(page);
  await page.getByTestId('dataset-orders').click();
  await page.getByTestId('format-ndjson').click();
  await page.getByTestId('export-button').click();
  const job = newestJob(page);
  await expect(job).toHaveAttribute('data-status', 'running', { timeout: 30_000 });

  // The bar reports rows while running: seen strictly between 0 and the total.
  const progress = job.getByTestId('job-progress');
  await expect
    .poll(async () => Number(await progress.getAttribute('data-rows')), { timeout: 30_000, intervals: [50] })
    .toBeGreaterThan(0);
  const id = (await job.getAttribute('data-testid'))!;
  const before = Number(await progress.getAttribute('data-rows'));

  await page.reload();
  await expect(page.locator('[data-hydrated="true"]')).toBeVisible();
  const again = page.getByTestId(id);
  await expect(again).toBeVisible();
  await expect(again).toHaveAttribute('data-status', /running|succeeded/);
  await expect
    .poll(async () => Number(await again.getByTestId('job-progress').getAttribute('data-rows')), { timeout: 60_000 })
    .toBeGreaterThan(before);
  await expect(again).toHaveAttribute('data-status', 'succeeded', { timeout: 120_000 });
  await expect(again.getByTestId('job-detail')).toContainText('1,000,000 rows');
});

// Runs after the million-row export on purpose: the order in which the page hears of a job
// (its own action's answer or the live channel) differs from run to run, and a late answer must
// never undo a newer state.
test('a running export can be cancelled, retried, and cancelled again while queued', async ({ page }) => {
  await openHydrated(page);
  await page.getByTestId('dataset-orders').click();
  await page.getByTestId('format-xlsx').click();
  await expect(page.getByTestId('gzip').locator('input')).toBeDisabled();
  await page.getByTestId('export-button').click();
  const job = newestJob(page);
  // Cancel only once the worker is writing rows, so the running export itself must stop.
  await expect
    .poll(async () => Number(await job.getByTestId('job-progress').getAttribute('data-rows')), { timeout: 30_000 })
    .toBeGreaterThan(0);
  await job.getByTestId('job-cancel').click();
  await expect(job).toHaveAttribute('data-status', 'cancelled', { timeout: 15_000 });
  await expect(job.getByTestId('job-download')).toHaveCount(0);
  await expect(job.getByTestId('job-error')).toHaveCount(0);

  // Retry, then cancel at once: usually before a worker took it.
  await job.getByTestId('job-retry').click();
  await expect(job).toHaveAttribute('data-status', /queued|running/);
  await job.getByTestId('job-cancel').click();
  await expect(job).toHaveAttribute('data-status', 'cancelled', { timeout: 15_000 });

  // The stored state says the same after a reload.
  const id = (await job.getAttribute('data-testid'))!;
  await page.reload();
  await expect(page.getByTestId(id)).toHaveAttribute('data-status', 'cancelled');
});

test('invalid filters get a readable message instead of a job', async ({ page }) => {
  await openHydrated(page);
  await page.getByTestId('dataset-orders').click();
  for (const column of ['id', 'customer', 'status', 'total', 'currency', 'paid', 'created_at', 'shipped_on', 'note']) {
    await page.getByTestId(`column-${column}`).locator('input').uncheck();
  }
  await page.getByTestId('export-button').click();
  await expect(page.getByTestId('form-error')).toContainText('Choose at least one column.');
});

test('two browsers are two users who never see each other\'s exports', async ({ browser }) => {
  const alice = await browser.newContext();
  const bob = await browser.newContext();
  const a = await alice.newPage();
  const b = await bob.newPage();
  await openHydrated(a);
  await a.getByTestId('dataset-customers').click();
  await a.getByTestId('export-button').click();
  await expect(newestJob(a)).toHaveAttribute('data-status', 'succeeded', { timeout: 60_000 });

  await openHydrated(b);
  await expect(b.getByTestId('jobs-empty')).toBeVisible();
  const href = await newestJob(a).getByTestId('job-download').getAttribute('href');
  const response = await b.request.get(href!);
  expect(response.status()).toBe(404);
  await alice.close();
  await bob.close();
});

test.describe('a person whose browser writes decimals with a comma', () => {
  test.use({ locale: 'de-DE', timezoneId: 'Europe/Berlin' });

  test('the Excel preset, display names and their time zone shape the preview and the file', async ({ page }) => {
    await openHydrated(page);
    await page.getByTestId('dataset-customers').click();
    await page.getByTestId('format-csv').click();
    await page.getByTestId('excel-preset').click();
    await expect(page.getByTestId('option-delimiter')).toHaveValue('semicolon');
    await expect(page.getByTestId('option-bom').locator('input')).toBeChecked();
    await page.getByTestId('option-labels').locator('input').check();
    await page.getByTestId('my-time-zone').click();
    await expect(page.getByTestId('option-time-zone')).toHaveValue('Europe/Berlin');

    await page.getByTestId('preview-button').click();
    const preview = page.getByTestId('preview');
    await expect(preview.locator('thead th')).toHaveText(['Customer #', 'Name', 'E-mail', 'Country', 'Customer since']);

    await page.getByTestId('export-button').click();
    const job = newestJob(page);
    await expect(job).toHaveAttribute('data-status', 'succeeded', { timeout: 60_000 });
    const downloading = page.waitForEvent('download');
    await job.getByTestId('job-download').click();
    const text = await readFile(await (await downloading).path(), 'utf8');
    expect(text.startsWith('\ufeffCustomer #;Name;E-mail;Country;Customer since\r\n')).toBe(true);
    // A name with a comma is not quoted for `;`, and one with a line break still is.
    expect(text).toContain(';Seán O\'Brien, Jr. #');
    expect(text).toMatch(/;"Anna\nSecond line #\d+";/);
  });

  test('an unknown time zone is refused with a message that names it', async ({ page }) => {
    await openHydrated(page);
    await page.getByTestId('dataset-customers').click();
    await page.getByTestId('option-time-zone').fill('Mars/Olympus');
    await page.getByTestId('preview-button').click();
    await expect(page.getByTestId('form-error')).toContainText('unknown time zone `Mars/Olympus`');
  });
});
