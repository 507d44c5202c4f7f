import { test, expect, type Page, type ConsoleMessage } from '@playwright/test';

// Collects console errors and uncaught exceptions, so every test can assert the page is clean.
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('console', (msg: ConsoleMessage) => {
    if (msg.type() === 'error') errors.push(msg.text());
  });
  page.on('pageerror', (err) => errors.push(String(err)));
  return errors;
}

async function openHydrated(page: Page) {
  await page.goto('/');
  await expect(page.locator('[data-hydrated="true"]')).toBeVisible();
}

test('the page hydrates without console errors', async ({ page }) => {
  const errors = watchErrors(page);
  await openHydrated(page);
  await expect(page).toHaveTitle('Exportal');
  await expect(page.getByRole('banner')).toContainText('Exportal');
  await expect(page.getByRole('contentinfo')).toContainText('Exportal');
  expect(errors).toEqual([]);
});

test('a server function round trip from the browser renders its answer', async ({ page }) => {
  const errors = watchErrors(page);
  await openHydrated(page);
  await expect(page.getByTestId('status-checks')).toHaveText('Shown as rendered by the server.');

  const answer = page.waitForResponse((r) => r.url().endsWith('/api/fn/status') && r.status() === 200);
  await page.getByTestId('status-refresh').click();
  await answer;
  await expect(page.getByTestId('status-checks')).toHaveText('Checked from your browser once.');
  await expect(page.getByTestId('server-version')).toHaveText(/^\d+\.\d+\.\d+/);

  await page.getByTestId('status-refresh').click();
  await expect(page.getByTestId('status-checks')).toHaveText('Checked from your browser 2 times.');
  expect(errors).toEqual([]);
});

test('the live WebSocket reports connected', async ({ page }) => {
  const errors = watchErrors(page);
  const frames: string[] = [];
  page.on('websocket', (ws) => {
    if (ws.url().endsWith('/ws')) ws.on('framereceived', (f) => frames.push(String(f.payload)));
  });
  await openHydrated(page);
  await expect(page.getByTestId('ws-status')).toHaveAttribute('data-state', 'connected');
  await expect(page.getByTestId('ws-status')).toHaveText('Live');
  expect(frames.length).toBeGreaterThan(0);
  expect(JSON.parse(frames[0])).toMatchObject({ type: 'snapshot', jobs: [] });
  expect(errors).toEqual([]);
});

test('the shell works on a phone-sized screen', async ({ page }) => {
  await page.setViewportSize({ width: 375, height: 740 });
  await openHydrated(page);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  expect(width).toBeLessThanOrEqual(375);
  await expect(page.getByTestId('status-refresh')).toBeVisible();
});
