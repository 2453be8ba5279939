// Browser checks of make viewer-test: the demo study in OHIF (and Orthanc's Web Viewer),
// driven in Debian's Chromium by playwright-core (the system browser: nothing downloaded).
//
//   node viewer_test/ohif_checks.mjs SPEC.json RESULT.json
//
// SPEC (written by viewer_test/test_viewer.py): origin of OHIF + DICOMweb, Orthanc's URL,
// the expected values read from the result files (viewer_test/expected.py), the output
// folder and the per-check timeout. Each check runs in a fresh browser context (a hung tab
// cannot spoil the next one), is bounded by the timeout, leaves a screenshot
// <check>.png and, when it fails, <check>.html (the page's DOM) in the output folder.
// RESULT: {checks: {name: {ok, seconds, facts, problems, console}}}: facts are what the
// page and OHIF's state (window.services, window.cornerstone, window.cornerstoneTools)
// showed; problems are the reasons for ok=false. The Python test asserts on them.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const resultPath = process.argv[3];
const require = createRequire(path.join(spec.node_modules, 'noop.js'));
const { chromium } = require('playwright-core');

const TIMEOUT_MS = spec.check_timeout_s * 1000;
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
// Console lines of OHIF's SEG/SR loaders that mean the object did not load as intended.
const LOADER_ERROR = /No imageId found|not rehydratable|SCOORD|ReferencedSOPSequence|Unable to generate tool state|segmentation|labelmap|\bSEG\b|\bSR\b|TypeError/i;
// Warnings that mean the same (OHIF logs a measurement it could not load as a warning).
const LOADER_WARNING = /No imageId found|not rehydratable|Unable to generate tool state/i;
// OHIF's SR import (@cornerstonejs/adapters MeasurementReport.generateToolState) skips a
// measurement group it cannot load with this warning, the group as its second argument.
const SKIPPED_GROUP = /^warning: Unable to generate tool state for/;
// The skipped groups of each check: {tracking, located} read from the warning's argument
// (tracking: the group's Tracking Identifier; located: whether it holds an SCOORD/SCOORD3D).
const skippedGroups = new Map();
function describeSkippedGroup(message) {
  const group = message.args()[1];
  if (!group) return Promise.resolve({ tracking: null, located: null });
  return group.evaluate((g) => {
    const items = [].concat(g.ContentSequence || []);
    const code = (item) => [].concat(item.ConceptNameCodeSequence || [])[0]?.CodeValue;
    return {
      tracking: items.find((item) => code(item) === '112039')?.TextValue ?? null,
      located: items.some((item) => item.ValueType === 'SCOORD' || item.ValueType === 'SCOORD3D'),
    };
  }).catch((error) => ({ tracking: null, located: null, error: error.message }));
}
const loaderErrors = (lines) => lines.filter((line) =>
  ((line.startsWith('error') || line.startsWith('pageerror')) && LOADER_ERROR.test(line))
  || (line.startsWith('warning') && LOADER_WARNING.test(line)));

const results = { checks: {} };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class CheckFailed extends Error {}

