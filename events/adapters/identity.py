"""The Entra ID credential a connection asks for: the app's user-assigned managed identity in
Azure (``<NAME>__credential=managedidentity`` with ``__clientId``), or the default chain
elsewhere (developer sign-in, environment). Shared by the Cosmos DB and Service Bus clients."""

from __future__ import annotations

from azure.core.credentials import TokenCredential
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from events.connections import Credential

__all__ = ["credential_for"]


def credential_for(kind: Credential, client_id: str | None) -> TokenCredential:
    if kind == "managedidentity":
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential()
