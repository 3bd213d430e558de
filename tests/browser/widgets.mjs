// End-to-end widget check in a real browser: for each notebook, open it in JupyterLab (headless
// Chromium), run every cell, set a slider through its editable readout as a user would, and assert that
// the widget's accuracy readout and its plot were redrawn for each new value — for γ, that the accuracy
// itself changed — timing each redraw from the key press. Screenshots before/after; readings in results.json.
//
//   LAB_URL=http://127.0.0.1:8890 TOKEN=... OUT=runs/browser node tests/browser/widgets.mjs
import { chromium } from "playwright-core";
import { mkdirSync, writeFileSync } from "node:fs";

const LAB_URL = process.env.LAB_URL;
const TOKEN = process.env.TOKEN;
const OUT = process.env.OUT || "runs/browser";
const RUN_TIMEOUT_MS = Number(process.env.RUN_TIMEOUT_MS || 300_000);
if (!LAB_URL || !TOKEN) throw new Error("set LAB_URL and TOKEN (scripts/browser_check.sh does)");
mkdirSync(OUT, { recursive: true });

// notebook, the slider's description, the values to set in turn with the text the readout must then show, and
// whether the accuracies read at those values must differ (the γ explorer opens on the task γ moves most, so
// γ = 0 and γ = 4 must give different numbers: proof that the callback sampled and scored, not only redrew)
const CHECKS = [
  { notebook: "notebooks/03_generators.ipynb", slider: "PC1 (s.d.)", steps: [{ value: "3", expect: "PC1 +3" }] },
  { notebook: "notebooks/05_hyperldm.ipynb", slider: "γ", distinctAccuracy: true,
    steps: [{ value: "0", expect: "γ = 0:" }, { value: "4", expect: "γ = 4:" }] },
];

const accuracyOf = (text) => Number((text.match(/accuracy ([\d.]+)%/) || [])[1]);

async function errorOutputs(page) {
  return page.$$eval(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
    (nodes) => nodes.map((n) => n.textContent).filter((t) => t.includes("Traceback") || t.includes("Error")));
}

async function checkNotebook(page, { notebook, slider, steps, distinctAccuracy }) {
  const name = notebook.split("/").pop().replace(".ipynb", "");
  // A workspace of its own (reset), so only this notebook is open and current.
  await page.goto(`${LAB_URL}/lab/workspaces/check-${name}/tree/${notebook}?reset&token=${TOKEN}`);
  // Wait for this notebook's kernel, then run every cell as Run > Run All Cells does.
  await page.waitForFunction((path) => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    return w && w.context && w.context.path === path && w.sessionContext && w.sessionContext.session
      && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === "idle";
  }, notebook, { timeout: 120_000 });
  // The command's promise settles when the last cell has run, so the clock starts before it.
  const start = Date.now();
  await page.evaluate(() => window.jupyterapp.commands.execute("notebook:run-all-cells"));
  // Done when no cell waits or runs ("[*]") and the last cell has a prompt number.
  await page.waitForFunction(() => {
    const prompts = Array.from(document.querySelectorAll(".jp-CodeCell .jp-InputPrompt")).map((p) => p.textContent);
    return prompts.length > 0 && !prompts.some((p) => p.includes("*")) && /\[\d+\]/.test(prompts[prompts.length - 1]);
  }, null, { timeout: RUN_TIMEOUT_MS, polling: 1000 }).catch(async (e) => {
    throw new Error(`${notebook}: cells did not finish in ${RUN_TIMEOUT_MS / 1000} s; errors: ${(await errorOutputs(page)).join("\n")}\n${e}`);
  });
  const errors = await errorOutputs(page);
  if (errors.length) throw new Error(`${notebook}: a cell failed:\n${errors.join("\n")}`);
  const seconds = (Date.now() - start) / 1000;

  const box = page.locator(".widget-vbox").filter({ has: page.locator(".widget-label", { hasText: slider }) }).last();
  await box.scrollIntoViewIfNeeded();
  const readout = box.locator(".widget-html").first();
  const image = box.locator(".widget-output img").first();
  await image.waitFor({ timeout: 60_000 });
  const before = { text: (await readout.textContent()).trim(), image: await image.getAttribute("src") };
  await box.screenshot({ path: `${OUT}/${name}_before.png` });

  // Type each value into the slider's readout and press Enter, as a user setting it exactly would; time from
  // the key press to the new readout (the callback samples, scores and draws in between).
  const row = box.locator(".widget-slider").filter({ has: page.locator(".widget-label", { hasText: slider }) }).first();
  const sliderReadout = row.locator(".widget-readout");
  const readings = [];
  for (const { value, expect } of steps) {
    const previousImage = await image.getAttribute("src");
    await sliderReadout.click();
    await page.keyboard.press("ControlOrMeta+A");
    await page.keyboard.type(value);
    const pressed = Date.now();
    await page.keyboard.press("Enter");
    for (let waited = 0; !(await readout.textContent()).includes(expect); waited += 50) {
      if (waited > 120_000) {
        throw new Error(`${notebook}: after setting ${slider} = ${value} the readout still says "${(await readout.textContent()).trim()}"`);
      }
      await page.waitForTimeout(50);
    }
    // The redraw replaces the <img>, so poll through the locator rather than hold the old element.
    for (let waited = 0; (await image.getAttribute("src")) === previousImage; waited += 50) {
      if (waited > 60_000) throw new Error(`${notebook}: the plot was not redrawn after setting ${slider} = ${value}`);
      await page.waitForTimeout(50);
    }
    const redrawS = (Date.now() - pressed) / 1000;   // key press to new readout and new plot
    const text = (await readout.textContent()).trim();
    readings.push({ value, slider_shows: (await sliderReadout.textContent()).trim(), readout: text,
                    accuracy: accuracyOf(text), redraw_s: redrawS });
  }
  const after = { text: (await readout.textContent()).trim(), image: await image.getAttribute("src") };
  await box.screenshot({ path: `${OUT}/${name}_after.png` });
  if (before.text === after.text) throw new Error(`${notebook}: the readout did not change`);
  if (before.image === after.image) throw new Error(`${notebook}: the plot did not change`);
  if (distinctAccuracy && new Set(readings.map((r) => r.accuracy)).size < readings.length) {
    throw new Error(`${notebook}: the accuracy did not change across ${slider} = ${steps.map((s) => s.value).join(", ")}: `
      + readings.map((r) => r.readout).join(" | "));
  }
  return { notebook, slider, run_all_s: seconds, readout_before: before.text, readings,
           screenshots: [`${OUT}/${name}_before.png`, `${OUT}/${name}_after.png`] };
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const results = [];
let failed = false;
try {
  for (const check of CHECKS) {
    const page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
    try {
      const result = await checkNotebook(page, check);
      results.push(result);
      console.log(`[browser] ok ${check.notebook}: ${result.readout_before}  ->  `
        + result.readings.map((r) => `${r.readout} [${r.redraw_s.toFixed(2)} s after Enter]`).join("  ->  "));
    } catch (e) {
      failed = true;
      await page.screenshot({ path: `${OUT}/FAILED_${check.notebook.split("/").pop()}.png` }).catch(() => {});
      console.error(`[browser] FAILED ${check.notebook}: ${e.message}`);
    } finally {
      await page.close();
    }
  }
} finally {
  await browser.close();
}
writeFileSync(`${OUT}/results.json`, JSON.stringify(results, null, 1));
process.exit(failed ? 1 : 0);
