// The subscriptions of one topic, as listed in topology.json, each with its rules.

@description('Existing Service Bus namespace.')
param namespaceName string

@description('Existing topic in that namespace.')
param topicName string

@description('The topic\'s subscriptions, in the shape of topology.json serviceBus.topics[].subscriptions.')
param subscriptions array

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: namespaceName
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2022-10-01-preview' existing = {
  parent: namespace
  name: topicName
}

resource topicSubscriptions 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2022-10-01-preview' = [for subscription in subscriptions: {
  parent: topic
  name: subscription.name
  properties: {
    requiresSession: subscription.requiresSession
    maxDeliveryCount: subscription.maxDeliveryCount
    lockDuration: subscription.lockDuration
    deadLetteringOnMessageExpiration: subscription.deadLetteringOnMessageExpiration
    defaultMessageTimeToLive: subscription.defaultMessageTimeToLive
    deadLetteringOnFilterEvaluationExceptions: true
  }
}]

module rules 'servicebus-rules.bicep' = [for (subscription, i) in subscriptions: {
  name: take('sb-rules-${topicName}-${subscription.name}', 64)
  params: {
    namespaceName: namespaceName
    topicName: topicName
    subscriptionName: topicSubscriptions[i].name
    rules: subscription.rules
  }
}]
