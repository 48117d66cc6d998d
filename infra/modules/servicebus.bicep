// Service Bus namespace (Standard: topics and duplicate detection need it; Premium when
// networkIsolation is on, because only Premium namespaces take private endpoints) with every
// topic, topic subscription and queue of topology.json. Local (SAS) auth is disabled; the function
// app identity gets Azure Service Bus Data Sender on each entity, not on the namespace.
// https://learn.microsoft.com/azure/service-bus-messaging/private-link-service
//
// Duplicate detection is forced on for every topic and queue rather than read from the topology:
// the relay's at-least-once delivery relies on it (the message id is the event id), and a
// custom checkov policy (infra/policies) and tests/infra pin it. The window comes from the
// topology and can only be set when the entity is created.
// https://learn.microsoft.com/azure/service-bus-messaging/duplicate-detection

@description('Service Bus namespace name (6-50 characters).')
@minLength(6)
@maxLength(50)
param namespaceName string

@description('Region of the namespace.')
param location string

@description('Tags applied to the namespace.')
param tags object

@description('Principal id of the function app identity (gets Data Sender on every topic and queue, Data Receiver on each consumer\'s subscription).')
param appPrincipalId string

@description('Optional principal id of the deployer; gets Data Receiver on the namespace to verify the relay. Empty to skip.')
param deployerPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Kind of principal behind deployerPrincipalId.')
param deployerPrincipalType string = 'User'

@description('True: Premium tier, no public network access; the function app reaches the namespace through a private endpoint (network.bicep).')
param networkIsolation bool = false

@description('Resource id of the Log Analytics workspace that receives the diagnostic logs.')
param workspaceId string

var topology = loadJsonContent('../topology.json')

// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/integration
var serviceBusDataSender = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
var serviceBusDataReceiver = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'

// Premium is billed per messaging unit (one here), Standard per operation: isolation costs more.
var sku = networkIsolation ? {
  name: 'Premium'
  tier: 'Premium'
  capacity: 1
} : {
  name: 'Standard'
  tier: 'Standard'
}

// On Premium the entity limit is 1 MB to 100 MB; the relay still sizes batches by the topology's
// maxMessageSizeKb (256 KB), so events stay within what a Standard namespace accepts.
// https://learn.microsoft.com/azure/service-bus-messaging/service-bus-premium-messaging#large-messages-support
var entityMaxMessageSizeKb = networkIsolation ? max(topology.serviceBus.maxMessageSizeKb, 1024) : topology.serviceBus.maxMessageSizeKb

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: namespaceName
  location: location
  tags: tags
  sku: sku
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: networkIsolation ? 'Disabled' : 'Enabled'
  }
}

resource topics 'Microsoft.ServiceBus/namespaces/topics@2022-10-01-preview' = [for topic in topology.serviceBus.topics: {
  parent: namespace
  name: topic.name
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: topic.duplicateDetectionHistoryTimeWindow
    defaultMessageTimeToLive: topic.defaultMessageTimeToLive
    maxMessageSizeInKilobytes: entityMaxMessageSizeKb
    supportOrdering: true
    enablePartitioning: false
  }
}]

// Subscriptions and their rules are nested arrays; a module per topic (and per subscription)
// walks them without lambdas, which checkov's Bicep parser cannot read.
module subscriptions 'servicebus-subscriptions.bicep' = [for (topic, i) in topology.serviceBus.topics: {
  name: take('sb-subscriptions-${topic.name}', 64)
  params: {
    namespaceName: namespace.name
    topicName: topics[i].name
    subscriptions: topic.subscriptions
  }
}]

resource queues 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for queue in topology.serviceBus.queues: {
  parent: namespace
  name: queue.name
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: queue.duplicateDetectionHistoryTimeWindow
    defaultMessageTimeToLive: queue.defaultMessageTimeToLive
    requiresSession: queue.requiresSession
    maxDeliveryCount: queue.maxDeliveryCount
    lockDuration: queue.lockDuration
    deadLetteringOnMessageExpiration: queue.deadLetteringOnMessageExpiration
    maxMessageSizeInKilobytes: entityMaxMessageSizeKb
    enablePartitioning: false
  }
}]

// Every topic and queue in the topology is a relay destination (the default destination or a
// route target; tests/infra pins that), so the sender role goes on each entity and nowhere else.
resource topicSenders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (topic, i) in topology.serviceBus.topics: {
  name: guid(topics[i].id, appPrincipalId, serviceBusDataSender)
  scope: topics[i]
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSender)
  }
}]

resource queueSenders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (queue, i) in topology.serviceBus.queues: {
  name: guid(queues[i].id, appPrincipalId, serviceBusDataSender)
  scope: queues[i]
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSender)
  }
}]

// Each consumer the declaration runs in the app (serviceBus.consumers) receives from its own
// topic subscription: Azure Service Bus Data Receiver on that subscription only, not on its
// topic or the namespace. The subscription is created by the subscriptions module above.
var consumers = contains(topology.serviceBus, 'consumers') ? topology.serviceBus.consumers : []

resource consumerSubscriptions 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2022-10-01-preview' existing = [for consumer in consumers: {
  name: '${namespace.name}/${consumer.topic}/${consumer.subscription}'
}]

resource subscriptionReceivers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (consumer, i) in consumers: {
  name: guid(consumerSubscriptions[i].id, appPrincipalId, serviceBusDataReceiver)
  scope: consumerSubscriptions[i]
  dependsOn: [
    subscriptions
  ]
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiver)
  }
}]

resource deployerReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(namespace.id, deployerPrincipalId, serviceBusDataReceiver)
  scope: namespace
  properties: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiver)
  }
}

// OperationalLogs (entity management) and, on Premium, RuntimeAuditLogs (who sent and received,
// with the Entra ID principal) and network filtering logs.
// https://learn.microsoft.com/azure/service-bus-messaging/monitor-service-bus-reference#resource-logs
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: namespace
  properties: {
    workspaceId: workspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        categoryGroup: 'allLogs'
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

output namespaceName string = namespace.name
output namespaceId string = namespace.id
// The endpoint looks like https://<ns>.servicebus.windows.net:443/; the app wants the host name.
output fullyQualifiedNamespace string = split(replace(namespace.properties.serviceBusEndpoint, 'https://', ''), ':')[0]
