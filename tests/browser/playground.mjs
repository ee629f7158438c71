// Drives `veltrix playground` in Debian's headless Chromium, as a new user would: load the
// page, type an event, see the matching rule and its deciding clause, break the config and see
// the error at its line. Prints one JSON object with what it saw; exits 1 on any failure.
//
//   node tests/browser/playground.mjs http://127.0.0.1:PORT/ SCREENSHOT.png
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node playground.mjs URL SCREENSHOT.png");
  process.exit(2);
}
const WAIT_MS = 10_000;
const seen = {};
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  // Root in a container has no user namespaces for Chromium's sandbox.
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
  page.setDefaultTimeout(WAIT_MS);
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  await page.goto(url);
  await page.waitForSelector("body[data-ready=true]");
  seen.events_offered = (await page.locator("#pick option").count()) - 1;

  // Type an event: a large order matches `orders` and `large-orders`.
  await page.fill("#event", "");
  await page.locator("#event").pressSequentially(
    '{"type": "order.created", "id": "o-7", "amount": 2500, "currency": "EUR", "customer": {"id": "c-9"}}',
  );
  await page.waitForSelector('#outcome[data-outcome="forward"]');
  await page.waitForSelector('.rule[data-rule="large-orders"][data-matched="true"]');
  seen.outcome = await page.textContent("#outcome");
  seen.large_orders_clause = await page.textContent('.rule[data-rule="large-orders"] .field[data-path="body.amount"]');
  seen.payments_clause = await page.textContent('.rule[data-rule="payments"] .field[data-path="body.type"]');
  seen.transform_output = await page.textContent("pre.body");
  await page.screenshot({ path: screenshot });

  // An order without a customer object: `customer` is null, not missing and not an object.
  await page.fill("#event", '{"type": "order.created", "id": "o-8", "amount": 5, "customer": null}');
  await page.waitForSelector('#outcome[data-outcome="dead_letter"]');
  seen.null_clause = await page.textContent('.rule[data-rule="orders-without-customer"] .field[data-path="body.customer"]');

  // Break the config: the error appears at its line.
  const config = await page.inputValue("#config");
  const broken = config.replace('target = "payments"', 'target = "paymnets"');
  seen.broken_line = broken.split("\n").findIndex((l) => l.includes("paymnets")) + 1;
  await page.fill("#config", broken);
  await page.waitForSelector("#error.shown");
  seen.error = await page.textContent("#error");
  seen.error_line = Number(await page.getAttribute("#error", "data-line"));

  // Fix it again: the error goes away.
  await page.fill("#config", config);
  await page.waitForSelector("#error:not(.shown)", { state: "attached" });
  await page.waitForSelector('#outcome[data-outcome="dead_letter"]');
  seen.page_errors = errors;
  seen.foreign_requests = requests.filter((r) => !r.startsWith(url));
  console.log(JSON.stringify(seen));
} catch (e) {
  console.error(`playground test failed: ${e.message}\nseen so far: ${JSON.stringify(seen)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
