// Every presence call of the official JavaScript client (@microsoft/microsoft-graph-client), unmodified.
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { Client, BatchRequestContent, BatchResponseContent, GraphError } = require("@microsoft/microsoft-graph-client");
const { start, ADELE, ALEX, APP } = require("./presenced.js");

let server;
before(async () => { server = await start(); });
after(() => server.stop());

// The client attaches the token only to https:// URLs of Graph's hosts or of `customHosts`.
function client(token, version = "v1.0", base = server.base) {
  return Client.init({
    baseUrl: base,
    defaultVersion: version,
    customHosts: new Set(["localhost"]),
    authProvider: (done) => done(null, token),
  });
}

async function graphError(promise) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof GraphError, `expected a GraphError, got ${error}`);
    return error;
  }
  assert.fail("the call succeeded");
}

test("set, get and clear presence with an application token", async () => {
  const graph = client(server.token());
  await graph.api(`/users/${ADELE}/presence/setPresence`)
    .post({ sessionId: APP, availability: "Busy", activity: "InACall", expirationDuration: "PT1H" });
  const got = await graph.api(`/users/${ADELE}/presence`).get();
  assert.equal(got.availability, "Busy");
  assert.equal(got.activity, "InACall");
  assert.deepEqual(got.outOfOfficeSettings, { message: null, isOutOfOffice: false });
  const same = await graph.api(`/communications/presences/${ADELE}`).version("beta").get();
  assert.equal(same.activity, "InACall");
  const selected = await graph.api(`/users/${ADELE}/presence`).select(["availability"]).get();
  assert.deepEqual(Object.keys(selected).sort(), ["@odata.context", "availability", "id"]);
  await graph.api(`/users/${ADELE}/presence/clearPresence`).post({ sessionId: APP });
  assert.equal((await graph.api(`/users/${ADELE}/presence`).get()).availability, "Offline");
});

test("preferred presence, status message and getPresencesByUserId", async () => {
  const graph = client(server.token());
  await graph.api(`/users/${ALEX}/presence/setPresence`).post({ sessionId: APP, availability: "Available", activity: "Available" });
  await graph.api(`/users/${ALEX}/presence/setUserPreferredPresence`)
    .post({ availability: "BeRightBack", activity: "BeRightBack", expirationDuration: "PT1H" });
  await graph.api(`/users/${ALEX}/presence/setStatusMessage`).post({
    statusMessage: {
      message: { content: "Back soon", contentType: "text" },
      expiryDateTime: { dateTime: "2099-01-01T09:00:00", timeZone: "W. Europe Standard Time" },
    },
  });
  const result = await graph.api("/communications/getPresencesByUserId").post({ ids: [ALEX, ADELE] });
  assert.deepEqual(result.value.map((p) => [p.id, p.availability]), [[ALEX, "BeRightBack"], [ADELE, "Offline"]]);
  assert.equal(result.value[0].statusMessage.message.content, "Back soon");
  await graph.api(`/users/${ALEX}/presence/clearUserPreferredPresence`).post({});
  assert.equal((await graph.api(`/users/${ALEX}/presence`).get()).availability, "Available");
});

test("delegated /me and the work-location actions", async () => {
  const graph = client(server.token("--user", "adele@contoso.example"));
  await graph.api("/me/presence/setManualLocation").post({ workLocationType: "office", placeId: "b1" });
  await graph.api("/me/presence/setAutomaticLocation").post({ workLocationType: "remote" });
  let me = await graph.api("/me/presence").get();
  assert.deepEqual(me.workLocation, { workLocationType: "office", source: "manual", placeId: "b1" });
  await graph.api("/me/presence/clearAutomaticLocation").post();
  await graph.api("/me/presence/clearLocation").post();
  me = await graph.api("/me/presence").get();
  assert.equal(me.workLocation.source, "none");
  const user = await graph.api("/me").get();
  assert.equal(user.userPrincipalName, "adele@contoso.example");
});

