import asyncio
import os

from azure.identity import ClientSecretCredential
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.users.item.presence.set_presence.set_presence_post_request_body import (
    SetPresencePostRequestBody,
)

url = os.environ["PRESENCED_URL"]  # https://presence.example.org (HTTPS: the credential and the SDK insist)
tenant, app, secret = os.environ["TENANT_ID"], os.environ["CLIENT_ID"], os.environ["CLIENT_SECRET"]
credential = ClientSecretCredential(tenant, app, secret, authority=url, disable_instance_discovery=True)
auth = AzureIdentityAuthenticationProvider(
    credential, scopes=["https://graph.microsoft.com/.default"], allowed_hosts=[url.split("://")[1].split(":")[0]]
)
adapter = GraphRequestAdapter(auth)
adapter.base_url = f"{url}/v1.0"
graph = GraphServiceClient(request_adapter=adapter)


async def main():
    user = graph.users.by_user_id(os.environ["USER_ID"])
    await user.presence.set_presence.post(
        SetPresencePostRequestBody(session_id=app, availability="Busy", activity="InACall")
    )
    presence = await user.presence.get()
    print(presence.availability, presence.activity)


asyncio.run(main())
