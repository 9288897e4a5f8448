// A real presenced (release build, embedded store, its own token issuer) on a free loopback port. With
// PRESENCED_SDK_REDIS_URLS (comma-separated seed URLs of a Redis Cluster), the first node of a two-node
// deployment on that cluster (store = "redis", its own key prefix, one signing key).
"use strict";

const { spawn, execFileSync } = require("node:child_process");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");

const crypto = require("node:crypto");

const REPO = path.resolve(__dirname, "..", "..");
const REDIS_URLS = (process.env.PRESENCED_SDK_REDIS_URLS || "").split(",").filter((url) => url);
const BINARY = process.env.PRESENCED_BIN || path.join(REPO, "target", "release", "presenced");

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => { socket.destroy(); resolve(true); });
    socket.once("error", () => resolve(false));
  });
}

async function waitForPort(port, child) {
  const deadline = Date.now() + 30000;
  while (!(await canConnect(port))) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error("presenced did not start");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// With `appSecret`, APP has that client secret at the token endpoint (its SHA-256 in the directory) and is
// granted Presence.ReadWrite.All.
async function start({ throttleLimit = 10000, throttleWindowSeconds = 30, appSecret } = {}) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "presenced-js-"));
  let config = fs.readFileSync(path.join(REPO, "presenced.example.toml"), "utf8");
  config = config
    .replace('listen = "127.0.0.1:8080"', `listen = "127.0.0.1:${port}"`)
    .replace('data_dir = "presenced-data"', `data_dir = "${dir}"`)
    .replace("throttle_limit = 10000", `throttle_limit = ${throttleLimit}`)
    .replace("throttle_window_seconds = 30", `throttle_window_seconds = ${throttleWindowSeconds}`);
  if (REDIS_URLS.length > 0) {
    config = config
      .replace('store = "sqlite"', 'store = "redis"')
      .replace("redis_urls = []", `redis_urls = [${REDIS_URLS.map((url) => JSON.stringify(url)).join(", ")}]`)
      .replace('redis_key_prefix = "pd:"', `redis_key_prefix = "sdk-${crypto.randomUUID()}:"`)
      .replace(
        '# signing_key_file = "/etc/presenced/signing-key.pem"',
        `signing_key_file = ${JSON.stringify(path.join(dir, "signing-key.pem"))}`,
      );
  }
  if (appSecret) {
    const appLine = `id = "${module.exports.APP}"`;
    const hash = crypto.createHash("sha256").update(appSecret).digest("hex");
    if (!config.includes(appLine)) throw new Error("the example configuration lost the demo application");
    config = config.replace(
      appLine,
      `${appLine}\nclientSecretSha256 = ["${hash}"]\napplicationPermissions = ["Presence.ReadWrite.All"]`,
    );
  }
  const configPath = path.join(dir, "presenced.toml");
  fs.writeFileSync(configPath, config);
  const { PRESENCED_TLS_CERT: cert, PRESENCED_TLS_KEY: key } = process.env;
  if (!cert || !key) throw new Error("run the suite with `npm test`: it sets up the TLS certificate");
  const args = ["--config", configPath, "serve", "--test-clock", "--tls-cert", cert, "--tls-key", key];
  const child = spawn(BINARY, args, { stdio: "ignore" });
  await waitForPort(port, child);
  const children = [child];
  if (REDIS_URLS.length > 0) {
    const second = await freePort();
    const secondArgs = [...args, "--listen", `127.0.0.1:${second}`, "--data-dir", path.join(dir, "second")];
    const other = spawn(BINARY, secondArgs, { stdio: "ignore" });
    children.push(other);
    await waitForPort(second, other);
  }
  return {
    base: `https://localhost:${port}`,
    token: (...args) =>
      execFileSync(BINARY, ["--config", configPath, "token", ...args], { encoding: "utf8" }).trim(),
    stop: () => {
      for (const running of children) running.kill("SIGKILL");
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

module.exports = {
  start,
  freePort,
  ADELE: "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11",
  ALEX: "5e9a1c7b-8d44-4b0e-a3f2-6c1d2e3f4a5b",
  APP: "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11",
};