test("documented errors surface as GraphError with Graph's code", async () => {
  const graph = client(server.token());
  let error = await graphError(graph.api(`/users/${ADELE}/presence/setPresence`)
    .post({ sessionId: APP, availability: "Busy", activity: "Busy" }));
  assert.equal(error.statusCode, 400);
  assert.equal(error.code, "BadRequest");
  assert.match(error.message, /not supported/);
  assert.ok(error.requestId);

  error = await graphError(graph.api(`/users/${ADELE}/presence/setPresence`)
    .post({ sessionId: APP, availability: "Available", activity: "Available", expirationDuration: "PT4M" }));
  assert.equal(error.statusCode, 400);

  error = await graphError(graph.api(`/users/${ADELE}/presence/clearPresence`).post({ sessionId: APP }));
  assert.equal(error.statusCode, 404);
  assert.equal(error.code, "NotFound");

  error = await graphError(graph.api("/users/adele@contoso.example/presence").get());
  assert.equal(error.statusCode, 400);

  error = await graphError(graph.api("/me/presence").get());
  assert.equal(error.message, "/me request is only valid with delegated authentication flow.");

  error = await graphError(graph.api(`/users/${ADELE}/presence`).patch({}));
  assert.equal(error.statusCode, 405);

  const reader = client(server.token("--user", "alex@contoso.example", "--scopes", "Presence.Read"));
  error = await graphError(reader.api(`/users/${ADELE}/presence`).get());
  assert.equal(error.statusCode, 403);
  assert.equal(error.code, "Authorization_RequestDenied");

  error = await graphError(client("not-a-token").api(`/users/${ADELE}/presence`).get());
  assert.equal(error.statusCode, 401);
  assert.equal(error.code, "InvalidAuthenticationToken");

  const noRole = client(server.token("--roles", "User.Read.All"));
  error = await graphError(noRole.api(`/users/${ADELE}/presence`).get());
  assert.equal(error.statusCode, 403);
  assert.equal(error.code, "Forbidden");

  const tooMany = Array.from({ length: 651 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`);
  error = await graphError(graph.api("/communications/getPresencesByUserId").post({ ids: tooMany }));
  assert.equal(error.statusCode, 400);
  assert.match(error.message, /650/);

  const alex = client(server.token("--user", "alex@contoso.example", "--scopes", "Presence.ReadWrite"));
  error = await graphError(alex.api(`/users/${ADELE}/presence/setStatusMessage`)
    .post({ statusMessage: { message: { content: "hi", contentType: "text" } } }));
  assert.equal(error.statusCode, 401);
  assert.match(error.message, /^Cannot set the presence of another user\./);

  error = await graphError(graph.api(`/users/${ADELE}/presence/setManualLocation`).post({ workLocationType: "office" }));
  assert.equal(error.statusCode, 403, "location actions are delegated only");
});

test("batching through BatchRequestContent and BatchResponseContent", async () => {
  const token = server.token();
  const graph = client(token);
  const headers = { "Content-Type": "application/json" };
  const set = new Request(`${server.base}/v1.0/users/${ADELE}/presence/setPresence`, {
    method: "POST",
    headers,
    body: JSON.stringify({ sessionId: APP, availability: "DoNotDisturb", activity: "Presenting" }),
  });
  const get = new Request(`${server.base}/v1.0/users/${ADELE}/presence`, { method: "GET" });
  const bad = new Request(`${server.base}/v1.0/users/${ADELE}/presence/setPresence`, {
    method: "POST",
    headers,
    body: JSON.stringify({ sessionId: APP, availability: "Busy", activity: "Busy" }),
  });
  const batch = new BatchRequestContent([{ id: "set", request: set }, { id: "get", request: get }, { id: "bad", request: bad }]);
  // The client accepts only serial, parallel or same-dependency batches: make this one serial.
  batch.addDependency("get", "set");
  batch.addDependency("bad", "get");
  const content = await batch.getContent();
  const response = new BatchResponseContent(await graph.api("/$batch").post(content));
  assert.equal(response.getResponseById("set").status, 200);
  const got = response.getResponseById("get");
  assert.equal(got.status, 200);
  assert.equal((await got.json()).activity, "Presenting");
  const failed = response.getResponseById("bad");
  assert.equal(failed.status, 400);
  assert.equal((await failed.json()).error.code, "BadRequest");
});

test("the retry handler honours 429 and Retry-After", async () => {
  const throttled = await start({ throttleLimit: 2, throttleWindowSeconds: 4 });
  // The server's count of requests refused with 429 (its Prometheus metric).
  const throttledRequests = async () => {
    const metrics = await (await fetch(`${throttled.base}/metrics`)).text();
    const line = metrics.split("\n").find((text) => text.startsWith("presenced_throttled_requests_total "));
    assert.ok(line, "the server reports the throttled-requests metric");
    return Number(line.split(" ")[1]);
  };
  try {
    const token = throttled.token();
    const url = `${throttled.base}/v1.0/users/${ADELE}/presence`;
    const statuses = [];
    for (let i = 0; i < 3; i += 1) {
      const reply = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
      statuses.push(reply.status);
      if (reply.status === 429) {
        assert.ok(Number(reply.headers.get("retry-after")) >= 1);
        assert.equal((await reply.json()).error.code, "TooManyRequests");
      }
    }
    assert.deepEqual(statuses, [200, 200, 429]);
    const before = await throttledRequests();
    const got = await client(token, "v1.0", throttled.base).api(`/users/${ADELE}/presence`).get();
    assert.equal(got.availability, "Offline", "the client waited Retry-After seconds and retried");
    assert.ok((await throttledRequests()) > before, "the client's first attempt was answered 429");
  } finally {
    throttled.stop();
  }
});
