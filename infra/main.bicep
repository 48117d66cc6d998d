// Cosmos DB change feed -> Service Bus relay: everything one environment needs, in one resource
// group, driven by topology.json (containers, topics, subscriptions, queues) so Bicep, the
// emulator config and the app's defaults agree. No keys anywhere: every resource has local auth
// disabled and the function app reaches each one with its user-assigned identity. Every resource
// sends its logs to one Log Analytics workspace; networkIsolation=true also takes Cosmos DB,
// Service Bus and Storage off the public network (private endpoints + VNet integration).
// Deploy with `azd up` (docs/deploy.md); what is protected and how: docs/security.md.
targetScope = 'resourceGroup'

@minLength(1)
@maxLength(64)
@description('Environment name (azd AZURE_ENV_NAME): part of every resource name and the azd-env-name tag.')
param environmentName string

@description('Region for every resource.')
param location string = resourceGroup().location

@description('Object id of whoever runs the deployment (azd AZURE_PRINCIPAL_ID); gets data-plane access to verify the relay. Empty to skip.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Kind of principal behind principalId.')
param principalType string = 'User'

@description('CloudEvents source attribute of every published event (app setting RELAY_EVENT_SOURCE).')
param eventSource string = '/integration-relay'

@description('E-mail address the alerts notify; empty for none.')
param alertEmail string = ''

@description('True: Cosmos DB, Service Bus (Premium) and Storage only reachable through private endpoints in a VNet the function app is integrated with; false: public endpoints, Entra ID only.')
param networkIsolation bool = false

var topology = loadJsonContent('topology.json')
var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = {
  'azd-env-name': environmentName
  workload: 'cosmos-servicebus-relay'
}
var functionAppName = 'func-relay-${token}'

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: 'id-relay-${token}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: 'log-relay-${token}'
    appInsightsName: 'appi-relay-${token}'
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'strelay${token}'
    location: location
    tags: tags
    deploymentContainerName: 'app-package-${take(functionAppName, 32)}'
    appPrincipalId: identity.outputs.principalId
    networkIsolation: networkIsolation
    workspaceId: monitoring.outputs.workspaceId
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    accountName: 'cosmos-relay-${token}'
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    networkIsolation: networkIsolation
    workspaceId: monitoring.outputs.workspaceId
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  params: {
    namespaceName: 'sb-relay-${token}'
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    networkIsolation: networkIsolation
    workspaceId: monitoring.outputs.workspaceId
  }
}

module network 'modules/network.bicep' = if (networkIsolation) {
  name: 'network'
  params: {
    name: 'vnet-relay-${token}'
    location: location
    tags: tags
    cosmosAccountId: cosmos.outputs.accountId
    serviceBusNamespaceId: serviceBus.outputs.namespaceId
    storageAccountId: storage.outputs.id
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    name: functionAppName
    planName: 'plan-relay-${token}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    cosmosEndpoint: cosmos.outputs.endpoint
    serviceBusFullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
    eventSource: eventSource
    virtualNetworkSubnetId: networkIsolation ? network.outputs.appSubnetId : ''
    workspaceId: monitoring.outputs.workspaceId
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    nameSuffix: token
    tags: tags
    serviceBusNamespaceId: serviceBus.outputs.namespaceId
    cosmosAccountId: cosmos.outputs.accountId
    appInsightsId: monitoring.outputs.appInsightsId
    alertEmail: alertEmail
  }
}

// Names and endpoints only: nothing here grants access by itself.
output AZURE_LOCATION string = location
output RELAY_FUNCTION_APP_NAME string = functionApp.outputs.name
output RELAY_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output RELAY_COSMOS_ENDPOINT string = cosmos.outputs.endpoint
output RELAY_COSMOS_DATABASE string = topology.cosmos.database
output RELAY_SERVICEBUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output RELAY_APPINSIGHTS_NAME string = monitoring.outputs.appInsightsName
