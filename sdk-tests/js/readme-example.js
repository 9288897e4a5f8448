const { Client } = require("@microsoft/microsoft-graph-client");

const url = process.env.PRESENCED_URL; // https://presence.example.org
const [tenant, app, secret] = [process.env.TENANT_ID, process.env.CLIENT_ID, process.env.CLIENT_SECRET];

// A token from presenced's token endpoint (OAuth 2.0 client credentials, as Entra ID answers them).
async function token() {
  const response = await fetch(`${url}/${tenant}/oauth2/v2.0/token`, {
    method: "POST",
    body: new URLSearchParams({
      grant_type: "client_credentials",
      client_id: app,
      client_secret: secret,
      scope: "https://graph.microsoft.com/.default",
    }),
  });
  if (!response.ok) throw new Error(`token endpoint: ${response.status} ${await response.text()}`);
  return (await response.json()).access_token;
}

const graph = Client.init({
  baseUrl: url,
  customHosts: new Set([new URL(url).hostname]), // the client sends tokens only to hosts it knows
  authProvider: (done) => token().then((value) => done(null, value), (error) => done(error, null)),
});

(async () => {
  const presence = `/users/${process.env.USER_ID}/presence`;
  await graph.api(`${presence}/setPresence`).post({ sessionId: app, availability: "Busy", activity: "InACall" });
  const now = await graph.api(presence).get();
  console.log(now.availability, now.activity);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
