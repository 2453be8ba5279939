// Browser checks of the node's dashboard (make viewer-test), in Debian's Chromium driven
// by playwright-core (the system browser: nothing downloaded).
//
//   node viewer_test/dashboard_checks.mjs SPEC.json RESULT.json
//
// SPEC (written by viewer_test/test_dashboard_browser.py): base URL, user, password,
// the patient and study to mark as a baseline, the destination to echo, the output folder.
// RESULT: {facts: {...}, problems: [...]}: what the pages showed; the Python test asserts.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const resultPath = process.argv[3];
const require = createRequire(path.join(spec.node_modules, 'noop.js'));
const { chromium } = require('playwright-core');

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const facts = {};
const problems = [];

async function text(page, selector) {
  const element = await page.$(selector);
  return element ? (await element.innerText()).trim() : null;
}

async function flashes(page) {
  return page.$$eval('[data-flash]', (nodes) =>
    nodes.map((n) => ({ kind: n.dataset.flash, text: n.textContent.trim() })));
}

async function run(page) {
  // 1. Not logged in: the dashboard is refused (401, the login form), and so is /metrics.
  const refused = await page.goto(spec.base + '/');
  facts.unauthenticated_status = refused.status();
  facts.unauthenticated_has_login_form = (await page.$('form#login')) !== null;
  facts.unauthenticated_has_jobs = (await page.$('section#jobs')) !== null;
  const metrics = await page.request.get(spec.base + '/metrics');
  facts.unauthenticated_metrics_status = metrics.status();
  await page.screenshot({ path: path.join(spec.out, 'dashboard-login.png'), fullPage: true });

  // 2. Log in through the form.
  await page.fill('input[name=user]', spec.user);
  await page.fill('input[name=password]', spec.password);
  await Promise.all([page.waitForNavigation(), page.click('form#login button')]);
  facts.after_login_url = page.url();
  facts.readiness = await text(page, '#readiness');
  facts.device = await text(page, '#device');
  facts.node_section = await text(page, 'section#node');
  facts.associations = await text(page, 'section#associations');
  facts.receiving = await text(page, 'section#receiving');
  facts.jobs = await text(page, 'section#jobs');
  facts.outbox = await text(page, 'section#outbox');
  facts.dead = await text(page, 'section#dead');
  facts.disk = await text(page, 'section#disk');
  facts.job_rows = await page.$$eval('section#jobs tr[id^=job-]', (rows) =>
    rows.map((r) => Array.from(r.cells).map((c) => c.innerText.trim())));
  facts.outbox_rows = await page.$$eval('section#outbox tr[data-destination]', (rows) =>
    rows.map((r) => ({ destination: r.dataset.destination,
      cells: Array.from(r.cells).map((c) => c.innerText.trim()) })));
  await page.screenshot({ path: path.join(spec.out, 'dashboard.png'), fullPage: true });

  // 3. An action: mark the processed exam as the patient's baseline.
  await page.fill('#baseline-form input[name=patient_id]', spec.patient_id);
  await page.fill('#baseline-form input[name=issuer]', spec.issuer);
  await page.fill('#baseline-form input[name=study_uid]', spec.study_uid);
  await Promise.all([page.waitForNavigation(), page.click('#baseline-form button')]);
  facts.baseline_flashes = await flashes(page);

  // 4. Another: echo the destination (its button in the outbox row).
  const row = `section#outbox tr[data-destination="${spec.destination}"]`;
  await Promise.all([
    page.waitForNavigation(),
    page.click(`${row} form[action="/actions/echo"] button`),
  ]);
  facts.echo_flashes = await flashes(page);

  // 5. Retry deliveries now, when the row offers it.
  const retry = await page.$(`${row} form[action="/actions/retry-deliveries"] button`);
  if (retry) {
    await Promise.all([page.waitForNavigation(), retry.click()]);
    facts.retry_flashes = await flashes(page);
  }
  // The exporter's round for the destination ends when no waiting row is due any more
  // (the row's next try is later than the page's time); cancel after it.
  for (let i = 0; i < 60; i += 1) {
    await page.goto(spec.base + '/');
    const nextTry = await page.$eval(`${row} td:nth-last-child(2)`, (c) => c.innerText.trim());
    const now = await page.$eval('header div', (d) => d.innerText.match(/\((.*?)\)/)[1]);
    if (nextTry !== '-' && nextTry > now) break;
    await page.waitForTimeout(500);
  }
  // 6. Cancel the destination's deliveries (the button asks for confirmation): the job ends.
  page.once('dialog', (dialog) => { facts.cancel_dialog = dialog.message(); dialog.accept(); });
  await Promise.all([
    page.waitForNavigation(),
    page.click(`${row} form[action="/actions/cancel-deliveries"] button`),
  ]);
  facts.cancel_flashes = await flashes(page);
  await page.screenshot({ path: path.join(spec.out, 'dashboard-actions.png'), fullPage: true });
  await page.goto(spec.base + '/');
  facts.after_cancel_job_rows = await page.$$eval('section#jobs tr[id^=job-]', (rows) =>
    rows.map((r) => Array.from(r.cells).map((c) => c.innerText.trim())));
  facts.after_cancel_outbox_rows = await page.$$eval('section#outbox tr[data-destination]', (rows) =>
    rows.map((r) => ({ destination: r.dataset.destination,
      cells: Array.from(r.cells).map((c) => c.innerText.trim()) })));
  facts.outbox_headers = await page.$$eval('section#outbox th', (cells) =>
    cells.map((c) => c.innerText.trim()));

  // 7. A form posted from another origin is refused (CSRF): a page of a different site.
  const csrf = await page.request.post(spec.base + '/actions/retry-job', {
    form: { job_id: '1' }, headers: { Origin: 'http://evil.example' },
  });
  facts.cross_site_post_status = csrf.status();
}

const browser = await chromium.launch({ executablePath: spec.chromium, args: CHROMIUM_ARGS });
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(spec.timeout_s * 1000);
  try {
    await run(page);
  } catch (error) {
    problems.push(String(error && error.stack || error));
    fs.writeFileSync(path.join(spec.out, 'dashboard-failed.html'), await page.content());
  }
} finally {
  await browser.close();
}
fs.writeFileSync(resultPath, JSON.stringify({ facts, problems }, null, 2));
