// The filter rules of one topic subscription. Adding the first rule through the management plane
// removes the implicit accept-all `$Default` rule, so a subscription with rules only receives
// what they match; one without rules keeps `$Default` and receives everything.
// https://learn.microsoft.com/azure/service-bus-messaging/topic-filters

@description('Existing Service Bus namespace.')
param namespaceName string

@description('Existing topic.')
param topicName string

@description('Existing subscription of that topic.')
param subscriptionName string

@description('Rules in the shape of topology.json: {name, filter: {type: correlation|sql, ...}}.')
param rules array

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: namespaceName
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2022-10-01-preview' existing = {
  parent: namespace
  name: topicName
}

resource subscription 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2022-10-01-preview' existing = {
  parent: topic
  name: subscriptionName
}

// `rule['filter']`, not `rule.filter`: checkov's parser (pycep) reads `filter` as the lambda
// function and gives up on the file.
// The topology names the correlation fields the way the SDK does (subject); ARM calls it label.
resource subscriptionRules 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2022-10-01-preview' = [for rule in rules: {
  parent: subscription
  name: rule.name
  properties: rule['filter'].type == 'sql' ? {
    filterType: 'SqlFilter'
    sqlFilter: {
      sqlExpression: rule['filter'].expression
    }
  } : {
    filterType: 'CorrelationFilter'
    correlationFilter: {
      label: contains(rule['filter'], 'subject') ? rule['filter'].subject : null
      correlationId: contains(rule['filter'], 'correlationId') ? rule['filter'].correlationId : null
      contentType: contains(rule['filter'], 'contentType') ? rule['filter'].contentType : null
      sessionId: contains(rule['filter'], 'sessionId') ? rule['filter'].sessionId : null
      properties: contains(rule['filter'], 'properties') ? rule['filter'].properties : {}
    }
  }
}]
