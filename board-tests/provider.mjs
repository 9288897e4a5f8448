// A mock OpenID Connect provider for the board's sign-in test, over HTTPS on a loopback port (a CA and
// certificate made here with openssl): discovery, JWKS, an authorization endpoint that signs in one user at
// once (no login form) and answers with a code, and a token endpoint that exchanges the code only with the
// PKCE verifier of its challenge (S256), for the board's origin (CORS). It records what it was asked.
import https from "node:https";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";

const base64url = (buffer) => Buffer.from(buffer).toString("base64url");

// A CA, and a certificate for 127.0.0.1 it signs, in `dir`.
function certificates(dir) {
  const openssl = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
    "-subj", "/CN=presenced board test CA", "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1");
  fs.writeFileSync(path.join(dir, "leaf.ext"),
    "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n" +
    "extendedKeyUsage=serverAuth\n");
  openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", "leaf.crt", "-days", "1", "-extfile", "leaf.ext");
  return {
    ca: path.join(dir, "ca.crt"),
    key: fs.readFileSync(path.join(dir, "leaf.key")),
    cert: fs.readFileSync(path.join(dir, "leaf.crt")),
  };
}

// Starts the provider. `claims` are the signed-in user's token claims (iss, aud, iat and exp are added);
// `clientId` is the one public client it knows. Set `redirectUri` before a sign-in: the one it accepts.
export async function startProvider({ claims, clientId }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "presenced-provider-"));
  const tls = certificates(dir);
  const { publicKey, privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const kid = "board-key-1";
  const codes = new Map();
  const provider = {
    caFile: tls.ca,
    redirectUri: "",
    authorizations: [],
    tokenRequests: [],
    issuer: "",
    stop() {
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };

  const mint = () => {
    const now = Math.floor(Date.now() / 1000);
    const header = base64url(JSON.stringify({ alg: "RS256", typ: "JWT", kid }));
    const body = base64url(JSON.stringify({ iss: provider.issuer, aud: "presenced", iat: now, exp: now + 600, ...claims }));
    const signature = crypto.sign("sha256", Buffer.from(`${header}.${body}`), privateKey);
    return `${header}.${body}.${base64url(signature)}`;
  };

  const answer = (response, status, body, headers = {}) => {
    response.writeHead(status, { "Content-Type": "application/json", "Cache-Control": "no-store", ...headers });
    response.end(JSON.stringify(body));
  };

  const server = https.createServer({ key: tls.key, cert: tls.cert }, (request, response) => {
    const url = new URL(request.url, provider.issuer);
    const route = url.pathname.replace(/^\/realms\/board/, "");
    if (request.method === "GET" && route === "/.well-known/openid-configuration") {
      return answer(response, 200, {
        issuer: provider.issuer,
        jwks_uri: `${provider.issuer}/certs`,
        authorization_endpoint: `${provider.issuer}/auth`,
        token_endpoint: `${provider.issuer}/token`,
        code_challenge_methods_supported: ["S256"],
      });
    }
    if (request.method === "GET" && route === "/certs") {
      return answer(response, 200, { keys: [{ ...publicKey.export({ format: "jwk" }), kid, use: "sig", alg: "RS256" }] });
    }
    if (request.method === "GET" && route === "/auth") {
      const asked = Object.fromEntries(url.searchParams);
      provider.authorizations.push(asked);
      const valid = asked.response_type === "code" && asked.client_id === clientId &&
        asked.redirect_uri === provider.redirectUri && asked.code_challenge_method === "S256" &&
        /^[A-Za-z0-9_-]{43}$/.test(asked.code_challenge || "");
      if (!valid) return answer(response, 400, { error: "invalid_request" });
      const code = base64url(crypto.randomBytes(24));
      codes.set(code, { challenge: asked.code_challenge, redirectUri: asked.redirect_uri });
      const back = new URL(asked.redirect_uri);
      back.searchParams.set("code", code);
      back.searchParams.set("state", asked.state);
      response.writeHead(302, { Location: back.toString() });
      return response.end();
    }
    if (request.method === "POST" && route === "/token") {
      let text = "";
      request.on("data", (chunk) => { text += chunk; });
      request.on("end", () => {
        const form = Object.fromEntries(new URLSearchParams(text));
        provider.tokenRequests.push({ origin: request.headers.origin, form });
        const cors = { "Access-Control-Allow-Origin": new URL(provider.redirectUri).origin };
        const granted = codes.get(form.code);
        codes.delete(form.code);
        const challenge = base64url(crypto.createHash("sha256").update(form.code_verifier || "").digest());
        if (form.grant_type !== "authorization_code" || form.client_id !== clientId || !granted ||
            granted.redirectUri !== form.redirect_uri || granted.challenge !== challenge) {
          return answer(response, 400, { error: "invalid_grant", error_description: "Code or verifier not valid" }, cors);
        }
        answer(response, 200, { access_token: mint(), token_type: "Bearer", expires_in: 600 }, cors);
      });
      return;
    }
    answer(response, 404, { error: "not_found" });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  provider.issuer = `https://127.0.0.1:${server.address().port}/realms/board`;
  return provider;
}
