// Log Analytics workspace + workspace-based Application Insights with local (instrumentation key)
// auth disabled: telemetry is accepted only with an Entra ID token, so the app identity gets
// Monitoring Metrics Publisher on the component and the app sets
// APPLICATIONINSIGHTS_AUTHENTICATION_STRING.
// https://learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication

@description('Name of the Log Analytics workspace.')
param workspaceName string

@description('Name of the Application Insights component.')
param appInsightsName string

@description('Region of both resources.')
param location string

@description('Tags applied to both resources.')
param tags object

@description('Principal id of the function app identity (gets Monitoring Metrics Publisher).')
param appPrincipalId string

// At least the quarantine TTL (30 days): the WARNING line and the Cosmos DB request logs of a
// quarantined document stay queryable for as long as the document itself. 31 days is also the
// retention Log Analytics includes in the ingestion price.
// https://learn.microsoft.com/azure/azure-monitor/logs/data-retention-configure
@description('Days of log retention in the workspace (at least the quarantine TTL).')
@minValue(31)
@maxValue(730)
param retentionInDays int = 31

var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    // Queries and ingestion with Entra ID only, like every other resource here.
    // https://learn.microsoft.com/azure/azure-monitor/logs/azure-ad-authentication-logs
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}

// No connection string output: the function app module reads it from the component itself, so
// nothing key-like travels through deployment outputs.
output appInsightsName string = appInsights.name
output appInsightsId string = appInsights.id
output workspaceId string = workspace.id
