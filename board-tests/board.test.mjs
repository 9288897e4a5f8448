// The live presence board, end to end: a real presenced (release build, test clock), the page in headless
// Chromium (Debian's /usr/bin/chromium driven by playwright-core), presence changed through the API and by
// a timer-driven fade, and the page following. Leaves a screenshot in board-tests/artifacts/board.png.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startProvider } from "./provider.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..");
const BINARY = process.env.PRESENCED_BIN || path.join(REPO, "target", "release", "presenced");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = path.join(HERE, "artifacts");
// The SDK suites' helper (plain Node, no dependencies) finds a free port.
const { freePort } = createRequire(import.meta.url)("../sdk-tests/js/presenced.js");

// The demo directory of the default configuration.
const ADELE = "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11";
const ALEX = "5e9a1c7b-8d44-4b0e-a3f2-6c1d2e3f4a5b";
const MEGAN = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
const LEE = "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e";
const APP = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";

// With `config` (TOML), that configuration file; else the built-in default one (board on). Either moved
// to a free port and a fresh data directory.
async function startServer(config) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "presenced-board-"));
  const file = path.join(dir, "presenced.toml");
  if (config) fs.writeFileSync(file, config);
  const settings = [...(config ? ["--config", file] : []), "--set", `listen=127.0.0.1:${port}`,
    "--set", `data_dir=${path.join(dir, "data")}`, "--set", "test_clock=true"];
  const child = spawn(BINARY, [...settings, "serve"], { stdio: "ignore" });
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30000;
  for (;;) {
    try {
      if ((await fetch(`${base}/readyz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline || child.exitCode !== null) throw new Error("presenced did not start");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const mint = (...args) => execFileSync(BINARY, [...settings, "token", ...args], { encoding: "utf8" }).trim();
  return {
    base,
    token: mint(),
    megan: mint("--user", "megan@contoso.example"),
    stop() {
      child.kill("SIGTERM");
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const launch = () => chromium.launch({
  executablePath: CHROMIUM,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});

test("the board shows the tenant's presence and follows changes live, fades included", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const call = async (method, route, body, token = server.token) => {
    const response = await fetch(server.base + route, {
      method,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    assert.ok(response.ok, `${method} ${route}: ${response.status} ${await response.text()}`);
  };
  const setPresence = (user, availability, activity) =>
    call("POST", `/v1.0/users/${user}/presence/setPresence`, {
      sessionId: APP, availability, activity, expirationDuration: "PT1H",
    });
  await setPresence(ADELE, "Busy", "InACall");
  await setPresence(ALEX, "Available", "Available");
  await setPresence(MEGAN, "DoNotDisturb", "Presenting");
  await call("POST", `/v1.0/users/${MEGAN}/presence/setStatusMessage`, {
    statusMessage: { message: { content: "Presenting the Q4 plan", contentType: "text" } },
  });
  // Work location is set by the user (a delegated token).
  await call("POST", "/v1.0/me/presence/setManualLocation", { workLocationType: "office" }, server.megan);

  const browser = await launch();
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1100, height: 420 } });
  await page.goto(`${server.base}/board#token=${server.token}`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 15000 });
  const row = (user) => page.locator(`tr[data-user="${user}"]`);
  const cell = (user, name) => row(user).locator(`td.${name}`);

  // The seeded state, with Teams' colours by class.
  assert.equal(await page.locator("tbody tr").count(), 4);
  assert.equal(await cell(ADELE, "availability").textContent(), "Busy");
  assert.equal(await cell(ADELE, "activity").textContent(), "In A Call");
  assert.equal(await row(ADELE).getAttribute("class"), "Busy");
  assert.equal(await cell(MEGAN, "message").textContent(), "Presenting the Q4 plan");
  assert.equal(await cell(MEGAN, "location").textContent(), "Office");
  assert.equal(await cell(LEE, "availability").textContent(), "Offline");

  // A change through the API reaches the open page without a reload.
  await setPresence(LEE, "Available", "Available");
  await page.waitForFunction(
    (user) => document.querySelector(`tr[data-user="${user}"] td.availability`).textContent === "Available",
    LEE, { timeout: 10000 });
  assert.equal(await page.locator("#state").textContent(), "live");

  // A timer-driven change: after 10 idle minutes an Available session fades to Away.
  await call("POST", "/_test/clock/advance", { seconds: 601 });
  await page.waitForFunction(
    (user) => document.querySelector(`tr[data-user="${user}"] td.availability`).textContent === "Away",
    ALEX, { timeout: 10000 });
  assert.equal(await cell(ADELE, "availability").textContent(), "Busy", "Busy does not fade");

  // Let the highlight of the last changes settle before the picture.
  await page.waitForTimeout(1500);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, "board.png") });
});

