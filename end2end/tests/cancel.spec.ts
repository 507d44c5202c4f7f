import { test, expect, type Page, type Locator } from '@playwright/test';

// Cancel and retry, in a file of its own so that it runs first, on a fresh server.
// KNOWN DEFECT (open): after a 1,000,000-row export has run on the same server, an XLSX export
// started next was seen stuck at 0 rows, and its cancel never completed (the worker's attempt did
// not return). Not reproduced through the REST API; under investigation.

async function openHydrated(page: Page) {
  await page.goto('/');
  await expect(page.locator('[data-hydrated="true"]')).toBeVisible();
  await expect(page.getByTestId('ws-status')).toHaveAttribute('data-state', 'connected');
}

function newestJob(page: Page): Locator {
  return page.getByTestId('jobs').locator('li').first();
}

test('a running export can be cancelled and retried', async ({ page }) => {
  await openHydrated(page);
  await page.getByTestId('dataset-orders').click();
  await page.getByTestId('format-xlsx').click();
  await expect(page.getByTestId('gzip').locator('input')).toBeDisabled();
  await page.getByTestId('export-button').click();
  const job = newestJob(page);
  await expect(job).toHaveAttribute('data-status', /queued|running/);
  await job.getByTestId('job-cancel').click();
  await expect(job).toHaveAttribute('data-status', 'cancelled', { timeout: 15_000 });
  await expect(job.getByTestId('job-download')).toHaveCount(0);

  await job.getByTestId('job-retry').click();
  await expect(job).toHaveAttribute('data-status', /queued|running/);
  await job.getByTestId('job-cancel').click();
  await expect(job).toHaveAttribute('data-status', 'cancelled', { timeout: 15_000 });
});
