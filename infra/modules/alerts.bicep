// Alerts that mean "events are not flowing" or "events need a human":
// - dead-lettered messages on any topic subscription or queue (Service Bus DeadletteredMessages);
// - quarantine growth: new documents written to each container with role "quarantine" in
//   topology.json, measured by the Cosmos DB TotalRequests metric filtered on that container and
//   status code 201 (Created). A metric alert needs no query over the app's log text, so it keeps
//   working whatever the app logs; the quarantine documents themselves say why.
// - function failures: failed function executions (Application Insights requests/failed; the
//   Functions host logs each execution as a request).
// - quarantine waiting: the quarantine container holds documents (Cosmos DB DocumentCount on that
//   container above 0). It stays fired until the container is drained, so records waiting for a
//   human are visible for their whole life; they are deleted by TTL 30 days after their last write
//   (topology.json). Azure Monitor cannot alert "TTL minus N days after the write": log search
//   alerts read at most two days back and metric alerts one day
//   (https://learn.microsoft.com/azure/azure-monitor/alerts/alerts-create-log-alert-rule,
//   "Override query time range"); see docs/security.md.
// - quarantine expiring: the app's daily timer function (quarantine_expiry) logs one WARNING
//   "quarantine record expires soon quarantine_id=..." per record within 7 days of its TTL; a log
//   search alert over the last day of traces fires on any such line, so a record is announced
//   before the TTL deletes it.
// Change-feed lag is NOT alerted on: the Python Cosmos SDK has no change feed estimator
// (https://github.com/Azure/azure-sdk-for-python/issues/24249) and the app does not export a lag
// metric. A stalled feed shows up as function failures (the trigger retries forever).

@description('Suffix that makes alert names unique in the resource group.')
param nameSuffix string

@description('Tags applied to the alerts.')
param tags object

@description('Resource id of the Service Bus namespace.')
param serviceBusNamespaceId string

@description('Resource id of the Cosmos DB account.')
param cosmosAccountId string

@description('Resource id of the Application Insights component.')
param appInsightsId string

@description('E-mail address notified by the alerts; empty for none (alerts still show in the portal).')
param alertEmail string = ''

var topology = loadJsonContent('../topology.json')

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-relay-${nameSuffix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'relay'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var actions = empty(alertEmail) ? [] : [
  {
    actionGroupId: actionGroup.id
  }
]

resource deadLettered 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-deadlettered-${nameSuffix}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Messages were dead-lettered on a Service Bus topic subscription or queue.'
    severity: 2
    enabled: true
    scopes: [
      serviceBusNamespaceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'deadLetteredMessages'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    actions: actions
  }
}

resource quarantineGrowth 'Microsoft.Insights/metricAlerts@2018-03-01' = [for container in topology.cosmos.containers: if (container.role == 'quarantine') {
  name: 'alert-quarantine-${container.name}-${nameSuffix}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Documents were quarantined in ${topology.cosmos.database}/${container.name}: changes the relay could not turn into events.'
    severity: 2
    enabled: true
    scopes: [
      cosmosAccountId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'quarantinedDocuments'
          metricNamespace: 'Microsoft.DocumentDB/databaseAccounts'
          metricName: 'TotalRequests'
          dimensions: [
            {
              name: 'DatabaseName'
              operator: 'Include'
              values: [
                topology.cosmos.database
              ]
            }
            {
              name: 'CollectionName'
              operator: 'Include'
              values: [
                container.name
              ]
            }
            {
              name: 'StatusCode'
              operator: 'Include'
              values: [
                '201'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Count'
        }
      ]
    }
    actions: actions
  }
}]

resource quarantineWaiting 'Microsoft.Insights/metricAlerts@2018-03-01' = [for container in topology.cosmos.containers: if (container.role == 'quarantine') {
  name: 'alert-quarantine-waiting-${container.name}-${nameSuffix}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Documents wait in ${topology.cosmos.database}/${container.name}; they are deleted ${container.defaultTtl / 86400} days after their last write. Re-drive or export them before then (docs/security.md).'
    severity: 1
    enabled: true
    scopes: [
      cosmosAccountId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'P1D'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'waitingDocuments'
          metricNamespace: 'Microsoft.DocumentDB/databaseAccounts'
          metricName: 'DocumentCount'
          dimensions: [
            {
              name: 'DatabaseName'
              operator: 'Include'
              values: [
                topology.cosmos.database
              ]
            }
            {
              name: 'CollectionName'
              operator: 'Include'
              values: [
                container.name
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
    actions: actions
  }
}]

resource functionFailures 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-function-failures-${nameSuffix}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Relay function executions failed; the trigger retries them forever, so a steady count means the feed is stalled.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'failedExecutions'
          metricNamespace: 'microsoft.insights/components'
          metricName: 'requests/failed'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Count'
        }
      ]
    }
    actions: actions
  }
}

resource quarantineExpiring 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'alert-quarantine-expiring-${nameSuffix}'
  location: resourceGroup().location
  tags: tags
  properties: {
    displayName: 'Quarantine records expire within 7 days'
    description: 'Quarantined documents are deleted by TTL within a week: re-drive them (python -m events quarantine redrive) or export them (docs/security.md). Each log line names the quarantine id.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'P1D'
    windowSize: 'P1D'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: 'traces | where message startswith "quarantine record expires soon"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: empty(alertEmail) ? [] : [
        actionGroup.id
      ]
    }
  }
}
