import { test, expect, type Browser, type Page } from '@playwright/test';
import { createHmac } from 'node:crypto';
import { rename } from 'node:fs/promises';

// The operator's console against the real server: an admin watches another person's export
// run live and cancels it, reads why an export failed, and redrives it to success — all from
// the keyboard.
//
// scripts/test.sh starts the server with EXPORTAL_ADMINS=e2e-admin and a known cookie key, so
// this test can hold the signed identity cookie of that admin; EXPORTAL_E2E_SOURCE_DBS names
// the demo database file(s) the worker reads, which the test takes away to make exports fail.

const ADMIN = 'e2e-admin';

async function adminPage(browser: Browser, baseURL: string): Promise<Page> {
  const secret = process.env.EXPORTAL_COOKIE_SECRET;
  expect(secret, 'scripts/test.sh sets EXPORTAL_COOKIE_SECRET for the browser tests').toBeTruthy();
  const signature = createHmac('sha256', secret!).update(ADMIN).digest('hex');
  const context = await browser.newContext();
  await context.addCookies([{ name: 'exportal_id', value: `${ADMIN}.${signature}`, url: baseURL }]);
  const page = await context.newPage();
  const res = await page.goto('/admin');
  expect(res?.status()).toBe(200);
  await expect(page.locator('[data-hydrated="true"]')).toBeVisible();
  await expect(page.getByTestId('ws-status')).toHaveAttribute('data-state', 'connected');
  return page;
}

async function userPage(browser: Browser): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await page.goto('/');
  await expect(page.locator('[data-hydrated="true"]')).toBeVisible();
  await expect(page.getByTestId('ws-status')).toHaveAttribute('data-state', 'connected');
  return page;
}

test('the admin console is not there for an ordinary user', async ({ page }) => {
  const res = await page.goto('/admin');
  expect(res?.status()).toBe(404);
  await expect(page.getByRole('heading', { name: 'Page not found' })).toBeVisible();
});

test('an admin watches a running export live and cancels it from the keyboard', async ({ browser, baseURL }) => {
  test.setTimeout(180_000);
  const user = await userPage(browser);
  await user.getByTestId('dataset-orders').click();
  // XLSX: the slowest format, so the million rows are still being written when the admin has
  // watched them grow and pressed Cancel (NDJSON can finish first on an idle machine).
  await user.getByTestId('format-xlsx').click();
  await user.getByTestId('export-button').click();
  const job = user.getByTestId('jobs').locator('li').first();
  await expect(job).toHaveAttribute('data-status', 'running', { timeout: 30_000 });
  const id = (await job.getAttribute('data-testid'))!.replace(/^job-/, '');

  const admin = await adminPage(browser, baseURL!);
  const row = admin.getByTestId(`running-${id}`);
  await expect(row).toBeVisible({ timeout: 15_000 });
  const rows = async () => Number((await row.getByTestId('running-rows').textContent())!.replace(/,/g, ''));
  const first = await rows();
  // Live: the row count grows without a reload.
  await expect.poll(rows, { timeout: 30_000 }).toBeGreaterThan(first);

  const cancel = row.getByTestId('admin-cancel');
  await cancel.focus();
  await admin.keyboard.press('Enter');
  await expect(admin.getByTestId('admin-notice')).toContainText(`Cancel of job ${id.slice(-8)} accepted`);
  await expect(job).toHaveAttribute('data-status', 'cancelled', { timeout: 30_000 });
  await expect(row).toHaveCount(0, { timeout: 15_000 });
});

test('a failed export shows its reason and a redrive makes it succeed', async ({ browser, baseURL }) => {
  test.setTimeout(180_000);
  const dbs = (process.env.EXPORTAL_E2E_SOURCE_DBS ?? '').split(':').filter((p) => p.length > 0);
  expect(dbs.length, 'scripts/test.sh names the demo database files in EXPORTAL_E2E_SOURCE_DBS').toBeGreaterThan(0);
  const user = await userPage(browser);
  const admin = await adminPage(browser, baseURL!);

  // The worker cannot open the database: two attempts, then the export fails for good.
  for (const db of dbs) await rename(db, `${db}.away`);
  let id: string;
  try {
    await user.getByTestId('dataset-customers').click();
    await user.getByTestId('format-csv').click();
    await user.getByTestId('export-button').click();
    const job = user.getByTestId('jobs').locator('li').first();
    await expect(job).toHaveAttribute('data-status', 'failed', { timeout: 60_000 });
    id = (await job.getAttribute('data-testid'))!.replace(/^job-/, '');
  } finally {
    for (const db of dbs) await rename(`${db}.away`, db);
  }

  const failure = admin.getByTestId(`failure-${id}`);
  await expect(failure).toBeVisible({ timeout: 15_000 });
  await expect(failure.getByTestId('failure-reason')).toContainText('not reachable right now');
  await expect(failure.getByTestId('failure-reason')).toContainText('source_unavailable');

  // Tab to the redrive button of this row and press it.
  const redrive = failure.getByTestId('admin-redrive');
  await redrive.focus();
  await expect(redrive).toBeFocused();
  await admin.keyboard.press('Enter');
  await expect(admin.getByTestId('admin-notice')).toContainText(`Redrive of job ${id.slice(-8)} accepted`);
  const job = user.getByTestId(`job-${id}`);
  await expect(job).toHaveAttribute('data-status', 'succeeded', { timeout: 60_000 });
  await expect(failure).toHaveCount(0, { timeout: 15_000 });
});
