// Cosmos DB account, database and every container of topology.json, with Entra ID as the only
// way in (local/key auth disabled). The function app identity gets custom data-plane roles that
// hold only the data actions each container needs, assigned on that container alone (below).
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

@description('Optional principal id of the deployer; gets Data Reader on the database and Data Contributor on the monitored containers, to verify the relay. Empty to skip.')
param deployerPrincipalId string = ''

@description('True: no public network access; the function app reaches the account through a private endpoint (network.bicep).')
param networkIsolation bool = false

@description('Resource id of the Log Analytics workspace that receives the diagnostic logs.')
param workspaceId string

var topology = loadJsonContent('../topology.json')

// Built-in data-plane roles (deployer only): https://learn.microsoft.com/azure/cosmos-db/reference-data-plane-security
var cosmosDataReader = '00000000-0000-0000-0000-000000000001'
var cosmosDataContributor = '00000000-0000-0000-0000-000000000002'

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  #checkov:skip=CKV_AZURE_101: public access is off only with networkIsolation=true (private endpoint); the default keeps the public endpoint with key auth disabled and Entra ID RBAC as the only access.
  #checkov:skip=CKV_AZURE_99: same reason as CKV_AZURE_101 (no IP firewall: Flex outbound IPs are not fixed; isolation is the private endpoint).
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
    publicNetworkAccess: networkIsolation ? 'Disabled' : 'Enabled'
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
// `ttl`; a positive value expires every item: the inbox, and the quarantine (full documents,
// 30 days: docs/security.md).
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

// --- Data-plane access -------------------------------------------------------------------------
// Custom roles with only the data actions each use needs; Cosmos DB native RBAC has no
// notDataActions, so a role is exactly its list.
// Actions: https://learn.microsoft.com/azure/cosmos-db/nosql/reference-data-plane-security
// SDK queries need readChangeFeed as well as executeQuery (the action's documented scope:
// "Read from the container's change feed. Execute SQL queries using the SDKs.").
var readMetadata = 'Microsoft.DocumentDB/databaseAccounts/readMetadata'
var itemActions = 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items'
var containerActions = 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers'
var databaseScope = '${account.id}/dbs/${database.name}'

// The SDKs read account, database and container metadata (regions, partition key ranges) before
// any data request; readMetadata at the account covers all three levels and reads no data.
resource metadataReaderRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-05-15' = {
  parent: account
  name: guid(account.id, 'relay-metadata-reader')
  properties: {
    roleName: 'Relay metadata reader'
    type: 'CustomRole'
    assignableScopes: [
      account.id
    ]
    permissions: [
      {
        dataActions: [
          readMetadata
        ]
      }
    ]
  }
}

// Monitored containers: the trigger and the Python processor read the change feed; a point read
// re-reads one document. The application writes these containers (outbox, entities, streams)
// with its own identity; the relay never does.
resource changeFeedReaderRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-05-15' = {
  parent: account
  name: guid(account.id, 'relay-change-feed-reader')
  properties: {
    roleName: 'Relay change feed reader'
    type: 'CustomRole'
    assignableScopes: [
      databaseScope
    ]
    permissions: [
      {
        dataActions: [
          '${containerActions}/readChangeFeed'
          '${itemActions}/read'
        ]
      }
    ]
  }
}

// Leases (the change feed processors create, renew, steal and release them, and list them with a
// query) and the quarantine (upserted by the relay; listed and deleted by the re-drive command).
resource stateStoreRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-05-15' = {
  parent: account
  name: guid(account.id, 'relay-state-store')
  properties: {
    roleName: 'Relay state store'
    type: 'CustomRole'
    assignableScopes: [
      databaseScope
    ]
    permissions: [
      {
        dataActions: [
          '${itemActions}/create'
          '${itemActions}/read'
          '${itemActions}/replace'
          '${itemActions}/upsert'
          '${itemActions}/delete'
          '${containerActions}/executeQuery'
          '${containerActions}/readChangeFeed'
        ]
      }
    ]
  }
}

