// Runs the suite against presenced over HTTPS: the Graph JavaScript client sends its token only to https://
// hosts. Makes a throw-away self-signed certificate for localhost, trusts it through NODE_EXTRA_CA_CERTS (read
// only at process start, hence this wrapper), and runs `node --test`.
"use strict";

const { execFileSync, spawnSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "presenced-tls-"));
const cert = path.join(dir, "cert.pem");
const key = path.join(dir, "key.pem");
execFileSync("openssl", [
  "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
  "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
], { stdio: "ignore" });
const result = spawnSync(process.execPath, ["--test", "--test-timeout=60000", ...process.argv.slice(2)], {
  cwd: __dirname,
  stdio: "inherit",
  env: { ...process.env, NODE_EXTRA_CA_CERTS: cert, PRESENCED_TLS_CERT: cert, PRESENCED_TLS_KEY: key },
});
fs.rmSync(dir, { recursive: true, force: true });
process.exit(result.status ?? 1);
