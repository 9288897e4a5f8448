// The README's JavaScript example is readme-example.js, verbatim, and it runs against a real presenced:
// a token from the token endpoint, fed to the official client.
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { spawnSync } = require("node:child_process");
const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const { start, ADELE, APP } = require("./presenced.js");

const SECRET = crypto.randomBytes(30).toString("base64url");
let server;
before(async () => { server = await start({ appSecret: SECRET }); });
after(() => server.stop());

test("the README's JavaScript example is this suite's, and it runs", () => {
  const example = path.join(__dirname, "readme-example.js");
  const readme = fs.readFileSync(path.join(__dirname, "..", "..", "README.md"), "utf8");
  assert.ok(readme.includes(fs.readFileSync(example, "utf8")), "README.md's JavaScript example differs from sdk-tests/js/readme-example.js");
  const run = spawnSync(process.execPath, [example], {
    cwd: __dirname,
    encoding: "utf8",
    timeout: 60000,
    env: {
      ...process.env,
      PRESENCED_URL: server.base,
      TENANT_ID: "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd",
      CLIENT_ID: APP,
      CLIENT_SECRET: SECRET,
      USER_ID: ADELE,
    },
  });
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual(run.stdout.trim().split(/\s+/), ["Busy", "InACall"]);
});