// Inbox: the idempotent consumer point-reads an event id and records it; nothing is deleted
// (the container's TTL expires entries) and nothing is queried.
resource inboxRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-05-15' = {
  parent: account
  name: guid(account.id, 'relay-inbox')
  properties: {
    roleName: 'Relay inbox'
    type: 'CustomRole'
    assignableScopes: [
      databaseScope
    ]
    permissions: [
      {
        dataActions: [
          '${itemActions}/read'
          '${itemActions}/create'
          '${itemActions}/replace'
          '${itemActions}/upsert'
        ]
      }
    ]
  }
}

// A declared consumer's own container: its handler point-reads and upserts documents of one
// partition key value; the transactional mode commits them with the inbox record in one batch,
// which may create, replace or delete. Nothing is queried.
resource consumerStoreRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-05-15' = {
  parent: account
  name: guid(account.id, 'relay-consumer-store')
  properties: {
    roleName: 'Relay consumer store'
    type: 'CustomRole'
    assignableScopes: [
      databaseScope
    ]
    permissions: [
      {
        dataActions: [
          '${itemActions}/read'
          '${itemActions}/create'
          '${itemActions}/replace'
          '${itemActions}/upsert'
          '${itemActions}/delete'
        ]
      }
    ]
  }
}

// Which role each topology container role gets. A container role missing here fails the
// deployment instead of silently granting nothing or too much (tests/infra pins the keys).
var roleForContainer = {
  monitored: changeFeedReaderRole.id
  leases: stateStoreRole.id
  quarantine: stateStoreRole.id
  inbox: inboxRole.id
  consumer: consumerStoreRole.id
}

resource appMetadataReader 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: account
  name: guid(account.id, appPrincipalId, 'relay-metadata-reader')
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: metadataReaderRole.id
    scope: account.id
  }
}

resource appContainerAccess 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = [for (container, i) in topology.cosmos.containers: {
  parent: account
  name: guid(containers[i].id, appPrincipalId, container.role)
  properties: {
    principalId: appPrincipalId
    roleDefinitionId: roleForContainer[container.role]
    scope: '${databaseScope}/colls/${container.name}'
  }
}]

// The deployer (optional, a person verifying the relay): reads everything in the database,
// including the quarantine, to triage; writes only the monitored containers, to put a test
// document through the relay. No access to leases or the inbox beyond reading.
resource deployerDataReader 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = if (!empty(deployerPrincipalId)) {
  parent: account
  name: guid(database.id, deployerPrincipalId, cosmosDataReader)
  properties: {
    principalId: deployerPrincipalId
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${cosmosDataReader}'
    scope: databaseScope
  }
}

resource deployerMonitoredWriter 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = [for (container, i) in topology.cosmos.containers: if (!empty(deployerPrincipalId) && container.role == 'monitored') {
  parent: account
  name: guid(containers[i].id, deployerPrincipalId, cosmosDataContributor)
  properties: {
    principalId: deployerPrincipalId
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    scope: '${databaseScope}/colls/${container.name}'
  }
}]

// --- Diagnostic logs ---------------------------------------------------------------------------
// Resource-specific tables (CDBDataPlaneRequests, CDBControlPlaneRequests). With Entra ID auth
// each data-plane request carries the principal id and the role assignment applied, so reads of
// the quarantine are attributable. QueryRuntimeStatistics is left out: it holds query text.
// https://learn.microsoft.com/azure/cosmos-db/monitor-resource-logs
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: account
  properties: {
    workspaceId: workspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        category: 'DataPlaneRequests'
        enabled: true
      }
      {
        category: 'ControlPlaneRequests'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Requests'
        enabled: true
      }
    ]
  }
}

output accountName string = account.name
output accountId string = account.id
output endpoint string = account.properties.documentEndpoint
output databaseName string = database.name