function bounded(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckFailed(`${what}: no result within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// The page a check ends on (its screenshot), when the check opened a second one.
const lastPage = new WeakMap();

// Record a page's console errors and warnings, page errors and requests into the check's
// record (a looping loader logs thousands of lines: keep the first 500, count them all).
function watch(page, record) {
  page.setDefaultTimeout(Math.min(TIMEOUT_MS, 30000));
  const keep = (line) => { record.console_total += 1; if (record.console.length < 500) record.console.push(line.slice(0, 500)); };
  const skipped = skippedGroups.get(record);
  page.on('console', (message) => {
    if (message.type() !== 'error' && message.type() !== 'warning') return;
    const line = `${message.type()}: ${message.text()}`;
    keep(line);
    if (SKIPPED_GROUP.test(line)) skipped.push(describeSkippedGroup(message));
  });
  page.on('pageerror', (error) => keep(`pageerror: ${error.message}`));
  page.on('request', () => { record.requests += 1; });
}

async function runCheck(browser, name, body) {
  const started = Date.now();
  const record = { ok: false, seconds: 0, facts: {}, problems: [], console: [], console_total: 0, requests: 0 };
  results.checks[name] = record;
  let context;
  let page;
  try {
    context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
    page = await context.newPage();
    skippedGroups.set(record, []);
    watch(page, record);
    await bounded(body(page, record), TIMEOUT_MS, name);
  } catch (error) {
    record.problems.push(error instanceof CheckFailed ? error.message : `${error.name}: ${error.message}`.slice(0, 3000));
  }
  const errors = loaderErrors(record.console);
  record.facts.loader_errors = errors.slice(0, 20);
  record.facts.loader_error_count = errors.length;
  record.seconds = (Date.now() - started) / 1000;
  page = lastPage.get(record) || page;
  if (page) {
    await bounded(page.screenshot({ path: path.join(spec.out_dir, `${name}.png`), timeout: 15000 }), 20000, 'screenshot')
      .catch((error) => record.problems.push(`screenshot: ${error.message}`));
  }
  record.ok = record.problems.length === 0;
  if (!record.ok && page) {
    await bounded(page.content(), 15000, 'page HTML')
      .then((html) => fs.writeFileSync(path.join(spec.out_dir, `${name}.html`), html))
      .catch(() => {});
  }
  if (context) await bounded(context.close(), 15000, 'close').catch(() => {});
  record.console = record.console.slice(0, 60);
  fs.writeFileSync(resultPath, JSON.stringify(results, null, 2));
}

// --- OHIF helpers --------------------------------------------------------------------

async function openStudy(page, expectedSeries) {
  // OHIF's first-visit tour covers the page with a modal overlay whenever it starts (late on
  // a busy machine): end it as a user would, before any click it would swallow.
  await page.addLocatorHandler(page.getByText('Skip all', { exact: true }), (skip) => skip.click());
  await page.goto(`${spec.origin}/viewer?StudyInstanceUIDs=${spec.expected.study_uid}`);
  await page.waitForFunction(
    (count) => window.services && window.services.displaySetService.getActiveDisplaySets().length >= count,
    expectedSeries, { timeout: TIMEOUT_MS },
  );
  // The hanging protocol's first viewport must have its image before a thumbnail is
  // dropped into it (dropping earlier races OHIF's own viewport set-up).
  await page.waitForFunction(() => {
    const grid = window.services.viewportGridService;
    const viewport = window.cornerstone?.getEnabledElementByViewportId?.(grid.getActiveViewportId())?.viewport;
    return Boolean(viewport && viewport.getCurrentImageId && viewport.getCurrentImageId());
  }, null, { timeout: TIMEOUT_MS });
}

function thumbnail(page, description) {
  return page
    .locator('[data-cy="study-browser-thumbnail"], [data-cy="study-browser-thumbnail-no-image"]')
    .filter({ has: page.locator('[data-cy="series-description-label"]', { hasText: description }) })
    .first();
}

// Open a series from the study browser by double-clicking its thumbnail, as a reader does.
// When the pointer cannot reach it in time (on a loaded machine the study browser's rows are
// still moving as thumbnails arrive, or something covers them), the same double-click is
// delivered to the element itself and the reason is kept in the record; a page that does not
// answer at all (a hung tab) still fails the check.
async function openThumbnail(page, record, description) {
  const target = thumbnail(page, description);
  try {
    await target.dblclick({ timeout: 20000 });
  } catch (error) {
    if (error?.name !== 'TimeoutError') throw error;
    (record.facts.pointer_retries ||= []).push(`${description}: ${error.message.slice(-1500)}`);
    await target.dispatchEvent('dblclick', {}, { timeout: 20000 });
  }
}

// Series shown in the active viewport: the display sets OHIF put there (a SEG display set
// stands for itself and the series it is drawn over) and the series of the image that
// cornerstone renders now.
async function activeViewportSeries(page) {
  return page.evaluate(() => {
    const { viewportGridService, displaySetService } = window.services;
    const viewportId = viewportGridService.getActiveViewportId();
    const viewport = viewportGridService.getState().viewports.get(viewportId);
    const shown = [];
    for (const uid of viewport?.displaySetInstanceUIDs || []) {
      const ds = displaySetService.getDisplaySetByUID(uid);
      shown.push({ SeriesInstanceUID: ds?.SeriesInstanceUID, Modality: ds?.Modality });
      const under = ds?.referencedDisplaySetInstanceUID && displaySetService.getDisplaySetByUID(ds.referencedDisplaySetInstanceUID);
      if (under) shown.push({ SeriesInstanceUID: under.SeriesInstanceUID, Modality: under.Modality, under: ds.Modality });
    }
    const imageId = window.cornerstone.getEnabledElementByViewportId(viewportId)?.viewport?.getCurrentImageId?.() || '';
    const rendered = /\/series\/([0-9.]+)\//.exec(imageId)?.[1] || null;
    return { shown, rendered_series: rendered };
  });
}

async function waitForViewportSeries(page, seriesUid) {
  await page.waitForFunction((uid) => {
    const grid = window.services.viewportGridService;
    const viewport = grid.getState().viewports.get(grid.getActiveViewportId());
    const shown = (viewport?.displaySetInstanceUIDs || []).map((d) => window.services.displaySetService.getDisplaySetByUID(d)?.SeriesInstanceUID);
    const cs = window.cornerstone?.getEnabledElementByViewportId?.(grid.getActiveViewportId())?.viewport;
    return shown.includes(uid) && Boolean(cs?.getCurrentImageId?.());
  }, seriesUid, { timeout: TIMEOUT_MS });
}

const near = (a, b, tolerance) => Math.abs(a - b) <= tolerance;

// --- the checks ----------------------------------------------------------------------

async function checkAdcWindow(page, record) {
  const adc = spec.expected.adc;
  await openStudy(page, spec.min_series);
  await openThumbnail(page, record, adc.description);
  await waitForViewportSeries(page, adc.series_uid);
  await sleep(1000);
  const shown = await page.evaluate(() => {
    const grid = window.services.viewportGridService;
    const viewport = window.cornerstone.getEnabledElementByViewportId(grid.getActiveViewportId()).viewport;
    const { voiRange } = viewport.getProperties();
    const wl = window.cornerstone.utilities.windowLevel.toWindowLevel(voiRange.lower, voiRange.upper);
    const overlay = document.querySelector('[data-cy="viewport-overlay-bottom-left"]')?.innerText || '';
    return { voiRange, windowWidth: wl.windowWidth, windowCenter: wl.windowCenter, overlay };
  });
  record.facts = { ...record.facts, ...shown, file_window: adc.window };
  if (!near(shown.windowCenter, adc.window.center, 1) || !near(shown.windowWidth, adc.window.width, 1)) {
    record.problems.push(`viewport window C ${shown.windowCenter} W ${shown.windowWidth}, file C ${adc.window.center} W ${adc.window.width}`);
  }
  const match = /W:\s*([\d.]+)\s*L:\s*([\d.]+)/.exec(shown.overlay);
  if (!match || !near(+match[1], adc.window.width, 1) || !near(+match[2], adc.window.center, 1)) {
    record.problems.push(`viewport overlay says "${shown.overlay.replace(/\s+/g, ' ')}", file W ${adc.window.width} L ${adc.window.center}`);
  }
}

async function checkSeg(page, record, seg) {
  const computedB = spec.expected.computed_b;
  await openStudy(page, spec.min_series);
  const requestsBefore = record.requests;
  const clicked = Date.now();
  await openThumbnail(page, record, seg.description);
  // OHIF asks before it opens a SEG in some set-ups: answer as a reader would.
  const yes = page.getByRole('button', { name: /^(Yes|Load|Open)$/ });
  const segLoaded = page.waitForFunction((count) => {
    const segs = window.services.segmentationService.getSegmentations();
    return segs.some((s) => Object.values(s.segments || {}).filter(Boolean).length === count);
  }, seg.segments.length, { timeout: TIMEOUT_MS });
  const prompt = yes.first().click({ timeout: 8000 }).catch(() => {});
  await segLoaded;
  await prompt;
  record.facts.load_seconds = (Date.now() - clicked) / 1000;
  await sleep(2000); // let the labelmap render before the screenshot and the voxel counts
  record.facts.requests_while_loading = record.requests - requestsBefore;
  const state = await page.evaluate((label) => {
    const { segmentationService, viewportGridService } = window.services;
    const viewportId = viewportGridService.getActiveViewportId();
    const segmentation = segmentationService.getSegmentations().find((s) => s.label === label) || segmentationService.getSegmentations()[0];
    const representations = segmentationService.getSegmentationRepresentations(viewportId);
    // Voxels per segment index in the loaded labelmap images (all layers OHIF split
    // overlapping segments into), and voxels where a segment shares a pixel with another
    // visible segment of any segmentation shown in this viewport (it would be covered).
    const layersOf = (segmentationId) => {
      const cs = window.cornerstoneTools.segmentation.state.getSegmentation(segmentationId);
      const labelmap = cs?.representationData?.Labelmap || {};
      if (labelmap.labelmaps) return Object.values(labelmap.labelmaps).map((l) => l.imageIds || []);
      return [labelmap.imageIds || []];
    };
    const counts = {};
    const pixelOwners = new Map(); // `${referencedIndex}:${pixel}` -> [[segmentationId, index]]
    for (const rep of representations) {
      for (const imageIds of layersOf(rep.segmentationId)) {
        imageIds.forEach((imageId, slice) => {
          const image = window.cornerstone.cache.getImage(imageId);
          if (!image) return;
          const data = image.getPixelData();
          for (let p = 0; p < data.length; p += 1) {
            const value = data[p];
            if (!value) continue;
            if (rep.segmentationId === segmentation.segmentationId) counts[value] = (counts[value] || 0) + 1;
            if (rep.visible === false || rep.segments?.[value]?.visible === false) continue;
            const key = `${slice}:${p}`;
            const owners = pixelOwners.get(key) || [];
            owners.push([rep.segmentationId, value]);
            pixelOwners.set(key, owners);
          }
        });
      }
    }
    const shared = {};
    for (const owners of pixelOwners.values()) {
      if (owners.length < 2) continue;
      for (const [segId, value] of owners) if (segId === segmentation.segmentationId) shared[value] = (shared[value] || 0) + 1;
    }
    const rep = representations.find((r) => r.segmentationId === segmentation.segmentationId);
    const segments = Object.values(segmentation.segments || {}).filter(Boolean).map((s) => ({
      index: s.segmentIndex,
      label: s.label,
      color: Array.from(segmentationService.getSegmentColor(viewportId, segmentation.segmentationId, s.segmentIndex) || []).slice(0, 3),
      visible: rep ? rep.segments?.[s.segmentIndex]?.visible !== false && rep.visible !== false : false,
      voxels: counts[s.segmentIndex] || 0,
      voxels_shared_with_other_visible_segments: shared[s.segmentIndex] || 0,
    }));
    return { label: segmentation.label, segmentations_in_viewport: representations.map((r) => r.label), segments };
  }, seg.description);
  record.facts.viewer = state;
  const viewport = await activeViewportSeries(page);
  record.facts.viewport = viewport;
  const background = viewport.shown.filter((s) => s.Modality !== 'SEG').map((s) => s.SeriesInstanceUID);
  if (!background.includes(computedB.series_uid) || viewport.rendered_series !== computedB.series_uid) {
    record.problems.push(`the SEG is shown over ${JSON.stringify(background)} (rendered: ${viewport.rendered_series}), not the computed-b series ${computedB.series_uid}`);
  }
  if (JSON.stringify(seg.referenced_series) !== JSON.stringify([computedB.series_uid])) {
    record.problems.push(`the SEG references ${seg.referenced_series.length} series, not only the computed-b series`);
  }
  // Whether the ADC classes show in their colours: kept apart from whether the SEG loads.
  const classProblems = [];
  record.facts.class_problems = classProblems;
  for (const expected of seg.segments) {
    const found = state.segments.find((s) => s.index === expected.number);
    if (!found) { record.problems.push(`segment ${expected.number} "${expected.label}" not in the viewer`); continue; }
    if (found.label !== expected.label) record.problems.push(`segment ${expected.number} labelled "${found.label}", file "${expected.label}"`);
    if (found.voxels !== expected.voxels) record.problems.push(`segment ${expected.number} "${expected.label}": ${found.voxels} voxels in the viewer, ${expected.voxels} in the file`);
    if (found.color.some((c, i) => !near(c, expected.rgb[i], 3))) record.problems.push(`segment ${expected.number} "${expected.label}" colour ${found.color}, file ${expected.rgb}`);
    if (expected.is_adc_class && expected.voxels > 0) {
      if (!found.visible) classProblems.push(`ADC class segment "${expected.label}" hidden`);
      if (found.color.some((c, i) => !near(c, expected.rgb[i], 3))) classProblems.push(`ADC class segment "${expected.label}" shown in ${found.color}, file ${expected.rgb}`);
      if (found.voxels === 0) classProblems.push(`ADC class segment "${expected.label}" has no voxels in the viewer`);
      if (found.voxels_shared_with_other_visible_segments > 0) {
        classProblems.push(`ADC class segment "${expected.label}": ${found.voxels_shared_with_other_visible_segments} of ${found.voxels} voxels also belong to another visible segment (the class colour is covered)`);
      }
    }
  }
  // Show the slice where most of the SEG's segments meet (the screenshot then shows the
  // classes in their colours), as a reader scrolls to it.
  record.facts.shown_slice = await page.evaluate(async (label) => {
    const { segmentationService, viewportGridService } = window.services;
    const segmentation = segmentationService.getSegmentations().find((s) => s.label === label) || segmentationService.getSegmentations()[0];
    const labelmap = window.cornerstoneTools.segmentation.state.getSegmentation(segmentation.segmentationId).representationData.Labelmap;
    let best = { index: -1, kinds: 0, voxels: 0 };
    labelmap.imageIds.forEach((imageId, index) => {
      const data = window.cornerstone.cache.getImage(imageId)?.getPixelData() || [];
      const kinds = new Set();
      let voxels = 0;
      for (const v of data) if (v) { kinds.add(v); voxels += 1; }
      if (kinds.size > best.kinds || (kinds.size === best.kinds && voxels > best.voxels)) best = { index, kinds: kinds.size, voxels };
    });
    const viewport = window.cornerstone.getEnabledElementByViewportId(viewportGridService.getActiveViewportId()).viewport;
    const target = labelmap.referencedImageIds?.[best.index];
    const position = viewport.getImageIds ? viewport.getImageIds().indexOf(target) : -1;
    if (position >= 0 && viewport.setImageIdIndex) await viewport.setImageIdIndex(position);
    return { ...best, viewport_index: position };
  }, seg.description).catch((error) => ({ error: error.message }));
  await sleep(1500);
  // The segmentation panel lists the segments by label.
  await page.locator('[data-cy="panelSegmentation-btn"]').click();
  await sleep(1500);
  const panel = await page.locator('#root').innerText({ timeout: 10000 });
  const missing = seg.segments.filter((s) => !panel.includes(s.label)).map((s) => s.label);
  record.facts.labels_missing_from_panel = missing;
  if (missing.length) record.problems.push(`segmentation panel does not list ${missing.length} segment(s): ${missing.slice(0, 4).join('; ')}`);
  if (record.facts.load_seconds > spec.seg_load_limit_s) record.problems.push(`SEG took ${record.facts.load_seconds} s to load`);
  const errors = loaderErrors(record.console);
  if (errors.length) record.problems.push(`${errors.length} console error(s) while loading the SEG, first: ${errors[0].slice(0, 300)}`);
}

async function checkSr(page, record, sr, name) {
  await openStudy(page, spec.min_series);
  await openThumbnail(page, record, sr.description);
  await page.waitForFunction((uid) => {
    const ds = window.services.displaySetService.getActiveDisplaySets().find((d) => d.SeriesInstanceUID === uid);
    return ds && ds.isLoaded;
  }, sr.series_uid, { timeout: TIMEOUT_MS });
  await sleep(3000);
  const state = await page.evaluate((uid) => {
    const ds = window.services.displaySetService.getActiveDisplaySets().find((d) => d.SeriesInstanceUID === uid);
    return {
      isRehydratable: ds.isRehydratable,
      isHydrated: Boolean(ds.isHydrated),
      measurements: (ds.measurements || []).map((m) => ({
        tracking: m.TrackingIdentifier,
        volume: (m.labels || []).find((l) => l.label === 'Volume')?.value,
        coords: (m.coords || []).length,
        graphicType: m.graphicType,
      })),
    };
  }, sr.series_uid);
  record.facts.sr = state;
  const errorText = await page.getByText('Something went wrong').count();
  if (errorText) record.problems.push('OHIF shows "Something went wrong"');
  const volumeOf = (text) => parseFloat(String(text || '').split(' ')[0]);
  for (const lesion of spec.expected.lesions) {
    const found = state.measurements.find((m) => new RegExp(`^Lesion ${lesion.label}\\b`).test(m.tracking || ''));
    if (!found) { record.problems.push(`no SR measurement for lesion ${lesion.label}`); continue; }
    if (!found.coords) record.problems.push(`lesion ${lesion.label}: no SCOORD/SCOORD3D, cannot navigate to it`);
    if (!near(volumeOf(found.volume), lesion.volume_ml, 0.006)) record.problems.push(`lesion ${lesion.label}: volume "${found.volume}", measurements.json ${lesion.volume_ml.toFixed(3)} ml`);
  }
  // Navigate through the SR's measurements with the viewport's arrows, as a reader does,
  // and read the volumes the viewport writes next to each lesion.
  const seen = new Set();
  const arrows = page.locator('[data-cy="viewport-action-arrows-right"]');
  if (await arrows.count()) {
    for (let step = 0; step < state.measurements.length; step += 1) {
      const text = await page.evaluate(() => [...document.querySelectorAll('[data-cy="viewport-pane"] svg.svg-layer text')].map((t) => t.textContent).join('\n'));
      for (const m of text.matchAll(/Volume:\s*([\d.]+)\s*ml/g)) seen.add(m[1]);
      await arrows.first().click();
      await sleep(400);
    }
  } else {
    record.problems.push('no measurement navigation arrows in the SR viewport');
  }
  record.facts.volumes_seen_while_navigating = [...seen];
  const unseen = spec.expected.lesions.filter((l) => ![...seen].some((v) => near(+v, l.volume_ml, 0.006)));
  if (unseen.length) record.problems.push(`navigating the SR never showed the volume of lesion(s) ${unseen.map((l) => l.label).join(', ')}`);
  // The SR viewport after navigating (the check's own screenshot, <name>.png, shows the
  // measurements loaded into the panel).
  await page.screenshot({ path: path.join(spec.out_dir, `${name}-viewport.png`), timeout: 15000 }).catch(() => {});
  const viewportErrors = loaderErrors(record.console);
  if (viewportErrors.length) record.problems.push(`${viewportErrors.length} console error(s) from the SR viewport, first: ${viewportErrors[0].slice(0, 300)}`);
  // Then load the SR's measurements into the measurement panel as a reader does, and read
  // the panel: kept apart from the viewport's problems.
  const consoleBefore = record.console.length;
  const panelProblems = [];
  record.facts.panel_problems = panelProblems;
  // A report OHIF calls not rehydratable (no cornerstone tool adapter matches its groups)
  // stays read-only: OHIF offers no way into the panel, so neither does the test.
  if (!state.isRehydratable) {
    panelProblems.push('OHIF 3.13 takes the SR as read-only (isRehydratable false): its measurements cannot be loaded into the measurement panel');
    return;
  }
  // OHIF 3.13 asks in the SR viewport "Do you want to continue tracking measurements for this
  // study?" as soon as a rehydratable report is shown (its SR badge has no LOAD button); the
  // question goes away, for good, once the reader navigates the SR viewport (as above). So:
  // the reader opens the study again, opens the SR and answers Yes.
  await page.close();
  page = await page.context().newPage();
  watch(page, record);
  lastPage.set(record, page);
  await openStudy(page, spec.min_series);
  await openThumbnail(page, record, sr.description);
  const prompt = page.getByText(/tracking measurements for this study/).first();
  record.facts.hydration_prompt = await prompt.innerText({ timeout: 15000 }).catch(() => null);
  if (record.facts.hydration_prompt === null) {
    panelProblems.push('OHIF did not offer to load the SR\'s measurements (no prompt in the SR viewport)');
    return;
  }
  const answered = await page.getByRole('button', { name: /^Yes$/ }).first().click({ timeout: 10000 })
    .then(() => true, (error) => { panelProblems.push(`could not answer Yes to OHIF's prompt: ${error.message.slice(0, 200)}`); return false; });
  if (!answered) return;
  await page.waitForFunction((uid) => window.services.displaySetService.getActiveDisplaySets()
    .find((d) => d.SeriesInstanceUID === uid)?.isHydrated, sr.series_uid, { timeout: 20000 })
    .catch(() => panelProblems.push('the SR was not loaded 20 s after answering Yes to OHIF\'s prompt'));
  await sleep(2000);
  await page.locator('[data-cy="trackedMeasurements-btn"]').click().catch(() => {});
  await sleep(1500);
  const panel = await page.locator('[data-cy="trackedMeasurements-panel"]').first().innerText({ timeout: 10000 }).catch(() => '');
  record.facts.measurement_panel = panel.slice(0, 4000);
  const rows = panel.split(/\n(?=\d+\n)/);
  const lesionRows = spec.expected.lesions.map((lesion) => {
    const row = rows.find((r) => new RegExp(`Lesion ${lesion.label}\\b`).test(r));
    const volumes = row ? [...row.matchAll(/([\d.]+)\s*ml/g)].map((m) => +m[1]) : [];
    return { lesion: lesion.label, listed: Boolean(row), volume_shown: volumes.some((v) => near(v, lesion.volume_ml, 0.06)) };
  });
  record.facts.panel_lesions = lesionRows;
  const unlisted = lesionRows.filter((r) => !r.listed).map((r) => r.lesion);
  const noVolume = lesionRows.filter((r) => r.listed && !r.volume_shown).map((r) => r.lesion);
  if (unlisted.length) panelProblems.push(`the measurements panel does not name lesion(s) ${unlisted.join(', ')} (its rows: ${rows.slice(1, 4).map((r) => r.replace(/\s+/g, ' ')).join(' / ')} ...)`);
  if (noVolume.length) panelProblems.push(`the measurements panel shows no volume for lesion(s) ${noVolume.join(', ')}`);
  // Every location group (TID 1410, an Image Region) loads; OHIF skips the groups without
  // an image region (the numbers, tracked at their finding's location) with a warning.
  // Those skips, and only those, are expected: compare them with the file's groups.
  const skippedAll = await Promise.all(skippedGroups.get(record) || []);
  record.facts.groups_not_loaded = skippedAll;
  const unlocatedInFile = sr.groups.filter((g) => !g.located).map((g) => g.tracking).sort();
  const skippedNames = skippedAll.map((g) => g.tracking).sort();
  const locatedSkipped = skippedAll.filter((g) => g.located !== false);
  if (locatedSkipped.length) panelProblems.push(`OHIF could not load ${locatedSkipped.length} location group(s): ${locatedSkipped.map((g) => g.tracking).join('; ')}`);
  if (JSON.stringify(skippedNames) !== JSON.stringify(unlocatedInFile)) {
    panelProblems.push(`OHIF skipped the groups [${skippedNames.join('; ')}], the file's groups without an image region are [${unlocatedInFile.join('; ')}]`);
  }
  const locatedInFile = sr.groups.filter((g) => g.located).length;
  record.facts.panel_rows = rows.length - 1;
  if (rows.length - 1 !== locatedInFile) panelProblems.push(`the measurements panel lists ${rows.length - 1} row(s), the report has ${locatedInFile} location group(s)`);
  const panelErrors = loaderErrors(record.console.slice(consoleBefore)).filter((line) => !SKIPPED_GROUP.test(line));
  if (panelErrors.length) panelProblems.push(`${panelErrors.length} console error(s) while loading the SR's measurements, first: ${panelErrors[0].slice(0, 300)}`);
}

async function checkOrthancWebViewer(page, record, series) {
  const url = `${spec.orthanc}/web-viewer/app/viewer.html?series=${series.orthanc_id}`;
  const decoded = [];
  page.on('response', (response) => {
    if (response.url().includes('/web-viewer/instances/')) decoded.push(response.status());
  });
  await page.goto(url);
  await page.waitForFunction(() => {
    const cs = window.cornerstone;
    const elements = cs && cs.getEnabledElements ? cs.getEnabledElements() : [];
    return elements.some((e) => e.image);
  }, null, { timeout: TIMEOUT_MS });
  await sleep(1500);
  const image = await page.evaluate(() => {
    const element = window.cornerstone.getEnabledElements().find((e) => e.image);
    return { imageId: element.image.imageId, rows: element.image.rows, columns: element.image.columns, windowWidth: element.viewport.voi.windowWidth, windowCenter: element.viewport.voi.windowCenter };
  });
  record.facts = { ...record.facts, image, decoded_responses: decoded.length, failed_responses: decoded.filter((s) => s >= 400).length };
  if (!series.sizes.some(([rows, columns]) => rows === image.rows && columns === image.columns)) {
    record.problems.push(`image ${image.columns}x${image.rows}, the series' files are ${series.sizes.map(([r, c]) => `${c}x${r}`).join(', ')}`);
  }
  if (decoded.some((s) => s >= 400)) record.problems.push('the Web Viewer failed to decode some instances');
  if (!decoded.length) record.problems.push('the Web Viewer fetched no decoded instance');
  if (series.window && (!near(image.windowCenter, series.window.center, 1) || !near(image.windowWidth, series.window.width, 1))) {
    record.problems.push(`window C ${image.windowCenter} W ${image.windowWidth}, file C ${series.window.center} W ${series.window.width}`);
  }
}

// The reader's correction, made by OHIF itself: the lesion SEG is loaded, one lesion's
// segment removed (segmentationService.removeSegment clears its voxels), a 3x3x3 region
// added as a new segment in the middle of the body on the slice where the largest kept
// lesion is, and OHIF's own SEG writer (the 'generateSegmentation' command: dcmjs through
// @cornerstonejs/adapters, what "Export > DICOM SEG" runs) makes the SEG, which OHIF's
// DICOMweb data source stores (STOW-RS) into Orthanc. The test then forwards it to the node.
async function checkCorrection(page, record, correction) {
  await openStudy(page, spec.min_series);
  await openThumbnail(page, record, correction.seg_description);
  // "Do you want to open this Segmentation?": yes, into the segmentation panel for editing.
  await page.getByRole('button', { name: /^(Yes|Load|Open)$/ }).first().click({ timeout: 8000 }).catch(() => {});
  await page.waitForFunction((count) => window.services.segmentationService.getSegmentations()
    .some((s) => Object.values(s.segments || {}).filter(Boolean).length === count), correction.segments, { timeout: TIMEOUT_MS });
  await sleep(1000);
  const facts = await page.evaluate(async ({ remove, label }) => {
    const { segmentationService } = window.services;
    const segmentation = segmentationService.getSegmentations()[0];
    const segmentationId = segmentation.segmentationId;
    const labelmap = window.cornerstoneTools.segmentation.state.getSegmentation(segmentationId).representationData.Labelmap;
    const pixels = (index) => window.cornerstone.cache.getImage(labelmap.imageIds[index]).getPixelData();
    const count = () => {
      const counts = {};
      labelmap.imageIds.forEach((_, index) => { for (const v of pixels(index)) if (v) counts[v] = (counts[v] || 0) + 1; });
      return counts;
    };
    const before = count();
    segmentationService.removeSegment(segmentationId, remove);
    const afterRemove = count();
    const added = Math.max(...Object.keys(before).map(Number)) + 1;
    segmentationService.addSegment(segmentationId, { segmentIndex: added });
    segmentationService.setSegmentLabel(segmentationId, added, label);
    // The slice with the most voxels of the largest kept segment; the region in its middle.
    const largest = Object.entries(afterRemove).sort((a, b) => b[1] - a[1])[0][0];
    let slice = 0;
    let most = -1;
    labelmap.imageIds.forEach((_, index) => {
      let n = 0;
      for (const v of pixels(index)) if (v === Number(largest)) n += 1;
      if (n > most) { most = n; slice = index; }
    });
    const image = window.cornerstone.cache.getImage(labelmap.imageIds[slice]);
    const row0 = Math.floor(image.rows / 2) - 1;
    const column0 = Math.floor(image.columns / 2) - 1;
    let painted = 0;
    for (let k = slice; k < slice + 3; k += 1) {
      const data = pixels(k);
      for (let r = row0; r < row0 + 3; r += 1) {
        for (let c = column0; c < column0 + 3; c += 1) {
          if (data[r * image.columns + c] === 0) { data[r * image.columns + c] = added; painted += 1; }
        }
      }
    }
    window.cornerstoneTools.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(segmentationId);
    const after = count();
    // OHIF's writer needs the referenced images in its cache, as after scrolling through.
    await Promise.all(labelmap.referencedImageIds.map((id) => window.cornerstone.imageLoader.loadAndCacheImage(id)));
    const generated = await window.commandsManager.runCommand('generateSegmentation', {
      segmentationId, options: { SeriesDescription: 'Tumour load, reader-corrected in OHIF' },
    });
    const dataset = generated.dataset;
    const [dataSource] = window.extensionManager.getActiveDataSource();
    await dataSource.store.dicom(dataset);
    return {
      removed_segment: remove,
      removed_voxels: before[remove] || 0,
      voxels_left_in_removed_segment: afterRemove[remove] || 0,
      added_segment: added,
      added_voxels: painted,
      added_on_slice: slice,
      kept_voxels: Object.values(after).reduce((a, b) => a + b, 0),
      reader_seg_uid: dataset.SOPInstanceUID,
      reader_seg: {
        SegmentationType: dataset.SegmentationType,
        NumberOfFrames: dataset.NumberOfFrames,
        segments: (dataset.SegmentSequence || []).map((item) => item.SegmentLabel),
        ReferencedSeries: (dataset.ReferencedSeriesSequence ? [].concat(dataset.ReferencedSeriesSequence) : []).map((item) => item.SeriesInstanceUID),
        TransferSyntaxUID: dataset._meta?.TransferSyntaxUID?.Value?.[0],
      },
    };
  }, { remove: correction.remove_segment, label: 'Reader: added region' });
  Object.assign(record.facts, facts);
  if (facts.removed_voxels === 0) record.problems.push(`segment ${correction.remove_segment} had no voxels to remove`);
  if (facts.voxels_left_in_removed_segment) record.problems.push(`${facts.voxels_left_in_removed_segment} voxels left in the removed segment`);
  if (facts.added_voxels !== 27) record.problems.push(`the added region took ${facts.added_voxels} of 27 voxels (the middle of the slice is tumour already)`);
  const errors = loaderErrors(record.console);
  if (errors.length) record.problems.push(`${errors.length} console error(s) while editing/writing the SEG, first: ${errors[0].slice(0, 300)}`);
}

// --- run -----------------------------------------------------------------------------

const browser = await chromium.launch({ executablePath: spec.chromium, args: CHROMIUM_ARGS, headless: true });
try {
  const only = spec.only ? new Set(spec.only) : null;
  const wanted = (name) => !only || only.has(name);
  if (wanted('adc_window')) await runCheck(browser, 'adc_window', checkAdcWindow);
  for (const [i, seg] of spec.expected.segs.entries()) {
    const name = `seg${i + 1}`;
    if (wanted(name)) await runCheck(browser, name, (page, record) => checkSeg(page, record, seg));
  }
  for (const [i, sr] of spec.expected.srs.entries()) {
    const name = `sr${i + 1}`;
    if (wanted(name)) await runCheck(browser, name, (page, record) => checkSr(page, record, sr, name));
  }
  if (spec.correction && wanted('correction')) {
    await runCheck(browser, 'correction', (page, record) => checkCorrection(page, record, spec.correction));
  }
  for (const series of spec.web_viewer_series || []) {
    const name = `orthanc_${series.name}`;
    if (wanted(name)) await runCheck(browser, name, (page, record) => checkOrthancWebViewer(page, record, series));
  }
} finally {
  fs.writeFileSync(resultPath, JSON.stringify(results, null, 2));
  await bounded(browser.close(), 20000, 'browser close').catch(() => {});
}
