"""Microsoft's azure-identity, unmodified, getting tokens from presenced's token endpoint (the client
credentials grant, over HTTPS) and feeding them to msgraph-sdk: the way an application that knows Entra ID
uses presenced without a line changed but the authority and the base URL."""

import hashlib
import secrets
import subprocess

import httpx
import pytest
from azure.identity import ClientSecretCredential
from azure.core.exceptions import ClientAuthenticationError
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.users.item.presence.set_presence.set_presence_post_request_body import (
    SetPresencePostRequestBody,
)

from conftest import ADELE, APP, Presenced

TENANT = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd"
GRAPH_DEFAULT = "https://graph.microsoft.com/.default"


def certificate(directory) -> tuple:
    """A test CA and a certificate it issued for 127.0.0.1: (ca, cert, key) file paths."""
    ca_key, ca, key, csr, cert, ext = (directory / name for name in ("ca.key", "ca.pem", "key.pem", "csr.pem", "cert.pem", "ext"))
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sdk-test-ca", "-keyout", str(ca_key), "-out", str(ca))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return ca, cert, key


@pytest.fixture()
def secret():
    return secrets.token_urlsafe(30)


@pytest.fixture()
def https_server(tmp_path, secret):
    ca, cert, key = certificate(tmp_path)
    running = Presenced(tls=(cert, key), app_secret_sha256=hashlib.sha256(secret.encode()).hexdigest())
    running.ca = str(ca)
    yield running
    running.stop()


def credential(server, secret: str) -> ClientSecretCredential:
    return ClientSecretCredential(
        TENANT, APP, secret, authority=server.base, disable_instance_discovery=True, connection_verify=server.ca
    )


async def test_client_secret_credential_feeds_msgraph_sdk(https_server, secret):
    server = https_server
    provider = AzureIdentityAuthenticationProvider(credential(server, secret), scopes=[GRAPH_DEFAULT], allowed_hosts=["127.0.0.1"])
    adapter = GraphRequestAdapter(provider, client=httpx.AsyncClient(verify=server.ca))
    adapter.base_url = f"{server.base}/v1.0"
    graph = GraphServiceClient(request_adapter=adapter)

    body = SetPresencePostRequestBody(session_id=APP, availability="Busy", activity="InACall")
    await graph.users.by_user_id(ADELE).presence.set_presence.post(body)
    presence = await graph.users.by_user_id(ADELE).presence.get()
    assert (presence.availability, presence.activity) == ("Busy", "InACall")


def test_a_wrong_secret_is_refused_as_entra_refuses_it(https_server, secret):
    with pytest.raises(ClientAuthenticationError) as refused:
        credential(https_server, secret + "x").get_token(GRAPH_DEFAULT)
    assert "AADSTS7000215" in str(refused.value)


def test_the_readme_example_runs_and_is_the_readme_s(https_server, secret):
    """The README's "Use it from your code" Python example is this file, verbatim, and it runs."""
    from pathlib import Path
    import os
    import sys

    example = Path(__file__).with_name("readme_example.py")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert example.read_text() in readme, "README.md's Python example differs from sdk-tests/python/readme_example.py"
    environment = {
        **os.environ,
        "PRESENCED_URL": https_server.base, "TENANT_ID": TENANT, "CLIENT_ID": APP, "CLIENT_SECRET": secret,
        "USER_ID": ADELE, "REQUESTS_CA_BUNDLE": https_server.ca, "SSL_CERT_FILE": https_server.ca,
    }
    run = subprocess.run([sys.executable, str(example)], env=environment, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["Busy", "InACall"], run.stdout
