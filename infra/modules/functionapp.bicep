// The relay: a Python 3.11 function app on Flex Consumption (FC1) running as the user-assigned
// identity. Every setting the code reads is set here; names come from topology.json, so the app's
// defaults, the bindings' %NAME% expressions and the deployed resources cannot drift apart.
// On Flex the runtime lives in functionAppConfig, so FUNCTIONS_WORKER_RUNTIME and
// FUNCTIONS_EXTENSION_VERSION are not app settings.
// https://learn.microsoft.com/azure/azure-functions/flex-consumption-how-to

@description('Function app name.')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Region of the plan and the app.')
param location string

@description('Tags applied to the plan and the app (the app also gets azd-service-name).')
param tags object

@description('azd service name the app is tagged with (azure.yaml services key).')
param serviceName string = 'relay'

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity (what DefaultAzureCredential/host settings select it by).')
param identityClientId string

@description('Host storage account name.')
param storageAccountName string

@description('Blob container of that account that holds the deployment package.')
param deploymentContainerName string

@description('Application Insights component name (workspace-based, local auth disabled).')
param appInsightsName string

@description('Cosmos DB account endpoint, https://<account>.documents.azure.com:443/.')
param cosmosEndpoint string

@description('Service Bus host name, <namespace>.servicebus.windows.net.')
param serviceBusFullyQualifiedNamespace string

@description('CloudEvents source attribute of every published event (RELAY_EVENT_SOURCE).')
param eventSource string

@description('Subnet (delegated to Microsoft.App/environments) the app sends its outbound traffic through; empty for none.')
param virtualNetworkSubnetId string = ''

@description('Resource id of the Log Analytics workspace that receives the diagnostic logs.')
param workspaceId string

@description('Upper bound of Flex instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per instance, MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

var topology = loadJsonContent('../topology.json')

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// One setting per Cosmos container, named by the declaration (each container's own "setting").
var containerSettings = [for container in topology.cosmos.containers: {
  name: container.setting
  value: container.name
}]

// Two settings per declared consumer: the topic and the subscription its Service Bus trigger
// binds to (%topicSetting% and %subscriptionSetting%). Two loops, not one loop with flatten():
// checkov's Bicep parser reads plain for-expressions only.
var consumers = contains(topology.serviceBus, 'consumers') ? topology.serviceBus.consumers : []

var consumerTopicSettings = [for consumer in consumers: {
  name: consumer.topicSetting
  value: consumer.topic
}]

var consumerSubscriptionSettings = [for consumer in consumers: {
  name: consumer.subscriptionSetting
  value: consumer.subscription
}]

var baseSettings = [
  // Host storage through the identity: https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: storage.properties.primaryEndpoints.blob
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: storage.properties.primaryEndpoints.queue
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: storage.properties.primaryEndpoints.table
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  // The connection string only locates the component (local auth is off); telemetry is sent
  // with an Entra ID token of the identity named in the authentication string.
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
  // The relay's own traces and metrics (docs/observability.md): the Azure Monitor distro in the
  // Python worker, signed in as the identity above. Named, not left to "auto", so that a
  // missing connection string stops the app instead of silently exporting nothing.
  {
    name: 'RELAY_TELEMETRY'
    value: 'azure-monitor'
  }
  // The Functions host already sends the worker's log lines to Application Insights; the
  // distro exporting them too would store every line twice.
  {
    name: 'OTEL_LOGS_EXPORTER'
    value: 'none'
  }
  // Identity-based connections read by both the trigger bindings and the app's own clients.
  {
    name: 'RELAY_COSMOS__accountEndpoint'
    value: cosmosEndpoint
  }
  {
    name: 'RELAY_COSMOS__credential'
    value: 'managedidentity'
  }
  {
    name: 'RELAY_COSMOS__clientId'
    value: identityClientId
  }
  {
    name: 'RELAY_SERVICEBUS__fullyQualifiedNamespace'
    value: serviceBusFullyQualifiedNamespace
  }
  {
    name: 'RELAY_SERVICEBUS__credential'
    value: 'managedidentity'
  }
  {
    name: 'RELAY_SERVICEBUS__clientId'
    value: identityClientId
  }
  {
    name: 'RELAY_DATABASE'
    value: topology.cosmos.database
  }
  {
    name: 'RELAY_EVENT_SOURCE'
    value: eventSource
  }
]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  #checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy is available only in some regions; turn it on per environment where it is.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  #checkov:skip=CKV_AZURE_222: the app has no HTTP functions; azd deploys through the public endpoint with an Entra ID token. networkIsolation makes outbound traffic private (VNet integration), not inbound.
  #checkov:skip=CKV_AZURE_17: no HTTP functions, so no incoming client traffic to authenticate with certificates.
  #checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero by itself and has no minimum instance count setting.
  #checkov:skip=CKV_AZURE_213: no HTTP endpoint to probe; health is watched by the function-failure alert.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Flex Consumption VNet integration: all outbound traffic goes through this subnet, which is
    // how the app reaches the private endpoints when networkIsolation is on.
    // https://learn.microsoft.com/azure/azure-functions/flex-consumption-how-to#enable-virtual-network-integration
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(baseSettings, containerSettings, consumerTopicSettings, consumerSubscriptionSettings)
    }
  }
}

// No basic (publishing profile) credentials: azd deploys with an Entra ID token.
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// FunctionAppLogs: the host's and the functions' log lines (the same lines Application Insights
// gets, but unsampled and in the workspace with the other resources' logs).
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: workspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = site.name
output id string = site.id
output defaultHostName string = site.properties.defaultHostName
