// Cosmos DB account, database and every container of topology.json, with Entra ID as the only
// way in (local/key auth disabled). The function app identity gets the built-in Data Contributor
// role scoped to the database: the trigger reads the monitored containers and writes leases, the
// relay writes the quarantine (and the inbox, for consumers).
// https://learn.microsoft.com/azure/cosmos-db/how-to-setup-rbac

@description('Cosmos DB account name (lowercase, 3-44 characters).')
@minLength(3)
@maxLength(44)
param accountName string

@description('Region of the account.')
param location string

@description('Tags applied to the account.')
param tags object

@description('Principal id of the function app identity.')
param appPrincipalId string

@description('Optional principal id of the deployer; gets Data Contributor on the database to verify the relay. Empty to skip.')
param deployerPrincipalId string = ''

var topology = loadJsonContent('../topology.json')

// Built-in data-plane roles: https://learn.microsoft.com/azure/cosmos-db/reference-data-plane-security
var cosmosDataContributor = '00000000-0000-0000-0000-000000000002'

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  #checkov:skip=CKV_AZURE_101: Flex Consumption without VNet integration reaches Cosmos DB over its public endpoint; key auth is disabled, Entra ID RBAC is the only access.
  #checkov:skip=CKV_AZURE_99: same reason as CKV_AZURE_101 (no IP firewall: Flex outbound IPs are not fixed).
  name: accountName
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    // Serverless: pay per request, no throughput to size. Containers cannot set throughput.
    capabilities: [
      {
        name: 'EnableServerless'
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: account
  name: topology.cosmos.database
  properties: {
    resource: {
      id: topology.cosmos.database
    }
  }
}

// defaultTtl -1 turns TTL on without a default expiry, so outbox documents expire by their own
// `ttl`; a positive value expires every item (the inbox).
resource containers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = [for container in topology.cosmos.containers: {
  parent: database
  name: container.name
  properties: {
    resource: {
      id: container.name
      partitionKey: {
        paths: [
          container.partitionKey
        ]
        kind: 'Hash'
        version: 2
      }
      defaultTtl: container.defaultTtl
    }
  }
}]

resource appDataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: account
  name: guid(database.id, appPrincipalId, cosmosDataContributor)
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    scope: '${account.id}/dbs/${database.name}'
  }
}

resource deployerDataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = if (!empty(deployerPrincipalId)) {
  parent: account
  name: guid(database.id, deployerPrincipalId, cosmosDataContributor)
  properties: {
    principalId: deployerPrincipalId
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    scope: '${account.id}/dbs/${database.name}'
  }
}

output accountName string = account.name
output accountId string = account.id
output endpoint string = account.properties.documentEndpoint
output databaseName string = database.name