test("the board signs in through a trusted OpenID Connect provider with the authorization-code flow and PKCE", async (t) => {
  const TENANT = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
  // Megan, signed in at the provider; the board's public client is the demo application.
  const provider = await startProvider({
    clientId: APP,
    claims: { sub: MEGAN, azp: APP, scope: "openid Presence.Read.All", name: "Megan Bowen" },
  });
  t.after(() => provider.stop());
  const config = fs.readFileSync(path.join(REPO, "presenced.example.toml"), "utf8") + `
[[trust]]
name = "board-sso"
kind = "oidc"
issuer = "${provider.issuer}"
audiences = ["presenced"]
tenant = "${TENANT}"
ca_file = "${provider.caFile}"
board_client_id = "${APP}"
board_scopes = ["openid", "Presence.Read.All"]
`;
  const server = await startServer(config);
  t.after(() => server.stop());
  provider.redirectUri = `${server.base}/board`;
  const seed = await fetch(`${server.base}/v1.0/users/${ADELE}/presence/setPresence`, {
    method: "POST",
    headers: { Authorization: `Bearer ${server.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ sessionId: APP, availability: "Busy", activity: "InACall", expirationDuration: "PT1H" }),
  });
  assert.equal(seed.status, 200);
  // The provider's endpoints come from its discovery document, fetched at start-up.
  for (const deadline = Date.now() + 15000; ;) {
    const offered = (await (await fetch(`${server.base}/board/sign-in`)).json()).providers;
    if (offered.length === 1) {
      assert.deepEqual(offered[0], {
        name: "board-sso", authorizationEndpoint: `${provider.issuer}/auth`, tokenEndpoint: `${provider.issuer}/token`,
        clientId: APP, scopes: ["openid", "Presence.Read.All"],
      });
      break;
    }
    assert.ok(Date.now() < deadline, "the provider's endpoints were never discovered");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }

  const browser = await launch();
  t.after(() => browser.close());
  // The provider's certificate comes from the test's own CA, which the browser does not know.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 420 } });
  const page = await context.newPage();
  const board = await page.goto(`${server.base}/board`);
  assert.match(board.headers()["content-security-policy"], new RegExp(`connect-src 'self' https://127\\.0\\.0\\.1:\\d+;`));
  await page.click('button[data-provider="board-sso"]');
  await page.waitForSelector("body[data-ready=true]", { timeout: 15000 });

  // Signed in as Megan through the provider: the code was exchanged with the verifier of its S256
  // challenge, from the board's origin, and the page shows the tenant live.
  assert.equal(provider.authorizations.length, 1);
  const asked = provider.authorizations[0];
  assert.equal(asked.code_challenge_method, "S256");
  assert.equal(asked.scope, "openid Presence.Read.All");
  assert.equal(provider.tokenRequests.length, 1);
  const exchange = provider.tokenRequests[0];
  assert.equal(exchange.origin, server.base);
  assert.equal(
    crypto.createHash("sha256").update(exchange.form.code_verifier).digest("base64url"), asked.code_challenge);
  assert.equal(new URL(page.url()).search, "", "the code is gone from the address bar");
  assert.equal(await page.locator("#state").textContent(), "live");
  assert.equal(await page.locator("tbody tr").count(), 4);
  assert.equal(await page.locator(`tr[data-user="${ADELE}"] td.availability`).textContent(), "Busy");

  // An answer the page did not ask for (a code and state from elsewhere) is refused before any exchange.
  await page.goto(`${server.base}/board?code=stolen&state=forged`);
  await page.waitForFunction(() => document.getElementById("error").textContent !== "", null, { timeout: 10000 });
  assert.match(await page.locator("#error").textContent(), /does not belong to a sign-in started on this page/);
  assert.equal(provider.tokenRequests.length, 1, "no exchange for a forged answer");
  assert.equal(await page.locator("body[data-ready=true]").count(), 0);
});
